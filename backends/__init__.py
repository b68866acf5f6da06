"""Model backends behind one small interface (``backends.base.Backend``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from backends.base import Backend


def model_folder(data_dir: str | Path, model_id: str) -> Path:
    """``DATA/models/<model id>/``: a fine-tune's loss curve and record, whatever its backend.

    OpenAI's ``ft:<base>:<org>:<suffix>:<id>`` ids hold colons, so they become dashes.

    >>> model_folder("data", "ft:gpt-4o-mini-2024-07-18:acme:personal:abc123").name
    'ft-gpt-4o-mini-2024-07-18-acme-personal-abc123'
    >>> model_folder("data", "smollm2-135m-instruct-personal-0123456789ab").name
    'smollm2-135m-instruct-personal-0123456789ab'
    """
    return Path(data_dir) / "models" / re.sub(r"[^A-Za-z0-9.-]+", "-", model_id).strip("-")


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
