"""The local LoRA trainer on the tiny random Llama (``make_tiny_model`` + ``load_model``).

Covers the loss mask (exact, by string and position), truncation, length-grouped batches,
collation, the loss and its accumulation, that only LoRA weights train, the run's outputs, and
kill -9 / resume giving the same adapter as an uninterrupted run. Each test takes seconds.
"""

from __future__ import annotations

import csv
import doctest
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backends.local import data as data_module
from backends.local import plan as plan_module
from backends.local import train as train_module
from backends.local.checkpoint import find_checkpoint
from backends.local.data import (
    IGNORE,
    collate,
    length_grouped_batches,
    tokenize_example,
)
from backends.local.generate import load_for_inference
from backends.local.plan import load_split
from backends.local.steps import (
    accumulate_gradients,
    build_model,
    make_optimizer,
    make_scheduler,
    target_loss,
    train_step,
)
from backends.local.train import run_fingerprint, train
from config.settings import FinetuneSettings
from core.chat_data import read_chats, to_chat
from core.runs import METRICS_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You render plain text into markdown format."
PAIRS = [
    ("Hello world", "# Hello world"),
    ("a list item", "- a list item"),
    ("bold text", "**bold text**"),
    ("some code", "`some code`"),
    ("A quote", "> A quote"),
    ("Title here", "## Title here"),
    ("emphasis", "*emphasis*"),
    ("step one", "1. step one"),
]
# Small and fast: one thread (a tiny model gains nothing from two, and two threads spin badly
# when the other core is busy), short sequences, no warm-up surprises.
FAST = {"threads": 1, "max_seq_tokens": 64, "learning_rate": 1e-2, "warmup_ratio": 0.1}


def fast_settings(**overrides: Any) -> FinetuneSettings:
    """The FAST settings, with ``overrides``."""
    return FinetuneSettings(**{**FAST, **overrides})


def chat(plain: str, markdown: str) -> list[dict[str, str]]:
    """One training conversation, as the export writes it (``core.chat_data.to_chat``)."""
    return to_chat(plain, markdown, SYSTEM)["messages"]


def write_jsonl(path: Path, pairs: list[tuple[str, str]]) -> Path:
    """Write ``pairs`` as OpenAI chat JSONL."""
    path.write_text("".join(json.dumps({"messages": chat(p, m)}) + "\n" for p, m in pairs))
    return path


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama + BPE tokenizer with SmolLM2's chat template (an HF folder)."""
    from tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="module")
