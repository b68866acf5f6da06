"""Training throughput on the CPU: this project's LoRA trainer against TRL's ``SFTTrainer``.

(Over 600 lines on purpose: a benchmark is read and run alone, and both trainers' set-ups and
their measurement sit side by side here so that one can check they are treated alike.)

Run from the project root (a benchmark, not a test; figures need a quiet machine)::

    .venv/bin/python bench/train_throughput.py                 # both trainers, 64 examples
    .venv/bin/python bench/train_throughput.py --only ours --steps 20

Data: real articles from ``../shared/corpora/*/posts/*.html`` (beside the project), cleaned
with ``tasks.clean.clean_record`` (non-articles skipped as the ingest flow skips them),
chunked with ``tasks.examples.article_examples`` (``--chunk-tokens``, default 384) and turned
into OpenAI chat examples with ``core.chat_data.to_chat`` (the export's system message) and
``core.chat_data.write_jsonl``: the JSONL the trainer reads. Files are taken in the order of
sha256(file name), every chunk of an article, until ``--examples`` examples: deterministic,
and not biased to one corner of the alphabet.

Ours: the real ``backends.local.train.train()`` on a temp run dir (LoRA r=16, alpha=32,
dropout 0.05 on all 7 linear modules of a block, batch 4, grad accum 1, lr 5e-4, fp32, no
checkpoints, ``max_steps = warmup + steps``). Its batches are a pure function of the data
and the seed, so the bench recomputes them with ``load_split`` and ``epoch_steps`` (and
checks the total against ``model.json``'s ``tokens_seen``).

TRL: ``SFTTrainer`` as a competent user would set it up for this CPU: fp32, no gradient
checkpointing, the same ``LoraConfig``, batch 4, lr 5e-4, no packing, ``max_length`` 1536,
no eval, no saving, no reporting, ``use_cpu``. Loss on
the assistant's tokens only: ``assistant_only_loss`` first (TRL needs a chat template with
``{% generation %}`` markers or one it can patch); if ``SFTTrainer`` refuses it, the same
chats as a conversational prompt-completion dataset with ``completion_only_loss``; if that
fails too, plain loss over the whole sequence. The table says which one ran. ``--trl`` lists
TRL's configurations, each run and printed (default: the first three):

- ``same``: the dataset in the order of our trainer's batches and a sequential sampler, so
  both train on exactly the same batches (same padding);
- ``group_by_length``: TRL's own length-grouped sampler (``train_sampling_strategy``);
- ``padding_free``: our batches, each flattened into one row without padding
  (``padding_free=True``; attention stays within each sequence through its position ids);
- ``random``: TRL's default random sampler.

``ratio`` is ours over TRL's best configuration; ``ratio_<config>`` over each.

Measured: non-padding tokens per second (the sum of each batch's attention mask, the tokens
the batches actually hold) over ``--steps`` optimizer steps after ``--warmup`` steps; the time
of a step is the wall time between the ends of consecutive steps (batch collation, forward,
backward, optimizer and each trainer's bookkeeping). Both trainers run one after the other in
this process with ``torch.set_num_threads(os.cpu_count())``; never next to another torch job.

FLOPs: the *useful* matmul work of a step, the same formula for both trainers, so a trainer's
``share of peak = useful FLOP/s / matmul peak`` (a model-FLOPs utilisation). With
N_frozen the weights of the decoder blocks' linear layers (the frozen path every token goes
through: q/k/v/o and gate/up/down), N_lora the LoRA parameters (r * (in + out) per adapted
layer), h the hidden size, V the vocabulary, d_attn = heads * head_dim, n_layers the blocks,
a sequence of length L with T target positions (the labelled tokens the loss uses) costs::

    L * (4 * N_frozen + 6 * N_lora)          forward 2N + backward 2N through the frozen
                                             weights (activation gradients only: they get no
                                             weight gradient); LoRA 2 fwd + 2 act-grad + 2
                                             weight-grad per parameter
    + 6 * n_layers * d_attn * L * (L + 1)    causal attention: Q.K^T and A.V cost
                                             2 * d_attn * (t + 1) each for token t, forward
                                             2 * d_attn * L * (L + 1), backward twice that
    + 4 * V * h * T                          LM head (tied to the embedding, frozen): logits
                                             and their activation gradient at the T target
                                             positions only

The embedding lookup, norms, RoPE, activations, softmax and the optimizer are left out (no
matmuls, or negligible), and so is the simplification that the first block needs no
activation gradient for its frozen weights (nothing below it trains; 1/30 of the backward).
Work a trainer does beyond this is not useful and is not counted: logits at prompt or padding
positions (TRL's CPU path projects every position), attention over padding, metrics. Our
trainer computes logits only at the target positions, so for it the formula is its actual
matmul work, less the padding.

Matmul peak: the best of several fp32 ``torch.mm`` of ``--matmul-size`` square matrices
(2 * n^3 FLOPs each) on the same threads: what this CPU's BLAS can reach, not a datasheet.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
CORPORA = PROJECT.parent / "shared" / "corpora"
if str(PROJECT) not in sys.path:  # run as a script from anywhere: the project's packages
    sys.path.insert(0, str(PROJECT))

LORA_R, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LEARNING_RATE = 5e-4
MAX_TOKENS = 1536  # our max_seq_tokens and TRL's max_length
SEED = 42
IGNORE = -100


# --- data -----------------------------------------------------------------------------------


def corpus_files() -> list[Path]:
    """The corpus pages in a fixed pseudo-random order (sha256 of the file name)."""
    if not CORPORA.is_dir():
        sys.exit(
            f"train_throughput: {CORPORA} not found: the benchmark trains on the real articles "
            "of the shared corpus, which must sit beside the project (../shared/corpora)"
        )
    files = sorted(CORPORA.glob("*/posts/*.html"))
    if not files:
        sys.exit(f"train_throughput: no */posts/*.html under {CORPORA}")
    return sorted(files, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())


def build_chats(n_examples: int, chunk_tokens: int) -> tuple[list[dict], int]:
    """``n_examples`` chat examples from whole articles of the corpus; (chats, articles used)."""
    from config.settings import CleanSettings, ExportSettings
    from core.chat_data import to_chat
    from tasks.clean import clean_record
    from tasks.examples import article_examples

    clean = CleanSettings()
    system = ExportSettings().system_message
    chats: list[dict] = []
    articles = 0
    for path in corpus_files():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        record = clean_record(
            str(path), digest, f"file://{path.name}", path.parent.parent.name, clean
        )
        if record["skip_reason"]:
            continue
        articles += 1
        for row in article_examples(record, "train", chunk_tokens):
            if row["plain_tokens"] + row["markdown_tokens"] < MAX_TOKENS * 3 // 4:  # no oversized
                chats.append(to_chat(row["plain"], row["markdown"], system))
        if len(chats) >= n_examples:
            return chats[:n_examples], articles
    sys.exit(f"train_throughput: the corpus has only {len(chats)} examples, not {n_examples}")


@dataclass
class Step:
    """One optimizer step's batch: example indices, lengths and target counts per row."""

    indices: list[int]
    lengths: list[int]
    targets: list[int]

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


