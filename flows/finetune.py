"""Fine-tune flow: DATA/jsonl/{train,valid}.jsonl -> a fine-tuned model.

Training holds the machine's training slot, a lock file (``training_lock``): two local
trainings on one machine, from two deployment runs, a worker and the CLI alike, never run at
the same time (on 2 cores two torch processes slow each other 5-10x); the second waits.

python flows/finetune.py
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from typing_extensions import TypedDict

from config.settings import load_settings
from core.runs import file_sha256, set_current_model
from flows.runner import Backend, flow_settings, in_data_dir
from tasks.export import exported_split
from tasks.finetune import finetune_model, publish_training


class Finetuned(TypedDict):
    """The finetune flow's result: the finished job (``backends.base.Job`` as JSON-shaped
    data, the shape of a flow's result) and its loss curve."""

    id: str
    status: str
    model_id: str
    error: str | None
    metrics: dict[str, Any]  # what the backend measured: steps, tokens_seen, losses, cost_usd
    loss_png: str


def cancel_remote_jobs(flow: object, flow_run: object, state: object) -> None:
    """on_cancellation: a cancelled run cancels the OpenAI job it was following."""
    from backends.openai import OpenAIBackend

    params = getattr(flow_run, "parameters", {}) or {}
    settings = flow_settings(params.get("profile"), params.get("data_dir"), params.get("backend"))
    if settings.finetune.backend == "openai":
        backend = OpenAIBackend(settings.data_dir, settings.finetune)
        backend.cancel_jobs_of_flow_run(str(flow_run.id))


def training_lock() -> Path:
    """The lock file this machine's trainings share (env ``PGPT_TRAIN_LOCK`` to move it)."""
    default = Path(tempfile.gettempdir()) / "pgpt-train.lock"
    return Path(os.environ.get("PGPT_TRAIN_LOCK") or default)


@contextmanager
def training_slot() -> Iterator[None]:
    """Hold this machine's training slot, waiting for it if another training has it.

    An OS file lock, not a Prefect concurrency limit: the kernel frees it when its process
    dies, so a killed run (Ctrl-C, SIGKILL, a crashed worker) never leaves the slot taken,
    whereas a Prefect slot taken from an ephemeral API outlives the process that held it.
    """
    import fcntl

    path = training_lock()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            get_run_logger().info("waiting for the training slot %s (another training)", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@flow(name="finetune", on_cancellation=[cancel_remote_jobs])
def finetune(
    profile: str = "default",
    data_dir: str | None = None,
    make_current: bool = True,
    backend: Backend | None = None,
) -> Finetuned:
    """Fine-tune the configured backend on the exported JSONL (and make it the current model).

    The retrain flow passes ``make_current=False``: there, evaluation decides (champion/challenger).
    ``backend`` overrides the profile's ``finetune.backend``.
    """
    settings = flow_settings(profile, data_dir, backend)
    train = exported_split(settings.data_dir, "train")
    valid = train.with_name("valid.jsonl")
    valid_or_none = str(valid) if valid.exists() and valid.stat().st_size else None
    local = settings.finetune.backend == "local"  # OpenAI trains elsewhere: no slot needed
    with training_slot() if local else nullcontext():
        job = in_data_dir(finetune_model, settings.data_dir)(
            str(train),
            valid_or_none,
            file_sha256(train, valid_or_none),
            settings.finetune,
            str(settings.data_dir),
            settings.export.prices,
        )
    loss_png = publish_training(job, str(settings.data_dir))
    if make_current:
        set_current_model(settings.data_dir, job.model_id)
    return Finetuned(**job.as_dict(), loss_png=loss_png)  # a flow's result: JSON-shaped


if __name__ == "__main__":
    from config.runtime import results_in

    with results_in(load_settings().data_dir):
        finetune()
