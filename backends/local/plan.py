"""The shape of a run: its settings, threads, steps and learning-rate schedule, its batches, and
the memory it holds (glibc's allocator tuned so that freed activations go back to the system).

>>> [round(lr_factor(s, total=8, warmup=2), 2) for s in range(8)]
[0.33, 0.67, 1.0, 0.93, 0.75, 0.5, 0.25, 0.07]
>>> plan_steps(n_batches=10, grad_accum=4, epochs=3, max_steps=None)
(3, 9)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from backends.base import Event
from backends.local.data import (
    length_grouped_batches,
    tokenize_example,
)
from backends.local.scaffold import Reader, Scaffold, scaffolded
from core.chat_data import read_chats

MAX_GRAD_NORM = 1.0

OnEvent = Callable[[Event], None]


# --- plan -----------------------------------------------------------------------------------


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
    for messages in read_chats(path):
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