def plan_batches(
    train_jsonl: Path, base_dir: Path, batch_size: int, n_steps: int
) -> tuple[list[dict], list[Step]]:
    """Our trainer's tokenized examples and its first ``n_steps`` batches (over epochs)."""
    from transformers import AutoTokenizer

    from backends.local.plan import epoch_steps, load_split

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    examples, _, dropped = load_split(train_jsonl, tokenizer, MAX_TOKENS)
    if dropped:
        sys.exit(f"train_throughput: {dropped} examples lost every target token to truncation")
    lengths = [len(e["input_ids"]) for e in examples]
    steps: list[Step] = []
    epoch = 0
    while len(steps) < n_steps:
        for (batch,) in epoch_steps(lengths, batch_size, 1, SEED, epoch):
            steps.append(
                Step(batch, [lengths[i] for i in batch], [examples[i]["n_target"] for i in batch])
            )
        epoch += 1
    return examples, steps[:n_steps]


# --- FLOPs ----------------------------------------------------------------------------------


@dataclass
class FlopModel:
    """The matmul sizes of the model that the FLOP formula (module docstring) needs."""

    n_frozen: int  # weights of the decoder blocks' linear layers
    n_lora: int  # LoRA parameters on the targeted linear layers
    n_layers: int
    d_attn: int  # attention heads * head_dim
    hidden: int
    vocab: int

    def step_flops(self, lengths: list[int], targets: list[int]) -> float:
        """Useful FLOPs of one step over sequences of ``lengths`` with ``targets`` labels."""
        per_token = 4 * self.n_frozen + 6 * self.n_lora
        attention = 6 * self.n_layers * self.d_attn * sum(n * (n + 1) for n in lengths)
        head = 4 * self.vocab * self.hidden * sum(targets)
        return float(sum(lengths) * per_token + attention + head)