def tokenizer(tiny_base: Path):
    """The tiny model's tokenizer, loaded the way training loads it."""
    from backends.local.model import load_model

    return load_model(tiny_base, threads=1)[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(train.jsonl with 8 examples, valid.jsonl with 4)."""
    folder = tmp_path_factory.mktemp("data")
    return write_jsonl(folder / "train.jsonl", PAIRS), write_jsonl(
        folder / "valid.jsonl", [(p.upper(), m.upper()) for p, m in PAIRS[:4]]
    )


def test_module_doctests() -> None:
    """The worked examples in the modules' docstrings hold."""
    for module in (data_module, plan_module, train_module):
        assert doctest.testmod(module).failed == 0


def test_importing_the_modules_does_not_import_torch() -> None:
    """Heavy imports happen inside functions: a worker imports the trainer for free."""
    code = (
        "import sys, backends.local.train, backends.local.data, backends.local.steps; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# --- the mask -------------------------------------------------------------------------------


def test_labels_are_exactly_the_assistant_content_and_its_end_token(tokenizer) -> None:
    """Positions with a label decode to the content + <|im_end|>; nothing else is labelled."""
    content = "# A *heading*\n\n- one\n- two with `code`"
    messages = chat("A heading\none\ntwo with code", content)
    example = tokenize_example(messages, tokenizer, max_tokens=10_000)
    ids, labels = example["input_ids"], example["labels"]
    labelled = [i for i, label in enumerate(labels) if label != IGNORE]
    start = len(
        tokenizer(
            tokenizer.apply_chat_template(
                messages[:-1], tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )["input_ids"]
    )
    assert labelled == list(range(start, labelled[-1] + 1))  # one contiguous run ...
    assert labelled[0] == start  # ... starting right after "<|im_start|>assistant\n"
    assert tokenizer.decode([ids[i] for i in labelled]) == content + "<|im_end|>"
    assert [labels[i] for i in labelled] == [ids[i] for i in labelled]
    assert tokenizer.decode(ids[: labelled[0]]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(ids[labelled[-1] + 1 :]) == "\n"  # the template's trailing newline
    assert ids[labelled[-1]] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert example["n_target"] == len(labelled)
    assert example["truncated"] is False


def test_only_the_last_assistant_turn_is_labelled(tokenizer) -> None:
    """Earlier assistant turns are context: masked like the user's."""
    messages = [
        *chat("first", "# first"),
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "## second"},
    ]
    example = tokenize_example(messages, tokenizer, max_tokens=10_000)
    target = [
        t
        for t, label in zip(example["input_ids"], example["labels"], strict=True)
        if label != IGNORE
    ]
    assert tokenizer.decode(target) == "## second<|im_end|>"


def test_a_template_whose_prompt_is_not_a_prefix_is_refused(tokenizer) -> None:
    """If the generation prompt is not how the assistant turn starts, say so; never guess."""
    odd = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    odd.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>bot\n{% endif %}"
    )
    with pytest.raises(ValueError, match="prefix"):
        tokenize_example(chat("a", "b"), odd, max_tokens=100)


def test_truncation_cuts_from_the_end_and_is_reported(tokenizer) -> None:
    """Too long: keep the first ``max_tokens`` tokens, their labels, and say it was cut."""
    messages = chat("plain " * 20, "*markdown* " * 20)
    full = tokenize_example(messages, tokenizer, max_tokens=10_000)
    n = len(full["input_ids"]) - 10
    cut = tokenize_example(messages, tokenizer, max_tokens=n)
    assert cut["truncated"] is True
    assert cut["input_ids"] == full["input_ids"][:n]
    assert cut["labels"] == full["labels"][:n]
    assert cut["n_target"] == sum(label != IGNORE for label in full["labels"][1:n])
    prompt_only = tokenize_example(messages, tokenizer, max_tokens=5)
    assert prompt_only["truncated"] and prompt_only["n_target"] == 0


def test_load_split_drops_examples_left_without_target(tmp_path: Path, tokenizer) -> None:
    """An example whose prompt alone fills ``max_tokens`` has nothing to learn: dropped."""
    path = write_jsonl(tmp_path / "t.jsonl", [("short", "# short"), ("long " * 80, "# long")])
    examples, truncated, dropped = load_split(path, tokenizer, max_tokens=60)
    assert (len(examples), truncated, dropped) == (1, 1, 1)


def test_read_chats(tmp_path: Path) -> None:
    """Each line's messages; a bad line is named by number."""
    path = write_jsonl(tmp_path / "a.jsonl", PAIRS[:2])
    assert read_chats(path) == [chat(*PAIRS[0]), chat(*PAIRS[1])]
    path.write_text(path.read_text() + "\n{not json}\n")
    with pytest.raises(ValueError, match=r"a\.jsonl line 4"):
        read_chats(path)


# --- batches --------------------------------------------------------------------------------


def test_a_job_names_its_base_so_any_directory_can_load_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_base: Path, dataset: tuple[Path, Path]
) -> None:
    """A model trained from one directory (relative paths) loads from another."""
    from backends.local import LocalBackend
    from backends.local.model import job_base_dir

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_base, tmp_path / "base")
    backend = LocalBackend("data", fast_settings(base_model="base"))
    job = backend.run_folder(backend.start_finetune(str(dataset[0]), str(dataset[1]))).read_job()
    assert job.base_dir == str(tmp_path / "base")
    monkeypatch.chdir(tmp_path / "data")
    assert job_base_dir(job, tmp_path / "data") == tmp_path / "base"


