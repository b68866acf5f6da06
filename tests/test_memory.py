"""Training memory: what made ``make run``'s training peak at 13 GB must not come back.

Measured with ``bench/memory.py`` (peak RSS from the OS): the activations autograd keeps for
the backward pass (~2 MB a token for SmolLM2-135M), of a whole batch of 4 x ~850 tokens at
once; the dropout of every LoRA layer keeping a float mask and a dropped copy of its input;
and glibc's heap fragmenting under activations of varying sizes. These tests check each cause
by construction (shapes, saved bytes, allocator state), never by wall clock or RSS.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

from backends.local import plan as plan_module
from backends.local import steps as steps_module
from backends.local import train as train_module
from backends.local.data import collate, split_by_tokens
from backends.local.plan import load_split
from backends.local.steps import build_model
from backends.local.train import train
from config.settings import FinetuneSettings

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "You render plain text into markdown format."
PAIRS = [
    ("Hello world, this is a longer line of plain text", "# Hello world, this is a longer line"),
    ("a list item", "- a list item"),
    ("bold text and more words after it", "**bold text** and more words after it"),
    ("some code", "`some code`"),
    ("A quote that goes on for a while, longer than most", "> A quote that goes on for a while"),
    ("Title here", "## Title here"),
]
FAST = {"threads": 1, "max_seq_tokens": 64, "learning_rate": 1e-2, "warmup_ratio": 0.1}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama the trainer's tests use (an HF folder)."""
    from tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="module")
def train_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Chat examples of different lengths (so batches would pad)."""
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    lines = []
    for plain, markdown in PAIRS:
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": plain},
            {"role": "assistant", "content": markdown},
        ]
        lines.append(json.dumps({"messages": messages}) + "\n")
    path.write_text("".join(lines))
    return path


# --- micro-batches bounded in padded tokens -------------------------------------------------


def test_split_by_tokens_bounds_every_micro_batch() -> None:
    """Each index once; rows x longest row <= the bound unless a row is alone."""
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 900) for _ in range(12)]
        batch = rng.sample(range(12), rng.randint(1, 12))
        bound = rng.choice([100, 512, 1024, 4096])
        micro = split_by_tokens(batch, lengths, bound)
        assert sorted(i for m in micro for i in m) == sorted(batch)
        for m in micro:
            assert len(m) == 1 or len(m) * max(lengths[i] for i in m) <= bound
    assert split_by_tokens([0, 1], [900, 900], 0) == [[0, 1]]  # 0: never cut


def test_the_default_bound_keeps_one_long_example_per_pass() -> None:
    """The quick profile's examples are up to ~860 tokens: one at a time, not 4 x 860."""
    from config.settings import FinetuneSettings

    bound = FinetuneSettings().micro_batch_tokens
    assert 0 < bound < 2 * 860
    assert split_by_tokens([0, 1, 2, 3], [856, 850, 849, 813], bound) == [[0], [1], [2], [3]]