def flop_model(base_dir: Path) -> FlopModel:
    """Count the linear layers of the base model's blocks (on the meta device: no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_dir, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_frozen = n_lora = 0
    for name, module in model.get_decoder().layers.named_modules():
        if isinstance(module, torch.nn.Linear):
            n_frozen += module.in_features * module.out_features
            if name.rsplit(".", 1)[-1] in LORA_TARGETS:
                n_lora += LORA_R * (module.in_features + module.out_features)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return FlopModel(
        n_frozen=n_frozen,
        n_lora=n_lora,
        n_layers=config.num_hidden_layers,
        d_attn=config.num_attention_heads * head_dim,
        hidden=config.hidden_size,
        vocab=config.vocab_size,
    )


def matmul_peak(size: int, reps: int) -> float:
    """Best fp32 ``torch.mm`` rate of two ``size`` x ``size`` matrices, in FLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm-up: thread pool, caches
    best = math.inf
    for _ in range(reps):
        tick = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - tick)
    return 2.0 * size**3 / best


# --- results --------------------------------------------------------------------------------


@dataclass
class Result:
    """A trainer's measured steps (after warm-up)."""

    name: str
    threads: int
    step_seconds: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    step_flops: list[float] = field(default_factory=list)
    note: str = ""
    profile: str = ""  # --profile: the top operators of the last warm-up step

    @property
    def seconds(self) -> float:
        return sum(self.step_seconds)

    @property
    def tokens(self) -> int:
        return sum(self.step_tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def flops_per_s(self) -> float:
        return sum(self.step_flops) / self.seconds


class StepProfiler:
    """``--profile``: ``torch.profiler`` over the last warm-up step (never a measured one).

    ``step_ended(n)`` is called when n steps are done (0: training starts); the profiler runs
    from n = warmup - 1 to n = warmup, and ``top`` lists its operators by self CPU time.
    """

    def __init__(self, enabled: bool, warmup: int) -> None:
        self.enabled, self.warmup = enabled and warmup > 0, warmup
        self.profiler: Any = None
        self.top = ""

    def step_ended(self, done: int) -> None:
        if self.enabled and done == self.warmup - 1:
            from torch.profiler import ProfilerActivity, profile

            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.__enter__()
        elif self.profiler is not None and done == self.warmup:
            self.profiler.__exit__(None, None, None)
            self.top = top_operators(self.profiler.key_averages(), self.warmup)
            self.profiler = None


def top_operators(events: Any, step: int, rows: int = 12) -> str:
    """The ``rows`` operators with the most self CPU time, with their share of the step's."""
    events = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    lines = [f"    profile of step {step} (warm-up, profiler on): self CPU time"]
    for e in events[:rows]:
        share = 100 * e.self_cpu_time_total / total
        lines.append(f"    {e.key[:44]:<44} {e.self_cpu_time_total / 1e6:7.2f} s {share:5.1f} %")
    return "\n".join(lines)


def progress(name: str, step: int, total: int, warmup: int, tokens: int, seconds: float) -> None:
    """One line per step."""
    phase = "warm-up" if step <= warmup else "measured"
    print(
        f"  {name:<4} step {step:>3}/{total}  {phase:<8}  {tokens:>5} tok  {seconds:6.2f} s  "
        f"{tokens / seconds:7.1f} tok/s",
        flush=True,
    )


# --- ours -----------------------------------------------------------------------------------


def run_ours(
    args: argparse.Namespace, work: Path, train_jsonl: Path, base_dir: Path, plan: list[Step]
) -> Result:
    """``backends.local.train.train()`` for warmup + steps steps; time between step events."""
    import torch

    from backends.local.train import train
    from config.settings import FinetuneSettings

    total = args.warmup + args.steps
    per_epoch = math.ceil(args.examples / args.batch_size)
    settings = FinetuneSettings(
        epochs=math.ceil(total / per_epoch),
        max_steps=total,
        batch_size=args.batch_size,
        grad_accum=1,
        learning_rate=LEARNING_RATE,
        max_seq_tokens=MAX_TOKENS,
        lora_r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        lora_target_modules=LORA_TARGETS,
        scaffold="none",  # the chats as TRL reads them (no author's rules in the prompt)
        checkpoint_every=total + 1,  # none within the run
        seed=SEED,
        threads=os.cpu_count() or 1,
        mmap_threshold_kb=0,  # glibc's own: the pinned threshold saves memory, costs page faults,
        # and would stay set for TRL too (one process)
    )
    ends: list[float] = []
    profiler = StepProfiler(args.profile, args.warmup)

    def on_event(event: dict[str, Any]) -> None:
        now = time.perf_counter()
        if event["type"] == "start":
            ends.append(now)
            profiler.step_ended(0)
        elif event["type"] == "step":
            ends.append(now)
            step = event["step"]
            progress("ours", step, total, args.warmup, plan[step - 1].tokens, now - ends[-2])
            profiler.step_ended(step)

    record = train(work / "ours", train_jsonl, None, base_dir, settings, on_event=on_event)
    planned = sum(s.tokens for s in plan)
    if record["tokens_seen"] != planned:
        sys.exit(
            f"train_throughput: our trainer saw {record['tokens_seen']} tokens, the bench planned "
            f"{planned}: its batching changed; update plan_batches"
        )
    result = Result("ours", torch.get_num_threads(), profile=profiler.top)
    result.note = (
        f"model.json over all {total} steps (step time only): {record['tokens_per_s']} tok/s"
    )
    for step in range(args.warmup, total):
        result.step_seconds.append(ends[step + 1] - ends[step])
        result.step_tokens.append(plan[step].tokens)
    return result


# --- TRL ------------------------------------------------------------------------------------


def trl_rows(chats: list[dict], mode: str) -> list[dict]:
    """The chats as TRL dataset rows: conversational ``messages`` or prompt-completion."""
    if mode == "prompt-completion":
        return [{"prompt": c["messages"][:-1], "completion": c["messages"][-1:]} for c in chats]
    return [{"messages": c["messages"]} for c in chats]


LOSS_MODES = (  # (label, dataset rows, SFTConfig options), tried in this order
    ("assistant_only_loss", "messages", {"assistant_only_loss": True}),
    (
        "completion_only_loss (prompt-completion chats)",
        "prompt-completion",
        {"completion_only_loss": True},
    ),
    ("plain loss over the whole sequence", "messages", {}),
)


def first_sentence(text: str, limit: int = 240) -> str:
    """The first sentence of an error message (at most ``limit`` characters)."""
    line = text.strip().split("\n", 1)[0]
    end = line.find(". ")
    return (line if end < 0 else line[: end + 1])[:limit]


SAMPLERS = {  # each TRL configuration's sampler (same and padding_free: our batches, in order)
    "same": "sequential",
    "group_by_length": "group_by_length",
    "padding_free": "sequential",
    "random": "random",
}
OUR_BATCHES = ("same", "padding_free")


def row_counts(inputs: dict[str, Any]) -> tuple[list[int], list[int]]:
    """A TRL batch's sequences: (tokens, labelled targets) of each, padded or padding-free.

    Padded rows are counted by their attention mask; a padding-free row holds several
    sequences, each starting where its position id is 0.
    """
    import torch

    targets = inputs["labels"] != IGNORE
    if "attention_mask" in inputs:
        return inputs["attention_mask"].sum(dim=1).tolist(), targets[:, 1:].sum(dim=1).tolist()
    starts = (inputs["position_ids"][0] == 0).nonzero().flatten().tolist()
    ends = [*starts[1:], int(inputs["position_ids"].shape[1])]
    row = targets[0]
    return [e - s for s, e in zip(starts, ends, strict=True)], [
        int(torch.count_nonzero(row[s + 1 : e])) for s, e in zip(starts, ends, strict=True)
    ]


def make_trl_trainer(
    args: argparse.Namespace,
    config: str,
    work: Path,
    base_dir: Path,
    chats: list[dict],
    total: int,
) -> tuple[Any, str, list[str]]:
    """A counting ``SFTTrainer`` with the first loss mode TRL accepts; (trainer, mode, refusals)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        """Records each training micro-batch's non-padding tokens, row lengths and targets."""

        batches: list[tuple[list[int], list[int]]]

        def training_step(self, model: Any, inputs: dict[str, Any], *rest: Any, **kw: Any) -> Any:
            self.batches.append(row_counts(inputs))
            return super().training_step(model, inputs, *rest, **kw)

    per_epoch = math.ceil(len(chats) / args.batch_size)
    refusals: list[str] = []
    for label, rows, options in LOSS_MODES:
        tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            base_dir, local_files_only=True, dtype=torch.float32
        )
        sft = SFTConfig(
            output_dir=str(work / "trl"),
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=LEARNING_RATE,
            weight_decay=0.0,
            max_steps=total,
            num_train_epochs=math.ceil(total / per_epoch),
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            max_length=None if config == "padding_free" else MAX_TOKENS,  # TRL: not enforced
            # padding-free without packing; no chunk here comes near MAX_TOKENS
            packing=False,
            train_sampling_strategy=SAMPLERS[config],
            padding_free=config == "padding_free",
            report_to="none",
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=True,
            seed=SEED,
            **options,
        )
        peft_config = LoraConfig(
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=LORA_DROPOUT,
            target_modules=LORA_TARGETS,
            task_type="CAUSAL_LM",
        )
        try:
            trainer = CountingSFTTrainer(
                model=model,
                args=sft,
                train_dataset=Dataset.from_list(trl_rows(chats, rows)),
                processing_class=tokenizer,
                peft_config=peft_config,
            )
        except Exception as e:  # TRL refuses this loss mode for this tokenizer: try the next
            reason = first_sentence(str(e)) or type(e).__name__
            refusals.append(f"{label}: {type(e).__name__}: {reason}")
            print(f"  trl  {label} refused: {type(e).__name__}: {reason}", flush=True)
            del model
            gc.collect()
            continue
        trainer.batches = []
        return trainer, label, refusals
    sys.exit("train_throughput: SFTTrainer refused every loss mode:\n  " + "\n  ".join(refusals))