def test_a_smollm2_job_loads_the_data_dirs_own_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older jobs named SmolLM2's folder relative to where they ran: the data dir's is used."""
    from backends.local.model import MARKER, SMOLLM2, job_base_dir
    from core.runs import JobSpec, base_model_folder

    converted = base_model_folder(tmp_path / "data", SMOLLM2)
    converted.mkdir(parents=True)
    for name in ("config.json", MARKER):  # what a finished conversion leaves
        (converted / name).write_text("{}")
    job = JobSpec(train="t.jsonl", base_dir=f"data/models/base/{SMOLLM2}", settings={})
    monkeypatch.chdir(tmp_path / "data")  # where that relative path is not
    assert job_base_dir(job, tmp_path / "data") == converted


def test_length_grouped_batches_cover_each_index_once_and_are_deterministic() -> None:
    """Every index once per epoch; same (seed, epoch), same batches; new epoch, new order."""
    import random

    rng = random.Random(1)
    lengths = [rng.randint(10, 1000) for _ in range(1003)]
    batches = length_grouped_batches(lengths, 4, seed=7, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= 4 for b in batches)
    assert sum(len(b) < 4 for b in batches) <= 6  # only each mega-chunk's last batch
    assert batches == length_grouped_batches(lengths, 4, seed=7, epoch=0)
    assert batches != length_grouped_batches(lengths, 4, seed=7, epoch=1)
    assert batches != length_grouped_batches(lengths, 4, seed=8, epoch=0)

    def padding(bs: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in bs)

    shuffled = list(range(len(lengths)))
    rng.shuffle(shuffled)
    random_batches = [shuffled[i : i + 4] for i in range(0, len(shuffled), 4)]
    assert padding(batches) < 0.1 * padding(random_batches)


def test_collate_pads_right_and_masks_padding() -> None:
    """Right padding, attention mask 0 and label -100 on padding."""
    examples = [
        {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]},
        {"input_ids": [8], "labels": [8]},
    ]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


# --- the loss and the step ------------------------------------------------------------------


@pytest.fixture
def lora(tiny_base: Path, dataset: tuple[Path, Path]):
    """(LoRA-wrapped tiny model without dropout, its tokenized train split, settings)."""
    settings = fast_settings(lora_dropout=0.0)
    model, tok = build_model(tiny_base, settings)
    examples, _, _ = load_split(dataset[0], tok, settings.max_seq_tokens)
    return model, examples, settings


def test_target_loss_equals_the_models_own_loss(lora) -> None:
    """LM head on target positions only == HF's full-logits loss (mean over label tokens)."""
    import torch

    model, examples, _ = lora
    batch = collate(examples[:4], pad_id=0)
    loss_sum, n = target_loss(model, batch)
    with torch.no_grad():
        reference = model(**batch).loss
    assert n == int((batch["labels"][:, 1:] != IGNORE).sum())
    assert loss_sum.item() / n == pytest.approx(float(reference), rel=1e-5)


def test_gradient_accumulation_equals_one_big_batch(lora) -> None:
    """Two micro-batches of 2 give the gradient of one batch of 4 (mean over target tokens)."""
    model, examples, _ = lora
    for p in model.parameters():  # lora_B starts at 0: make the gradients of lora_A non-zero
        if p.requires_grad:
            p.data.normal_(0, 0.1)

    def gradients(micro_batches: list) -> dict:
        model.zero_grad(set_to_none=True)
        loss, _ = accumulate_gradients(model, micro_batches)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return {"loss": loss, **grads}

    big = gradients([collate(examples[:4], pad_id=0)])
    small = gradients([collate(examples[:2], pad_id=0), collate(examples[2:4], pad_id=0)])
    assert small["loss"] == pytest.approx(big["loss"], rel=1e-6)
    for name in big:
        if name != "loss":
            assert (small[name] - big[name]).abs().max() < 1e-6, name


def test_a_step_changes_lora_weights_only(lora) -> None:
    """Base weights are bit-identical after training steps; every LoRA matrix moved."""
    model, examples, settings = lora
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = make_optimizer(model, settings)
    scheduler = make_scheduler(optimizer, total_steps=3, warmup_ratio=0.0)
    for start in (0, 4, 0):
        train_step(model, optimizer, scheduler, [collate(examples[start : start + 4], 0)])
    after = model.state_dict()
    lora_keys = {k for k in before if "lora_" in k}
    assert len(lora_keys) == 2 * 7 * 2  # A and B of 7 linear layers in each of 2 blocks
    assert all(not before[k].equal(after[k]) for k in lora_keys)
    assert all(before[k].equal(after[k]) for k in before if k not in lora_keys)
    assert {n for n, p in model.named_parameters() if p.requires_grad} <= lora_keys | {
        n.replace(".weight", ".default.weight") for n in lora_keys
    }
    assert not model.training  # train mode only around the steps


def test_fast_dropout_is_dropout() -> None:
    """Drops a share p of the elements, scales the rest by 1/(1-p), seeded; off in eval."""
    import torch

    from backends.local.steps import fast_dropout_class

    dropout = fast_dropout_class()(0.05)
    x = torch.ones(400, 1000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.05) < 0.002
    assert torch.allclose(y[kept], torch.tensor(1 / 0.95))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask / (1 - p)) / dx = mask / (1 - p)
    torch.manual_seed(0)
    assert torch.equal(dropout(x), y)  # the global torch RNG: checkpoints restore it
    assert dropout.eval()(x) is x


def test_build_model_uses_fast_dropout(tiny_base: Path) -> None:
    """Every LoRA layer's dropout is the fast one (7 layers x 2 blocks)."""
    from backends.local.steps import fast_dropout_class

    model, _ = build_model(tiny_base, fast_settings())
    fast = [m for m in model.modules() if isinstance(m, fast_dropout_class())]
    assert len(fast) == 14 and all(m.p == 0.05 for m in fast)


