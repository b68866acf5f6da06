"""Model backends behind one small interface (``backends.base.Backend``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backends.base import Backend


def get_backend(
    finetune: dict[str, Any], data_dir: str | Path, prices: dict[str, Any] | None = None
) -> Backend:
    """The backend named by ``finetune["backend"]`` (settings: ``FinetuneSettings``).

    ``prices``: the dated price table (``export.prices``) the openai backend budgets with.
    """
    if finetune["backend"] == "local":
        from backends.local import LocalBackend

        return LocalBackend(data_dir, finetune)
    if finetune["backend"] == "openai":
        from backends.openai import OpenAIBackend
        from config.settings import Price

        table = {k: Price.model_validate(v) for k, v in prices.items()} if prices else None
        return OpenAIBackend(data_dir, finetune, prices=table)
    raise ValueError(f"unknown backend {finetune['backend']!r} (known: local, openai)")