def run_trl(
    args: argparse.Namespace,
    config: str,
    work: Path,
    base_dir: Path,
    chats: list[dict],
    plan: list[Step],
    flops: FlopModel,
) -> Result:
    """TRL's ``SFTTrainer`` for warmup + steps steps; time between ``on_step_end`` calls."""
    import torch
    from transformers import PrinterCallback, TrainerCallback

    total = args.warmup + args.steps
    if config in OUR_BATCHES:  # one row per batch slot, in our trainer's batch order
        chats = [chats[i] for step in plan for i in step.indices]
    trainer, mode, refusals = make_trl_trainer(args, config, work, base_dir, chats, total)
    ends: list[float] = []
    profiler = StepProfiler(args.profile, args.warmup)

    class Clock(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            torch.set_num_threads(os.cpu_count() or 1)
            ends.append(time.perf_counter())
            profiler.step_ended(0)

        def on_step_end(self, _args: Any, state: Any, *_: Any, **__: Any) -> None:
            ends.append(time.perf_counter())
            tokens = sum(trainer.batches[-1][0])
            seconds = ends[-1] - ends[-2]
            progress(f"trl {config}", state.global_step, total, args.warmup, tokens, seconds)
            profiler.step_ended(state.global_step)

    trainer.add_callback(Clock())
    trainer.remove_callback(PrinterCallback)  # its end-of-run metrics dict; the bench reports
    trainer.train()
    result = Result(f"trl {config}", torch.get_num_threads(), profile=profiler.top)
    result.note = f"loss: {mode}" + "".join(f"\n    refused: {r}" for r in refusals)
    for step in range(args.warmup, total):
        lengths, targets = trainer.batches[step]
        result.step_seconds.append(ends[step + 1] - ends[step])
        result.step_tokens.append(sum(lengths))
        result.step_flops.append(flops.step_flops(lengths, targets))
    if config in OUR_BATCHES:
        ours = sum(plan[s].tokens for s in range(args.warmup, total))
        if abs(result.tokens - ours) > 0.02 * ours:
            result.note += f"\n    warning: TRL tokenized to {result.tokens} tokens, ours {ours}"
    return result


# --- main -----------------------------------------------------------------------------------


def display_path(path: str) -> str:
    """``path`` relative to the working directory when it is below it (the venv's python)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--examples", type=int, default=64, help="chat examples (default 64)")
    parser.add_argument("--steps", type=int, default=12, help="measured steps (default 12)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per step (4)")
    parser.add_argument("--chunk-tokens", type=int, default=384, help="Markdown tokens a chunk")
    parser.add_argument("--data-dir", type=Path, default=PROJECT / "data", help="DATA dir")
    parser.add_argument("--only", choices=("ours", "trl", "both"), default="both")
    parser.add_argument(
        "--trl",
        default="same,group_by_length,padding_free",
        help=f"TRL configurations to run, comma-separated, of {', '.join(SAMPLERS)}",
    )
    parser.add_argument("--matmul-size", type=int, default=2048, help="square matmul side")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile each trainer's last warm-up step (torch.profiler; not a measured step)",
    )
    args = parser.parse_args(argv)
    args.trl = [c for c in args.trl.split(",") if c]
    if not args.trl or set(args.trl) - set(SAMPLERS):
        parser.error(f"--trl: a comma-separated list of {', '.join(SAMPLERS)}")
    if min(args.examples, args.steps, args.batch_size, args.chunk_tokens) < 1 or args.warmup < 0:
        parser.error("--examples, --steps, --batch-size and --chunk-tokens must be >= 1")
    ours = set(OUR_BATCHES) & set(args.trl)
    if args.only != "ours" and ours and args.examples % args.batch_size:
        parser.error(
            "--examples must be a multiple of --batch-size for TRL to get our batches "
            "(or pass --trl random,group_by_length)"
        )
    return args


def quiet_libraries() -> None:
    """No progress bars (weights, dataset maps) and no deprecation chatter between the steps."""
    import warnings

    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    for message in (".*gradient_checkpointing.*", ".*is_gradient_checkpointing.*"):
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


def load_note() -> str:
    """A warning when other processes keep the cores busy (call it before loading them)."""
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load < 0.25 * cores:
        return ""
    return (
        f"warning: load average {load:.2f} on {cores} cores: other processes are running, "
        "so these figures are not comparable (measure on a quiet machine)"
    )


def main(argv: list[str] | None = None) -> int:
    """Build the data, measure the matmul peak and each trainer, print the table."""
    args = parse_args(argv)
    command = shlex.join([display_path(sys.executable), *sys.argv]) if argv is None else ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never ask the hub
    import torch

    from backends.local.model import SMOLLM2, base_model_dir
    from core.chat_data import write_jsonl

    quiet_libraries()
    torch.set_num_threads(os.cpu_count() or 1)
    busy = load_note()  # before this process loads the cores itself
    if busy:
        print(busy, flush=True)
    total = args.warmup + args.steps
    started = time.perf_counter()
    chats, articles = build_chats(args.examples, args.chunk_tokens)
    print(
        f"data: {len(chats)} examples from {articles} articles of {CORPORA} "
        f"(chunk_tokens {args.chunk_tokens}; {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    base_dir = base_model_dir(SMOLLM2, args.data_dir)
    flops = flop_model(base_dir)
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        work = Path(tmp)
        train_jsonl = work / "train.jsonl"
        write_jsonl(train_jsonl, chats)
        examples, plan = plan_batches(train_jsonl, base_dir, args.batch_size, total)
        n_tokens = sum(len(e["input_ids"]) for e in examples)
        print(
            f"tokens: {n_tokens} in {len(examples)} examples (mean {n_tokens / len(examples):.0f}, "
            f"max {max(len(e['input_ids']) for e in examples)}); base model {base_dir}",
            flush=True,
        )
        peak = matmul_peak(args.matmul_size, reps=8)
        print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s (fp32 {args.matmul_size}^2, best of 8)")
        results: dict[str, Result] = {}
        if args.only in ("ours", "both"):
            results["ours"] = run_ours(args, work, train_jsonl, base_dir, plan)
            measured = plan[args.warmup : total]
            results["ours"].step_flops = [flops.step_flops(s.lengths, s.targets) for s in measured]
            gc.collect()
        for config in args.trl if args.only in ("trl", "both") else []:
            results[f"trl {config}"] = run_trl(args, config, work, base_dir, chats, plan, flops)
            gc.collect()
    report(args, results, flops, peak, command, busy)
    return 0


def report(
    args: argparse.Namespace,
    results: dict[str, Result],
    flops: FlopModel,
    peak: float,
    command: str,
    busy: str,
) -> None:
    """The table, the notes, ``ratio:``, ``peak_share:`` and the command."""
    print()
    print(
        f"model: N_frozen {flops.n_frozen / 1e6:.1f} M, N_lora {flops.n_lora / 1e6:.2f} M "
        f"(r={LORA_R}), {flops.n_layers} layers, h {flops.hidden}, V {flops.vocab}; "
        f"batch {args.batch_size}, {args.steps} measured steps after {args.warmup}, "
        f"{os.cpu_count()} cores"
    )
    header = (
        f"{'trainer':<19} {'threads':>7} {'tokens':>8} {'seconds':>8} {'tok/s':>8} "
        f"{'GFLOP/tok':>9} {'GFLOP/s':>8} {'peak':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results.values():
        per_token = sum(r.step_flops) / r.tokens / 1e9
        print(
            f"{r.name:<19} {r.threads:>7} {r.tokens:>8} {r.seconds:>8.2f} {r.tokens_per_s:>8.1f} "
            f"{per_token:>9.3f} {r.flops_per_s / 1e9:>8.2f} {100 * r.flops_per_s / peak:>5.1f}%"
        )
    blank = f"{'':>7} {'':>8} {'':>8} {'':>8} {'':>9}"
    print(f"{'matmul':<19} {blank} {peak / 1e9:>8.2f} {'100.0%':>6}")
    for r in results.values():
        if r.note:
            print(f"  {r.name}: {r.note}")
        if r.profile:
            print(r.profile)
    ours = results.get("ours")
    trls = {name.removeprefix("trl "): r for name, r in results.items() if name != "ours"}
    for config, trl in trls.items() if ours else ():
        print(f"ratio_{config}: {ours.tokens_per_s / trl.tokens_per_s:.2f}")
    best = max(trls.values(), key=lambda r: r.tokens_per_s) if trls else None
    ratio = f"{ours.tokens_per_s / best.tokens_per_s:.2f}" if ours and best else "n/a"
    print(f"ratio: {ratio}" + (f" (over TRL's best: {best.name})" if ours and best else ""))
    print(f"peak_share: {100 * ours.flops_per_s / peak:.0f} %" if ours else "peak_share: n/a")
    if busy:
        print(busy)
    if command:
        print(f"command: {command}")


if __name__ == "__main__":
    sys.exit(main())
