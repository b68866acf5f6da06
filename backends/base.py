"""The one small interface every model backend implements.

A backend fine-tunes a chat model from train/valid JSONL (OpenAI chat format) and completes
chats with the result. Starting a fine-tune is idempotent: the same data and
hyperparameters give the same job, so a rerun (a crash, a Prefect retry) follows the job
already there instead of paying for or computing a second one.

    backend = get_backend(settings)             # backends.get_backend
    job_id = backend.start_finetune("train.jsonl", "valid.jsonl", suffix="personal")
    job = backend.follow(job_id, on_event=print)   # blocks until the job ends
    backend.complete(job["model_id"], [[{"role": "user", "content": "Hello"}]])

Backends: ``local`` (``backends.local``: LoRA on the CPU) and ``openai`` (``backends.openai``:
OpenAI's API or any OpenAI-compatible URL, e.g. ``pgpt serve``). A backend that is paid per
token also has ``usage_cost(model_id) -> float``: USD of its ``complete`` calls so far.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Event = dict  # {"type": "step" | "valid" | "checkpoint" | "status" | "end", ...}
Job = dict  # {"id", "status", "model_id", "error", "metrics": {...}}
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class Backend(Protocol):
    """Fine-tune a chat model and complete chats with it."""

    name: str

    def start_finetune(self, train: str, valid: str | None, suffix: str = "personal") -> str:
        """Create (or find) the fine-tuning job for this data and settings; its id."""
        ...

    def get_job(self, job_id: str) -> Job:
        """The job's current state."""
        ...

    def follow(self, job_id: str, on_event: Callable[[Event], None] | None = None) -> Job:
        """Run or watch the job until it ends, reporting events; the final job."""
        ...

    def complete(
        self,
        model_id: str,
        conversations: list[list[dict]],
        progress: Callable[[int, int], None] | None = None,
        faithful: bool = False,
    ) -> list[str]:
        """The assistant's reply to each conversation, in order.

        ``faithful``: keep each reply's words to the conversation's last message where the
        backend can steer decoding (local); callers still run ``core.faithful.repair``.
        """
        ...
