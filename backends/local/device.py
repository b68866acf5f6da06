"""Where the local model runs (a CUDA GPU, Apple's MPS, or the CPU) and in which dtype.

``finetune.device: auto`` takes CUDA when torch sees a CUDA device, then MPS, else the CPU,
for training, evaluation and serving alike. The weights are bfloat16 on a CUDA GPU that
supports it (half the memory, and its tensor cores) and float32 elsewhere: on a CPU without
AVX-512 or AMX, bfloat16 matmuls run about 30x slower than float32, and MPS's bfloat16 support
depends on the macOS release. A device that is asked for by name and is not there is an
error that says so, never a silent fall back to the CPU.

>>> pick_device("auto", cuda=False, mps=False)
'cpu'
>>> pick_device("auto", cuda=False, mps=True)
'mps'
>>> pick_dtype("cuda", bf16=True), pick_dtype("mps", bf16=True), pick_dtype("cpu", bf16=True)
('bfloat16', 'float32', 'float32')
"""

from __future__ import annotations

from typing import Literal

Device = Literal["auto", "cpu", "cuda", "mps"]


def available() -> tuple[bool, bool]:
    """Whether torch sees a CUDA device, and Apple's MPS."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available(), bool(mps is not None and mps.is_available())


def pick_device(setting: Device, cuda: bool | None = None, mps: bool | None = None) -> str:
    """The torch device of ``finetune.device`` (``cuda``/``mps``: whether each is there; None:
    ask torch)."""
    if cuda is None or mps is None:
        cuda, mps = available()
    if setting == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (setting == "cuda" and not cuda) or (setting == "mps" and not mps):
        raise ValueError(
            f"finetune.device is {setting}, but torch sees no {setting.upper()} device here "
            "(a CPU build of torch, or no driver): set finetune.device to auto or cpu"
        )
    return setting


def pick_dtype(device: str, bf16: bool | None = None) -> str:
    """The weights' dtype on ``device``: bfloat16 on a CUDA GPU that supports it, else float32
    (``bf16``: whether the GPU supports it; None: ask torch)."""
    if device != "cuda":
        return "float32"
    if bf16 is None:
        import torch

        bf16 = torch.cuda.is_bf16_supported()
    return "bfloat16" if bf16 else "float32"
