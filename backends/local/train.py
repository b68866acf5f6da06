"""LoRA fine-tuning of a local chat model on the CPU: a hand-written, resumable training loop.

``train(run_dir, train_jsonl, valid_jsonl, base_dir, settings)`` loads the base model
(``backends.local.model.load_model``), wraps it with a PEFT LoRA adapter and trains it on the
chat examples: length-grouped batches (little padding), gradient accumulation, AdamW, linear
warm-up then cosine decay to 0, grad-norm clipping at 1.0, and a loss that is the mean over the
target tokens of each optimizer step (so accumulation equals one big batch).

Two CPU speed-ups over a stock PEFT step, each measured on SmolLM2-135M at batch 4 x 300
(fp32, 2 cores): logits only at the target positions (the vocabulary projection of the
system/user/padding positions would be thrown away by the loss; ~1.2x), and ``FastDropout`` in
the LoRA layers (``nn.Dropout`` draws one random number per element, which costs a sixth of the
step; ~1.15x). Together ~155 -> ~215 non-padding tokens/s, before length grouping's saving.

What a run leaves in ``run_dir``:

- ``checkpoint/`` every ``checkpoint_every`` steps (replaced atomically): adapter, optimizer,
  scheduler, RNG states, position and metrics. Starting ``train`` again on the same run dir
  resumes there and ends with the same adapter as an uninterrupted run (batch order is a pure
  function of (seed, epoch)).
- ``metrics.csv``: one row per optimizer step (valid_loss only where it was measured).
- ``adapter/``: the final PEFT adapter (``save_pretrained``); ``model.json``: the run's record.
  ``model.json`` marks the run done: ``train`` then returns it without training.

From a shell (what a subprocess-based worker runs; one JSON event per stdout line)::

    $ python -m backends.local.train runs/r1     # reads runs/r1/job.json:
    # {"train": "train.jsonl", "valid": "valid.jsonl", "base_dir": "models/base/x", "settings": {}}
    {"type": "start", "step": 0, "total_steps": 30, ...}
    {"type": "step", "step": 1, "total_steps": 30, "loss": 2.31, "tokens_per_s": 181.0, ...}

The schedule: warm-up over ``ceil(warmup_ratio * total)`` steps, then a cosine to 0.

>>> [round(lr_factor(s, total=8, warmup=2), 2) for s in range(8)]
[0.33, 0.67, 1.0, 0.93, 0.75, 0.5, 0.25, 0.07]
>>> plan_steps(n_batches=10, grad_accum=4, epochs=3, max_steps=None)
(3, 9)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from backends.local.calibrate import DECODING_JSON
from backends.local.data import (
    IGNORE,
    collate,
    length_grouped_batches,
    read_examples,
    split_by_tokens,
    text_pairs,
    tokenize_example,
)
from backends.local.scaffold import Reader, Scaffold, fit_scaffold, scaffolded
from core.io import write_atomic
from core.sample import spread

CHECKPOINT_DIR = "checkpoint"
ADAPTER_DIR = "adapter"
MODEL_JSON = "model.json"
METRICS_CSV = "metrics.csv"
JOB_JSON = "job.json"
METRICS_COLUMNS = ("step", "epoch", "train_loss", "valid_loss", "tokens_per_s", "lr", "elapsed_s")
MAX_GRAD_NORM = 1.0

Event = dict[str, Any]
OnEvent = Callable[[Event], None]


# --- plan -----------------------------------------------------------------------------------


def full_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` validated as ``FinetuneSettings`` (missing keys take their defaults)."""
    from config.settings import FinetuneSettings

    return FinetuneSettings.model_validate(settings).model_dump(mode="json")


def thread_count(threads: int) -> int:
    """Torch threads to use: ``threads``, or every core this process may run on when 0."""
    return threads if threads > 0 else len(os.sched_getaffinity(0))


