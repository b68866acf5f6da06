"""The one small interface every model backend implements.

A backend fine-tunes a chat model from train/valid JSONL (OpenAI chat format) and completes
chats with the result. Starting a fine-tune is idempotent: the same data and
hyperparameters give the same job, so a rerun (a crash, a Prefect retry) follows the job
already there instead of paying for or computing a second one.

    backend = get_backend(settings.finetune, data_dir)  # backends.get_backend
    job_id = backend.start_finetune("train.jsonl", "valid.jsonl", suffix="personal")
    job = backend.follow(job_id, on_event=print)   # blocks until the job ends: a Job
    backend.complete(job.model_id, [[{"role": "user", "content": "Hello"}]])

Backends: ``local`` (``backends.local``: LoRA on the CPU) and ``openai`` (``backends.openai``:
OpenAI's API or any OpenAI-compatible URL, e.g. ``pgpt serve``). A backend that is paid per
token also has ``usage_cost(model_id) -> float``: USD of its ``complete`` calls so far.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from core.chat_data import Message

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class Job:
    """A fine-tuning job as every backend reports it (OpenAI's statuses and names).

    >>> job = Job("ft-1", "succeeded", model_id="ft:smollm2:personal", metrics={"steps": 3})
    >>> job.as_dict()["model_id"]
    'ft:smollm2:personal'
    """

    id: str
    status: str  # validating_files, queued, running, succeeded, failed or cancelled
    model_id: str | None = None  # the fine-tuned model: set once the job succeeded
    error: str | None = None  # why it failed: "code: message"
    metrics: dict[str, Any] = field(default_factory=dict)  # steps, tokens_seen, losses, cost_usd

    def as_dict(self) -> dict[str, Any]:
        """The job as JSON-shaped data (a flow's result, a report)."""
        return asdict(self)


# A training event while a job is followed: ``{"type": ..., ...}``, its fields by type:
# start (step, total_steps, n_train, n_valid, resumed), step (step, total_steps, loss,
# tokens_per_s, eta_s, lr), valid (step, valid_loss), checkpoint (step, path), status (level,
# message: OpenAI's job events), calibrated (the decoding biases), end (status, model_id, the
# model.json summary). A plain dict on purpose: events are JSON lines that go as they are from
# the trainer's stdout to the train log, the Prefect logs, the CLI's bar and the server's job
# events; a class per type would be converted back and forth at each of those hops.
Event = dict[str, Any]


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
        conversations: list[list[Message]],
        progress: Callable[[int, int], None] | None = None,
        faithful: bool = False,
    ) -> list[str]:
        """The assistant's reply to each conversation, in order.

        ``faithful``: keep each reply's words to the conversation's last message where the
        backend can steer decoding (local); callers still run ``core.faithful.repair``.
        """
        ...