def test_training_runs_micro_batches_within_the_bound(
    tiny_base: Path, train_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run: every forward/backward pass holds <= micro_batch_tokens padded tokens."""
    seen: list[tuple[int, int]] = []
    real = steps_module.accumulate_gradients

    def spy(model, micro_batches):
        seen.extend(tuple(b["input_ids"].shape) for b in micro_batches)
        return real(model, micro_batches)

    monkeypatch.setattr(steps_module, "accumulate_gradients", spy)
    from backends.local.model import load_model

    tokenizer = load_model(tiny_base, threads=1)[1]
    examples, _, _ = load_split(train_jsonl, tokenizer, FAST["max_seq_tokens"])
    bound = 2 * sorted(len(e["input_ids"]) for e in examples)[2]  # two short rows fit
    settings = FinetuneSettings(**FAST, batch_size=4, epochs=1, micro_batch_tokens=bound)
    train(tmp_path / "run", train_jsonl, None, tiny_base, settings)
    assert seen and all(rows == 1 or rows * width <= bound for rows, width in seen)
    assert any(rows == 1 for rows, _ in seen)  # the batch of 4 was cut
    assert any(rows > 1 for rows, _ in seen)  # short rows still share a pass
    assert sum(rows for rows, _ in seen) == len(PAIRS)  # one epoch: every example once


# --- LoRA dropout: no float mask, no dropped copy kept for the backward pass ---------------


def _saved_bytes(model, batch) -> dict[str, int]:
    """Bytes autograd saves for the backward of ``target_loss``, by dtype (storages once)."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple[str, int]] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = (str(t.dtype), t.untyped_storage().nbytes())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        steps_module.target_loss(model, batch)
    model.eval()
    out: dict[str, int] = {}
    for dtype, nbytes in seen.values():
        out[dtype] = out.get(dtype, 0) + nbytes
    return out


def test_fused_lora_dropout_saves_a_quarter_of_the_activations(
    tiny_base: Path, train_jsonl: Path
) -> None:
    """Fused: float bytes saved for backward drop by >= 25 % against PEFT's own dropout."""
    settings = FinetuneSettings(**FAST, lora_dropout=0.1)
    fused, tokenizer = build_model(tiny_base, settings)
    examples, _, _ = load_split(train_jsonl, tokenizer, settings.max_seq_tokens)
    batch = collate(examples[:2], 0)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(steps_module, "use_fast_dropout", lambda model: 0)  # PEFT's nn.Dropout
    try:
        plain, _ = build_model(tiny_base, settings)
    finally:
        monkey.undo()
    fused_bytes, plain_bytes = _saved_bytes(fused, batch), _saved_bytes(plain, batch)
    assert fused_bytes["torch.float32"] <= 0.75 * plain_bytes["torch.float32"]
    assert fused_bytes.get("torch.bool", 0) > 0  # the masks, 1 byte an element


def test_fused_lora_dropout_is_dropout_then_linear() -> None:
    """Same output and gradients (x and A) as FastDropout then Linear, on the same draws."""
    import torch

    from backends.local.steps import dropout_linear_class

    torch.manual_seed(1)
    linear = torch.nn.Linear(24, 4, bias=False)
    fused = dropout_linear_class()(linear, 0.3).train()
    x = torch.randn(3, 5, 24, requires_grad=True)
    torch.manual_seed(7)
    y = fused(x)
    (y * torch.arange(4.0)).sum().backward()
    grad_x, grad_w = x.grad.clone(), linear.weight.grad.clone()
    x.grad, linear.weight.grad = None, None
    torch.manual_seed(7)
    reference = linear(fused.dropout.train()(x))
    (reference * torch.arange(4.0)).sum().backward()
    assert torch.allclose(y, reference, atol=1e-6)
    assert torch.allclose(grad_x, x.grad, atol=1e-6)
    assert torch.allclose(grad_w, linear.weight.grad, atol=1e-5)
    assert fused.weight is linear.weight
    assert torch.equal(fused.eval()(x), linear(x))  # eval: no dropout


def test_peft_state_dict_is_unchanged_by_the_fusion(tiny_base: Path) -> None:
    """The adapter's keys are PEFT's own (checkpoints and saved adapters load anywhere)."""
    from peft import get_peft_model_state_dict

    fused, _ = build_model(tiny_base, FinetuneSettings(**FAST))
    monkey = pytest.MonkeyPatch()
    monkey.setattr(steps_module, "use_fast_dropout", lambda model: 0)
    try:
        plain, _ = build_model(tiny_base, FinetuneSettings(**FAST))
    finally:
        monkey.undo()
    assert get_peft_model_state_dict(fused).keys() == get_peft_model_state_dict(plain).keys()
    assert fused.state_dict().keys() == plain.state_dict().keys()


# --- the allocator ---------------------------------------------------------------------------

HEAP_PROBE = textwrap.dedent(
    """
    import sys
    import torch
    from backends.local.plan import tune_allocator

    if sys.argv[1] == "tuned":
        print("set", tune_allocator(256).get("mmap_threshold"))
    big = torch.ones(2 * 1024 * 1024)  # 8 MB: mmapped, then freed
    del big
    probe = torch.ones(1024 * 1024)  # 4 MB, allocated after that free
    ptr = probe.data_ptr()
    for line in open("/proc/self/maps"):
        span, *rest = line.split()[0], line.split()[1:]
        lo, hi = (int(v, 16) for v in span.split("-"))
        if lo <= ptr < hi:
            print("heap" if line.rstrip().endswith("[heap]") else "mmap")
    """
)


def _probe(mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", HEAP_PROBE, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_pinned_mmap_threshold_keeps_large_blocks_off_the_heap() -> None:
    """glibc's dynamic threshold puts a 4 MB block freed-after-8 MB on the heap; pinned, not."""
    if plan_module._glibc() is None:
        pytest.skip("not glibc")
    untuned = _probe("default")
    if untuned != ["heap"]:
        pytest.skip(f"this libc does not move its mmap threshold: {untuned}")
    assert _probe("tuned") == ["set", str(256 * 1024), "mmap"]


def test_training_tunes_the_allocator_and_frees_the_model(
    tiny_base: Path, train_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train() pins the threshold first; when it returns, nothing holds the model any more."""
    import gc

    calls: list[int] = []
    real_tune = train_module.tune_allocator
    monkeypatch.setattr(
        train_module, "tune_allocator", lambda kb: calls.append(kb) or real_tune(kb)
    )
    models: list[weakref.ref] = []
    real_build = train_module.build_model

    def build(base_dir, settings):
        model, tokenizer = real_build(base_dir, settings)
        models.append(weakref.ref(model))
        return model, tokenizer

    monkeypatch.setattr(train_module, "build_model", build)
    train(tmp_path / "run", train_jsonl, None, tiny_base, FinetuneSettings(**FAST, max_steps=2))
    gc.collect()
    assert calls == [256]  # the default, finetune.mmap_threshold_kb
    if plan_module._glibc() is not None:
        assert plan_module._allocator["mmap_threshold"] == 256 * 1024
    assert len(models) == 1 and models[0]() is None