def plan_steps(
    n_batches: int, grad_accum: int, epochs: int, max_steps: int | None
) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) for ``n_batches`` micro-batches."""
    per_epoch = math.ceil(n_batches / grad_accum)
    total = epochs * per_epoch
    return per_epoch, total if max_steps is None else min(total, max_steps)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak LR at 0-based ``step``: linear warm-up, then cosine to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_steps(
    lengths: list[int], batch_size: int, grad_accum: int, seed: int, epoch: int
) -> list[list[list[int]]]:
    """The epoch's optimizer steps, each a list of ``grad_accum`` micro-batches of indices."""
    batches = length_grouped_batches(lengths, batch_size, seed, epoch)
    return [batches[i : i + grad_accum] for i in range(0, len(batches), grad_accum)]


def file_sha256(*paths: str | Path | None) -> str:
    """SHA-256 of the files' bytes, one after the other (``None`` paths skipped)."""
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            with Path(path).open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def load_split(
    path: str | Path | None,
    tokenizer: Any,
    max_tokens: int,
    decision_weight: float = 1.0,
    scaffold: Scaffold | Reader = "none",
) -> tuple[list[dict[str, Any]], int, int]:
    """Tokenized examples of a JSONL split, the number truncated, and the number dropped.

    An example is dropped when truncation leaves it no target token at all.
    ``decision_weight``: see ``backends.local.data.tokenize_example``; ``scaffold``: what the
    model reads of the text to format (``backends.local.scaffold``).
    """
    if path is None:
        return [], 0, 0
    examples, truncated, dropped = [], 0, 0
    for messages in read_examples(path):
        example = tokenize_example(
            scaffolded(messages, scaffold), tokenizer, max_tokens, decision_weight
        )
        truncated += example["truncated"]
        if example["n_target"] == 0:
            dropped += 1
        else:
            examples.append(example)
    return examples, truncated, dropped


# --- memory ---------------------------------------------------------------------------------

_allocator: dict[str, Any] = {}  # what tune_allocator set in this process (tests read it)


@cache
def _glibc() -> Any:
    """glibc, through ctypes; None elsewhere (musl, macOS), where nothing is tuned."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def tune_allocator(mmap_threshold_kb: int = 256) -> dict[str, Any]:
    """Pin glibc's mmap threshold so freed activations go back to the OS; what is set.

    glibc starts by mmap-ing each allocation of 128 kB or more, but every time such a block is
    freed it raises the threshold to that block's size (up to 32 MB). After the first
    training step, the activations (a few MB each, a different size for each sequence length)
    come from the heap, whose free holes between live blocks are never returned: measured on
    SmolLM2-135M, one example per step, 4 steps: the peak grew 3.03 -> 3.50 -> 3.80 GB and
    3.3-3.5 GB stayed resident between steps; with the threshold pinned at 256 kB, 2.97 ->
    3.00 GB, and 1.04 GB between steps (``finetune.mmap_threshold_kb``; 0: not touched). The
    price is system time: each freed block is unmapped, each new one faulted in again.
    A process-wide setting (it stays for what the process does next, e.g. the evaluation).
    """
    libc = _glibc()
    if libc is None or mmap_threshold_kb <= 0:
        return dict(_allocator)
    m_mmap_threshold = -3  # <malloc.h>
    if libc.mallopt(m_mmap_threshold, mmap_threshold_kb * 1024) == 1:
        _allocator["mmap_threshold"] = mmap_threshold_kb * 1024
    return dict(_allocator)


def release_memory() -> None:
    """Collect garbage and hand the allocator's free memory back to the OS (glibc)."""
    import gc

    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


# --- model and steps ------------------------------------------------------------------------


