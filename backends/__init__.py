"""Model backends behind one small interface (``backends.base.Backend``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.base import Backend


def get_backend(finetune: dict[str, Any], data_dir: str | Path) -> Backend:
    """The backend named by ``finetune["backend"]`` (settings: ``FinetuneSettings``)."""
    if finetune["backend"] == "local":
        from backends.local import LocalBackend

        return LocalBackend(data_dir, finetune)
    raise ValueError(f"backend {finetune['backend']!r} is not available yet (known: local)")
