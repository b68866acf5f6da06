"""Model backends behind one small interface (``backends.base.Backend``)."""

from __future__ import annotations

from pathlib import Path

from backends.base import Backend
from config.settings import FinetuneSettings, Price


def get_backend(
    finetune: FinetuneSettings,
    data_dir: str | Path,
    prices: dict[str, Price] | None = None,
    light: bool = False,
) -> Backend:
    """The backend named by ``finetune.backend``.

    ``prices``: the dated price table (``export.prices``) the openai backend budgets with.
    ``light``: the local backend answers greedily from a quick start (``pgpt format``).
    """
    if finetune.backend == "local":
        from backends.local import LocalBackend

        return LocalBackend(data_dir, finetune, light=light)
    if finetune.backend == "openai":
        from backends.openai import OpenAIBackend

        return OpenAIBackend(data_dir, finetune, prices=prices or None)
    raise ValueError(f"unknown backend {finetune.backend!r} (known: local, openai)")