def build_model(base_dir: str | Path, settings: dict[str, Any]) -> tuple[Any, Any]:
    """The base model wrapped with a fresh LoRA adapter (seeded init), and its tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model

    from backends.local.model import load_model

    threads = thread_count(settings["threads"])
    model, tokenizer = load_model(base_dir, threads=threads)
    torch.set_num_threads(threads)
    seed_everything(settings["seed"])
    config = LoraConfig(
        r=settings["lora_r"],
        lora_alpha=settings["lora_alpha"],
        lora_dropout=settings["lora_dropout"],
        target_modules=list(settings["lora_target_modules"]),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        model = get_peft_model(model, config)
    use_fast_dropout(model)
    model.eval()
    return model, tokenizer


@cache
def fast_dropout_class() -> type:
    """``FastDropout``: ``nn.Dropout`` with a quarter of the random draws (a lazy class)."""
    import torch

    class FastDropout(torch.nn.Module):
        """Dropout whose keep mask comes from 16-bit slices of 64-bit random integers.

        ``nn.Dropout`` draws one random number per element, which on a CPU costs as much as
        the LoRA matmuls it feeds (~17% of a SmolLM2 step); one 64-bit draw per 4 elements
        is ~4x cheaper. ``p`` is rounded to a multiple of 1/65536; the scale is exact.
        """

        def __init__(self, p: float) -> None:
            super().__init__()
            if not 0.0 <= p < 1.0:
                raise ValueError(f"dropout probability must be in [0, 1), not {p}")
            self.p = p
            self.threshold = round(p * 65536) - 32768  # keep where int16 bits >= threshold

        def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
            """A fresh bool mask of the elements of ``x`` to keep (the global torch RNG)."""
            n = x.numel()
            bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), device=x.device)
            return bits.view(torch.int16)[:n].view(x.shape) >= self.threshold

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training or self.p == 0.0:
                return x
            return x * self.keep_mask(x).to(x.dtype).mul_(1.0 / (1.0 - self.p))

        def extra_repr(self) -> str:
            return f"p={self.p}"

    return FastDropout


@cache
def dropout_linear_class() -> type:
    """``DropoutLinear``: a LoRA ``A`` matrix with its dropout inside (a lazy class).

    PEFT computes ``lora_B(lora_A(dropout(x)))``: autograd then keeps, for every adapted
    layer, the dropped copy of ``x`` (for ``A``'s gradient) and the float keep mask (for
    ``x``'s): 2 floats per input element, 7 layers a block, ~4,900 floats a token in each of
    SmolLM2's 30 blocks, a third of the training's activation memory. ``DropoutLinear`` keeps
    ``x`` itself (q, k and v share one input, gate and up another, so one copy serves several
    layers) and a bool mask (1 byte), and recomputes the dropped copy in the backward pass:
    one multiplication. Same mask draws as ``FastDropout`` (its ``dropout`` child), so the
    same numbers as the unfused layers.
    """
    import torch
    import torch.nn.functional as F

    class DropoutMatmul(torch.autograd.Function):
        """``(x * keep * scale) @ weight.T`` that saves ``x`` and the bool ``keep`` only."""

        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, keep: Any, scale: float) -> Any:
            ctx.save_for_backward(x, weight, keep)
            ctx.scale = scale
            return F.linear(x * keep * scale, weight)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, Any, None, None]:
            x, weight, keep = ctx.saved_tensors
            grad_x = grad_w = None
            if ctx.needs_input_grad[0]:
                grad_x = (grad @ weight) * keep * ctx.scale
            if ctx.needs_input_grad[1]:
                dropped = (x * keep * ctx.scale).reshape(-1, x.shape[-1])
                grad_w = grad.reshape(-1, grad.shape[-1]).T @ dropped
            return grad_x, grad_w, None, None

    class DropoutLinear(torch.nn.Linear):
        """``Linear(dropout(x))`` (no bias), holding the weight of the ``nn.Linear`` it replaces."""

        def __init__(self, linear: torch.nn.Linear, p: float) -> None:
            super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")
            self.weight = linear.weight  # the same Parameter: state dict keys are unchanged
            self.dropout = fast_dropout_class()(p)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = self.dropout.p
            if not self.training or p == 0.0:
                return F.linear(x, self.weight)
            keep = self.dropout.keep_mask(x)
            return DropoutMatmul.apply(x, self.weight, keep, 1.0 / (1.0 - p))

    return DropoutLinear


def use_fast_dropout(model: Any) -> int:
    """Fuse each LoRA layer's dropout (p > 0) into its ``A`` matrix; how many fused.

    ``lora_dropout[name]`` becomes ``nn.Identity`` and ``lora_A[name]`` a ``DropoutLinear``
    (a ``FastDropout`` of the same p inside) holding the same weight, so PEFT's forward,
    state dict, saving and merging are unchanged.
    """
    import torch

    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        a_matrices = getattr(module, "lora_A", None)
        if isinstance(dropouts, torch.nn.ModuleDict) and isinstance(
            a_matrices, torch.nn.ModuleDict
        ):
            for name, dropout in dropouts.items():
                linear = dict(a_matrices.items()).get(name)
                fusable = type(linear) is torch.nn.Linear and linear.bias is None
                if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0 and fusable:
                    a_matrices[name] = dropout_linear_class()(linear, dropout.p)
                    dropouts[name] = torch.nn.Identity()
                    swapped += 1
    return swapped


def seed_everything(seed: int) -> None:
    """Seed torch and Python's ``random`` (LoRA init, dropout)."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def pad_id(tokenizer: Any) -> int:
    """Id to pad with (labels and attention mask hide it anyway): pad, else EOS, else 0."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def trainable_parameters(model: Any) -> list[Any]:
    """The parameters that require grad: the LoRA adapter's only."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model: Any, settings: dict[str, Any]) -> Any:
    """AdamW over the trainable (LoRA) parameters only."""
    import torch

    return torch.optim.AdamW(
        trainable_parameters(model),
        lr=settings["learning_rate"],
        weight_decay=settings["weight_decay"],
    )


def make_scheduler(optimizer: Any, total_steps: int, warmup_ratio: float) -> Any:
    """``LambdaLR`` with ``lr_factor``: warm-up over ``ceil(ratio * total)`` steps, then cosine."""
    import torch

    warmup = math.ceil(warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup)
    )


