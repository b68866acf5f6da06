"""Checkpoints: a run's whole state (adapter, optimizer, scheduler, RNG, progress) written
atomically, and found and loaded again to resume where a killed run stopped.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.runs import CHECKPOINT

# --- checkpoints and metrics ----------------------------------------------------------------


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished directory ``tmp`` to ``target``, replacing it (the old one kept as
    ``target.old`` until the new one is in place, so one of them is always whole)."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def temp_dir(run_dir: Path, name: str) -> Path:
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

    tmp = temp_dir(run_dir, CHECKPOINT)
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
        replace_dir(tmp, run_dir / CHECKPOINT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir / CHECKPOINT


def _jsonable_rng(rng_state: tuple[Any, ...]) -> list[Any]:
    """Python's ``random.getstate()`` as JSON (tuples become lists)."""
    version, internal, gauss = rng_state
    return [version, list(internal), gauss]


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest whole checkpoint of ``run_dir`` (``checkpoint/``, else ``checkpoint.old/``)."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
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