# --- whole runs -----------------------------------------------------------------------------


def test_training_lowers_the_loss_and_writes_the_run(
    tmp_path: Path, tiny_base: Path, dataset: tuple[Path, Path]
) -> None:
    """30 steps on 8 examples: loss halves; metrics.csv, adapter/ and model.json written."""
    events: list[dict] = []
    settings = fast_settings(epochs=15, batch_size=4, lora_dropout=0.0)
    run = tmp_path / "run"
    record = train(run, dataset[0], dataset[1], tiny_base, settings, on_event=events.append)

    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 31))
    assert steps[-1]["loss"] < 0.5 * steps[0]["loss"]
    assert {"step", "total_steps", "loss", "tokens_per_s", "eta_s", "lr"} <= set(steps[0])
    assert steps[-1]["eta_s"] == 0 and steps[0]["total_steps"] == 30
    valids = [e for e in events if e["type"] == "valid"]
    assert [e["step"] for e in valids] == list(range(2, 31, 2))  # each epoch end (2 steps)
    assert valids[-1]["valid_loss"] < valids[0]["valid_loss"]
    assert events[0]["type"] == "start" and events[-1]["type"] == "end"

    with (run / "metrics.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == METRICS_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert [r["valid_loss"] != "" for r in rows] == [s % 2 == 0 for s in range(1, 31)]
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    assert float(rows[-1]["lr"]) < float(rows[3]["lr"]) <= 1e-2  # cosine decay after warm-up

    assert (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert not find_checkpoint(run)  # a finished run keeps no checkpoint
    saved = json.loads((run / "model.json").read_text())
    assert saved == record
    expected_keys = {
        "base_dir", "dataset_sha256", "hyperparameters", "wall_time_s", "steps", "tokens_seen",
        "final_train_loss", "final_valid_loss", "truncated_examples",
    }  # fmt: skip
    assert expected_keys <= set(record)
    assert record["steps"] == 30 and record["hyperparameters"]["epochs"] == 15
    assert record["tokens_seen"] == sum(len(e["input_ids"]) for e in _tokenized(run, dataset)) * 15
    assert record["final_valid_loss"] == valids[-1]["valid_loss"]
    assert record["truncated_examples"] == 0
    assert (record["device"], record["dtype"]) == ("cpu", "float32")  # finetune.device: auto
    assert (events[0]["device"], events[0]["dtype"]) == ("cpu", "float32")  # in the log too
    # the markup bias, chosen on the valid split, goes with the adapter to every decoder
    decoding = json.loads((run / "adapter" / "decoding.json").read_text())
    assert decoding == record["decoding"] and decoding["valid_examples"] > 0
    assert decoding["line_starts"] > 0
    merged, _ = load_for_inference(tiny_base, run / "adapter", threads=1)
    assert merged.markup_bias == decoding["markup_bias"]
    assert decoding["scaffold"] == record["hyperparameters"]["scaffold"] == "author"
    # the author's rules, counted from the train split, are saved with the adapter and read
    from core.author_rules import AuthorRules

    pairs = [(m[-2]["content"], m[-1]["content"]) for m in read_chats(dataset[0])]
    assert merged.scaffold == AuthorRules.fit(pairs) == AuthorRules.load(run / "adapter")

    again: list[dict] = []  # done: model.json returned, no training (not even a model load)
    assert (
        train(run, dataset[0], dataset[1], tmp_path / "nowhere", settings, again.append) == record
    )
    assert [e["type"] for e in again] == ["end"] and again[0]["already_done"]


def test_the_valid_split_is_scored_on_at_most_max_valid_examples(
    tmp_path: Path, tiny_base: Path, dataset: tuple[Path, Path]
) -> None:
    """The valid loss and the calibration read the same few chunks, spread over the split;
    the cap is a report's, not training's: the model id stays."""
    events: list[dict] = []
    capped = fast_settings(max_steps=1, max_valid_examples=2)
    record = train(tmp_path / "run", *dataset, tiny_base, capped, on_event=events.append)
    assert [e["n_examples"] for e in events if e["type"] == "valid"] == [2]
    assert record["decoding"]["valid_examples"] == 2
    whole = fast_settings(max_steps=1, max_valid_examples=None)
    assert run_fingerprint("d", tiny_base, capped) == run_fingerprint("d", tiny_base, whole)
    events.clear()
    train(tmp_path / "whole", *dataset, tiny_base, whole, on_event=events.append)
    assert [e["n_examples"] for e in events if e["type"] == "valid"] == [4]


def _tokenized(run: Path, dataset: tuple[Path, Path]) -> list[dict]:
    """The run's train split, tokenized as the run did."""
    from transformers import AutoTokenizer

    from backends.local.scaffold import load_scaffold

    record = json.loads((run / "model.json").read_text())
    tok = AutoTokenizer.from_pretrained(record["base_dir"], local_files_only=True)
    settings = record["hyperparameters"]
    scaffold = load_scaffold(settings["scaffold"], run / "adapter")  # as the model reads
    return load_split(dataset[0], tok, settings["max_seq_tokens"], scaffold=scaffold)[0]


def _adapter(run: Path) -> dict:
    """The tensors of a run's saved adapter."""
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


def _cli(run: Path) -> subprocess.Popen:
    """``python -m backends.local.train RUN`` with JSON events on a stdout pipe."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "backends.local.train", str(run)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_a_killed_run_resumes_to_the_same_adapter(
    tmp_path: Path, tiny_base: Path, dataset: tuple[Path, Path]
) -> None:
    """SIGKILL after a checkpoint, run again: continues at the next step, same final adapter."""
    overrides = {
        **FAST,
        "epochs": 30,  # 8 examples, batches of 2, 2 per step: 2 steps an epoch, 60 steps
        "batch_size": 2,
        "grad_accum": 2,
        "checkpoint_every": 2,
        "lora_dropout": 0.1,  # dropout draws random numbers: the RNG state must resume too
    }
    settings = FinetuneSettings(**overrides)
    job = {"train": str(dataset[0]), "valid": str(dataset[1]), "base_dir": str(tiny_base)}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = train(straight, dataset[0], dataset[1], tiny_base, settings)

    killed.mkdir()
    (killed / "job.json").write_text(json.dumps({**job, "settings": overrides}))
    process = _cli(killed)
    deadline = time.monotonic() + 120
    for line in process.stdout:  # kill as soon as a checkpoint at step >= 2 is announced
        event = json.loads(line)
        if event["type"] == "checkpoint" and event["step"] >= 2:
            os.kill(process.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "no checkpoint event in time"
    process.wait(timeout=30)
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "model.json").exists(), "the run finished before it could be killed"
    checkpoint = find_checkpoint(killed)
    assert checkpoint is not None
    saved_step = json.loads((checkpoint / "state.json").read_text())["step"]
    assert 2 <= saved_step < 60

    events: list[dict] = []  # run again (in-process: the same ``train`` the CLI runs)
    record = train(killed, dataset[0], dataset[1], tiny_base, settings, on_event=events.append)
    assert events[0]["type"] == "start" and events[0]["resumed"] and events[0]["step"] == saved_step
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == list(range(saved_step + 1, 61))

    assert json.loads((killed / "model.json").read_text()) == record
    assert record["resumes"] == 1 and record["steps"] == reference["steps"] == 60
    assert record["tokens_seen"] == reference["tokens_seen"]
    assert record["final_valid_loss"] == pytest.approx(reference["final_valid_loss"], rel=1e-6)
    a, b = _adapter(straight), _adapter(killed)
    assert a.keys() == b.keys() and len(a) == 28
    for name in a:
        assert (a[name] - b[name]).abs().max() <= 1e-6, name
    columns = ("step", "epoch", "train_loss", "valid_loss", "lr")
    with (straight / "metrics.csv").open() as f1, (killed / "metrics.csv").open() as f2:
        rows1 = [tuple(r[c] for c in columns) for r in csv.DictReader(f1)]
        rows2 = [tuple(r[c] for c in columns) for r in csv.DictReader(f2)]
    assert len(rows1) == 60
    for r1, r2 in zip(rows1, rows2, strict=True):  # same history, read from the checkpoint
        assert r1[:2] == r2[:2] and r1[4] == r2[4] and (r1[3] == "") == (r2[3] == "")
        assert float(r1[2]) == pytest.approx(float(r2[2]), abs=1e-5)


def test_a_checkpoint_from_other_settings_is_refused(
    tmp_path: Path, tiny_base: Path, dataset: tuple[Path, Path]
) -> None:
    """Resuming with a different batch size (other batches, other schedule) is an error."""
    settings = fast_settings(epochs=2, batch_size=2, checkpoint_every=1)

    def crash_at_checkpoint(event: dict) -> None:
        if event["type"] == "checkpoint":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, dataset[0], None, tiny_base, settings, crash_at_checkpoint)
    assert find_checkpoint(tmp_path) is not None
    with pytest.raises(ValueError, match="other data, base model or settings"):
        train(
            tmp_path,
            dataset[0],
            None,
            tiny_base,
            fast_settings(epochs=2, batch_size=4, checkpoint_every=1),
        )