def target_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """(sum of the cross-entropies at the target positions, number of target positions).

    Runs the decoder, then the LM head on the target positions only (position t predicts
    token t + 1), which saves the vocabulary projection of every other position. A batch
    with ``weights`` sums each cross-entropy times its label's weight.
    """
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    if "weights" not in batch:
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())
    losses = F.cross_entropy(logits.float(), targets[keep], reduction="none")
    return (losses * batch["weights"][:, 1:][keep]).sum(), int(keep.sum())


def target_weight(batch: dict[str, Any]) -> float:
    """What a batch's summed loss is divided by: its targets' weights, or their count."""
    if "weights" in batch:
        return float(batch["weights"][:, 1:].sum())
    return float((batch["labels"][:, 1:] != IGNORE).sum())


def accumulate_gradients(model: Any, micro_batches: list[dict[str, Any]]) -> tuple[float, int]:
    """Backward of the mean loss over all target tokens of ``micro_batches``; (mean, count).

    Each micro-batch's summed loss is divided by the step's total target weight (the target
    count, unless the batches carry loss weights), so the accumulated gradient equals that of
    one batch holding every micro-batch.
    """
    total = sum(target_weight(b) for b in micro_batches)
    loss_sum, n_target = 0.0, 0
    for batch in micro_batches:
        loss, count = target_loss(model, batch)
        (loss / total).backward()
        loss_sum, n_target = loss_sum + loss.item(), n_target + count
    return loss_sum / total, n_target


def train_step(
    model: Any, optimizer: Any, scheduler: Any, micro_batches: list[dict[str, Any]]
) -> dict[str, float]:
    """One optimizer step over ``micro_batches`` (train mode only for its duration)."""
    import torch

    lr = optimizer.param_groups[0]["lr"]
    model.train()
    try:
        loss, n_target = accumulate_gradients(model, micro_batches)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable_parameters(model), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    finally:
        model.eval()
    tokens = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    return {
        "loss": loss,
        "n_target": n_target,
        "tokens": tokens,
        "grad_norm": float(grad_norm),
        "lr": lr,
    }


def evaluate(model: Any, examples: list[dict[str, Any]], batch_size: int, pad: int) -> float:
    """Target-token-weighted mean loss over ``examples`` (eval mode, no grad)."""
    import torch

    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = collate([examples[i] for i in order[start : start + batch_size]], pad)
            loss, n = target_loss(model, batch)
            total, count = total + loss.item(), count + n
    return total / count


# --- checkpoints and metrics ----------------------------------------------------------------


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished directory ``tmp`` to ``target``, replacing it (the old one kept as
    ``target.old`` until the new one is in place, so one of them is always whole)."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _temp_dir(run_dir: Path, name: str) -> Path:
    """A fresh temp directory in ``run_dir`` to write ``name`` into before it is renamed."""
    path = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{name}.", suffix=".tmp"))
    path.chmod(0o755)  # mkdtemp's 0o700 would hide the adapter from other users
    return path


def save_checkpoint(
    run_dir: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> Path:
    """Write adapter, optimizer, scheduler, RNG states and ``state`` to ``run_dir/checkpoint``."""
    import torch
    from peft import get_peft_model_state_dict

    tmp = _temp_dir(run_dir, CHECKPOINT_DIR)
    try:
        tensors = {
            "adapter": {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(tensors, tmp / "tensors.pt")
        state = {**state, "python_rng": _jsonable_rng(random.getstate())}
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        _replace_dir(tmp, run_dir / CHECKPOINT_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir / CHECKPOINT_DIR


def _jsonable_rng(rng_state: tuple[Any, ...]) -> list[Any]:
    """Python's ``random.getstate()`` as JSON (tuples become lists)."""
    version, internal, gauss = rng_state
    return [version, list(internal), gauss]


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest whole checkpoint of ``run_dir`` (``checkpoint/``, else ``checkpoint.old/``)."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        path = run_dir / name
        if (path / "state.json").is_file() and (path / "tensors.pt").is_file():
            return path
    return None


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore adapter, optimizer, scheduler and RNG states from ``path``; return its state."""
    import torch
    from peft import set_peft_model_state_dict

    tensors = torch.load(path / "tensors.pt", weights_only=True)
    result = set_peft_model_state_dict(model, tensors["adapter"])
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path}: checkpoint adapter does not fit the model: {unexpected[:3]}")
    optimizer.load_state_dict(tensors["optimizer"])
    scheduler.load_state_dict(tensors["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    version, internal, gauss = state.pop("python_rng")
    random.setstate((version, tuple(internal), gauss))
    return state


def _csv_text(rows: list[dict[str, Any]], header: bool) -> str:
    """``rows`` as CSV text in ``METRICS_COLUMNS`` order (None as an empty cell)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in METRICS_COLUMNS})
    return out.getvalue()


def rewrite_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace the metrics CSV with a header and ``rows`` (atomically)."""
    write_atomic(path, _csv_text(rows, header=True))


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append one row to the metrics CSV."""
    with path.open("a", encoding="utf-8") as f:
        f.write(_csv_text([row], header=False))


# --- the run --------------------------------------------------------------------------------


RESUME_INDEPENDENT = (
    "threads",
    "checkpoint_every",
    "micro_batch_tokens",
    "mmap_threshold_kb",
    "openai",
    "max_valid_examples",
)  # a resumed run may change these: speed, checkpoint spacing, how a step's batch is cut and
# memory is handed back (the same examples and loss); openai configures another backend; how
# much of the valid split is scored (a report, not training)


ADDED_LATER = {"decision_weight": 1.0, "scaffold": "none"}  # settings hashed only away from
# these defaults, so that a job trained before they existed keeps its name (an unchanged
# dataset never retrains)


def run_fingerprint(dataset_sha256: str, base_dir: str | Path, settings: dict[str, Any]) -> str:
    """Hash of what a checkpoint's progress depends on: data, base model and settings."""
    kept = {
        k: v
        for k, v in settings.items()
        if k not in RESUME_INDEPENDENT and (k not in ADDED_LATER or ADDED_LATER[k] != v)
    }
    blob = json.dumps(
        {"data": dataset_sha256, "base": str(Path(base_dir).resolve()), "settings": kept},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _fresh_state(fingerprint: str) -> dict[str, Any]:
    """Progress of a run that has not trained yet."""
    return {
        "fingerprint": fingerprint,
        "step": 0,
        "epoch": 0,  # epoch in progress (0-based)
        "position": 0,  # optimizer steps already done in that epoch
        "tokens_seen": 0,  # non-padding tokens of every micro-batch trained on
        "train_time_s": 0.0,  # time inside optimizer steps
        "elapsed_s": 0.0,  # wall time of the run so far, over every (resumed) process
        "epoch_loss_sum": 0.0,  # target-token-weighted loss of the epoch in progress
        "epoch_targets": 0,
        "last_epoch_train_loss": None,  # token-weighted train loss of the last whole epoch
        "valid_loss": None,  # the latest validation loss
        "metrics": [],
        "resumes": 0,
    }


@dataclass
class Run:
    """Everything one training process works with (model, data, optimizer, progress)."""

    run_dir: Path
    train_jsonl: Path
    valid_jsonl: Path | None
    base_dir: Path
    settings: dict[str, Any]
    dataset_sha256: str
    model: Any
    tokenizer: Any
    scaffold: Scaffold | Reader  # what the model reads, fitted (backends.local.scaffold)
    pad: int
    train_set: list[dict[str, Any]]
    valid_set: list[dict[str, Any]]
    truncated: int  # examples cut to max_seq_tokens (train + valid)
    dropped: int  # examples left without a target token by the cut (train + valid)
    steps_per_epoch: int
    total_steps: int
    optimizer: Any
    scheduler: Any
    state: dict[str, Any]
    emit: OnEvent
    started: float = field(default_factory=time.perf_counter)  # this process's start
    elapsed_before: float = 0.0  # wall time of earlier (killed) processes of this run
    step_times: list[float] = field(default_factory=list)  # this process's optimizer steps

    def elapsed(self) -> float:
        """Wall time of the run so far, over every process that worked on it."""
        return self.elapsed_before + time.perf_counter() - self.started


def train(
    run_dir: str | Path,
    train_jsonl: str | Path,
    valid_jsonl: str | Path | None,
    base_dir: str | Path,
    settings: dict[str, Any],
    on_event: OnEvent | None = None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter of ``base_dir`` on ``train_jsonl``; return ``model.json``'s dict.

    Resumes from ``run_dir/checkpoint`` if there is one; returns the existing ``model.json``
    without training if the run is already done.
    """
    run_dir = Path(run_dir)
    emit = on_event or (lambda event: None)
    if (run_dir / MODEL_JSON).is_file():
        record = json.loads((run_dir / MODEL_JSON).read_text(encoding="utf-8"))
        emit({"type": "end", "already_done": True, **_end_summary(record)})
        return record
    run = prepare_run(run_dir, train_jsonl, valid_jsonl, base_dir, settings, emit)
    resume(run)
    while run.state["step"] < run.total_steps:
        run_epoch(run)
    record = finish(run)
    del run  # the model, optimizer and data: garbage now; what follows (evaluation) gets it
    release_memory()
    return record


def prepare_run(
    run_dir: Path,
    train_jsonl: str | Path,
    valid_jsonl: str | Path | None,
    base_dir: str | Path,
    settings: dict[str, Any],
    emit: OnEvent,
) -> Run:
    """Load the model and the data, plan the steps, make optimizer and scheduler."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp"):  # temp dirs of a killed process
        shutil.rmtree(stale, ignore_errors=True)
    s = full_settings(settings)
    tune_allocator(s["mmap_threshold_kb"])  # before the model and the first activations
    dataset_sha256 = file_sha256(train_jsonl, valid_jsonl)
    model, tokenizer = build_model(base_dir, s)
    scaffold = fit_scaffold(s["scaffold"], text_pairs(train_jsonl))  # read only for "author"
    train_set, truncated, dropped = load_split(
        train_jsonl, tokenizer, s["max_seq_tokens"], s["decision_weight"], scaffold
    )
    valid_set, v_truncated, v_dropped = load_split(
        valid_jsonl, tokenizer, s["max_seq_tokens"], scaffold=scaffold
    )
    valid_set = spread(valid_set, s["max_valid_examples"])
    if not train_set:
        raise ValueError(f"{train_jsonl}: no training example with a target token")
    n_batches = math.ceil(len(train_set) / s["batch_size"])
    per_epoch, total = plan_steps(n_batches, s["grad_accum"], s["epochs"], s["max_steps"])
    optimizer = make_optimizer(model, s)
    return Run(
        run_dir=run_dir,
        train_jsonl=Path(train_jsonl),
        valid_jsonl=None if valid_jsonl is None else Path(valid_jsonl),
        base_dir=Path(base_dir),
        settings=s,
        dataset_sha256=dataset_sha256,
        model=model,
        tokenizer=tokenizer,
        scaffold=scaffold,
        pad=pad_id(tokenizer),
        train_set=train_set,
        valid_set=valid_set,
        truncated=truncated + v_truncated,
        dropped=dropped + v_dropped,
        steps_per_epoch=per_epoch,
        total_steps=total,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, total, s["warmup_ratio"]),
        state=_fresh_state(run_fingerprint(dataset_sha256, base_dir, s)),
        emit=emit,
        started=started,
    )


def resume(run: Run) -> None:
    """Continue from the run dir's checkpoint if there is one; (re)write metrics.csv; "start"."""
    checkpoint = find_checkpoint(run.run_dir)
    if checkpoint is not None:
        saved = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        if saved.get("fingerprint") != run.state["fingerprint"]:
            raise ValueError(
                f"{checkpoint} was made with other data, base model or settings than this "
                "run's; delete it to start over, or use another run dir"
            )
        run.state = load_checkpoint(checkpoint, run.model, run.optimizer, run.scheduler)
        run.state["resumes"] += 1
        run.elapsed_before = run.state["elapsed_s"]
    rewrite_metrics(run.run_dir / METRICS_CSV, run.state["metrics"])
    run.emit(
        {
            "type": "start",
            "step": run.state["step"],
            "total_steps": run.total_steps,
            "steps_per_epoch": run.steps_per_epoch,
            "resumed": checkpoint is not None,
            "n_train": len(run.train_set),
            "n_valid": len(run.valid_set),
            "truncated": run.truncated,
            "dropped": run.dropped,
        }
    )


def run_epoch(run: Run) -> None:
    """Train the rest of the epoch in progress (or up to the last step of the run)."""
    s, state = run.settings, run.state
    lengths = [len(e["input_ids"]) for e in run.train_set]
    steps = epoch_steps(lengths, s["batch_size"], s["grad_accum"], s["seed"], state["epoch"])
    for position in range(state["position"], len(steps)):
        tick = time.perf_counter()
        micro = [
            collate([run.train_set[i] for i in rows], run.pad)
            for batch in steps[position]
            for rows in split_by_tokens(batch, lengths, s["micro_batch_tokens"])
        ]
        result = train_step(run.model, run.optimizer, run.scheduler, micro)
        seconds = time.perf_counter() - tick
        after_step(run, result, seconds, epoch_end=position + 1 == len(steps))
        if state["step"] >= run.total_steps:
            return


def after_step(run: Run, result: dict[str, float], seconds: float, epoch_end: bool) -> None:
    """Book a finished step: progress, step event, validation, metrics row, checkpoint."""
    state, done = run.state, run.state["step"] + 1 >= run.total_steps
    run.step_times.append(seconds)
    state["step"] += 1
    state["position"] += 1
    epoch = round(state["epoch"] + state["position"] / run.steps_per_epoch, 4)  # done, fractional
    state["tokens_seen"] += result["tokens"]
    state["train_time_s"] += seconds
    state["epoch_loss_sum"] += result["loss"] * result["n_target"]
    state["epoch_targets"] += result["n_target"]
    tokens_per_s = result["tokens"] / seconds
    mean_step = sum(run.step_times) / len(run.step_times)
    run.emit(
        {
            "type": "step",
            "step": state["step"],
            "total_steps": run.total_steps,
            "epoch": epoch,
            "loss": result["loss"],
            "tokens_per_s": tokens_per_s,
            "eta_s": (run.total_steps - state["step"]) * mean_step,
            "lr": result["lr"],
            "grad_norm": result["grad_norm"],
        }
    )
    valid_loss = None
    if run.valid_set and (epoch_end or done):
        valid_loss = evaluate(run.model, run.valid_set, run.settings["batch_size"], run.pad)
        state["valid_loss"] = valid_loss
        run.emit(
            {
                "type": "valid",
                "step": state["step"],
                "epoch": epoch,
                "valid_loss": valid_loss,
                "n_examples": len(run.valid_set),
            }
        )
    if epoch_end:
        state["last_epoch_train_loss"] = state["epoch_loss_sum"] / state["epoch_targets"]
        state.update(epoch=state["epoch"] + 1, position=0, epoch_loss_sum=0.0, epoch_targets=0)
    state["elapsed_s"] = run.elapsed()
    row = {
        "step": state["step"],
        "epoch": epoch,
        "train_loss": round(result["loss"], 6),
        "valid_loss": None if valid_loss is None else round(valid_loss, 6),
        "tokens_per_s": round(tokens_per_s, 1),
        "lr": float(f"{result['lr']:.6g}"),
        "elapsed_s": round(state["elapsed_s"], 2),
    }
    state["metrics"].append(row)
    append_metrics(run.run_dir / METRICS_CSV, row)
    every = run.settings["checkpoint_every"]  # 0: never
    if not done and every > 0 and state["step"] % every == 0:
        path = save_checkpoint(run.run_dir, run.model, run.optimizer, run.scheduler, state)
        run.emit({"type": "checkpoint", "step": state["step"], "path": str(path)})


def finish(run: Run) -> dict[str, Any]:
    """Save the adapter, write ``model.json`` (the run is then done), drop the checkpoint."""
    state, run_dir = run.state, run.run_dir
    adapter_tmp = _temp_dir(run_dir, ADAPTER_DIR)
    run.model.save_pretrained(adapter_tmp)
    decoding = calibrate_decoding(run)
    write_atomic(adapter_tmp / DECODING_JSON, json.dumps(decoding, indent=2) + "\n")
    if hasattr(run.scaffold, "save"):  # the author's rules, counted from the train split
        run.scaffold.save(adapter_tmp)
    _replace_dir(adapter_tmp, run_dir / ADAPTER_DIR)
    final_train = (
        state["epoch_loss_sum"] / state["epoch_targets"]
        if state["epoch_targets"]
        else state["last_epoch_train_loss"]
    )
    record = {
        "base_dir": str(run.base_dir.resolve()),
        "adapter_dir": str((run_dir / ADAPTER_DIR).resolve()),
        "train_jsonl": str(run.train_jsonl.resolve()),
        "valid_jsonl": None if run.valid_jsonl is None else str(run.valid_jsonl.resolve()),
        "dataset_sha256": run.dataset_sha256,
        "hyperparameters": run.settings,
        "n_train_examples": len(run.train_set),
        "n_valid_examples": len(run.valid_set),
        "truncated_examples": run.truncated,
        "dropped_examples": run.dropped,
        "steps": state["step"],
        "total_steps": run.total_steps,
        "epochs_done": round(state["epoch"] + state["position"] / run.steps_per_epoch, 4),
        "tokens_seen": state["tokens_seen"],
        "train_time_s": round(state["train_time_s"], 2),
        "tokens_per_s": round(state["tokens_seen"] / max(state["train_time_s"], 1e-9), 1),
        "wall_time_s": round(run.elapsed(), 2),
        "resumes": state["resumes"],
        "final_train_loss": final_train,
        "final_valid_loss": state["valid_loss"],
        "decoding": decoding,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_atomic(run_dir / MODEL_JSON, json.dumps(record, indent=2) + "\n")
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    run.emit({"type": "end", "already_done": False, **_end_summary(record)})
    return record


def calibrate_decoding(run: Run) -> dict[str, Any]:
    """The faithful decoder's markup bias, chosen on the valid split (``calibrate``)."""
    from backends.local.calibrate import calibrate

    run.model.eval()
    s = run.settings
    found = calibrate(
        run.model, run.tokenizer, run.valid_jsonl, run.scaffold, s["max_valid_examples"]
    )
    run.emit({"type": "calibrated", **found})
    return found


def _end_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``model.json`` an ``end`` event carries."""
    keys = ("steps", "tokens_seen", "tokens_per_s", "wall_time_s", "final_train_loss")
    return {**{k: record.get(k) for k in keys}, "final_valid_loss": record.get("final_valid_loss")}


def main(argv: list[str] | None = None) -> int:
    """``python -m backends.local.train RUN_DIR``: run ``RUN_DIR/job.json``, events on stdout."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m backends.local.train RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    job = json.loads((run_dir / JOB_JSON).read_text(encoding="utf-8"))
    events = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not interleave with the JSON event lines

    def emit(event: Event) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    try:
        train(
            run_dir,
            job["train"],
            job.get("valid"),
            job["base_dir"],
            job.get("settings") or {},
            on_event=emit,
        )
    finally:
        sys.stdout = events
    return 0


if __name__ == "__main__":
    sys.exit(main())
