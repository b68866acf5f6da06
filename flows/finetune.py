"""Fine-tune flow: DATA/jsonl/{train,valid}.jsonl -> a fine-tuned model.

Training holds the machine's training slot, the global concurrency limit
``pgpt-train-<hostname>`` (limit 1, created on first use): two local trainings on one machine,
from two deployment runs, a worker and the CLI alike, never run at the same time (on 2 cores
two torch processes slow each other 5-10x); the second waits for the slot.

python flows/finetune.py
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from backends.local.train import file_sha256
from config.settings import load_settings
from flows.runner import Backend, flow_settings, in_data_dir
from tasks.finetune import finetune_model, publish_training, set_current_model

TRAINING_SLOTS = 1  # trainings at once on one machine: torch already uses every core


def cancel_remote_jobs(flow: object, flow_run: object, state: object) -> None:
    """on_cancellation: a cancelled run cancels the OpenAI job it was following."""
    from backends.openai import OpenAIBackend

    params = getattr(flow_run, "parameters", {}) or {}
    settings = flow_settings(params.get("profile"), params.get("data_dir"), params.get("backend"))
    if settings.finetune.backend == "openai":
        backend = OpenAIBackend(settings.data_dir, settings.finetune.model_dump())
        backend.cancel_jobs_of_flow_run(str(flow_run.id))


def training_slot_name() -> str:
    """The global concurrency limit that this machine's trainings share."""
    return f"pgpt-train-{socket.gethostname()}"


@contextmanager
def training_slot() -> Iterator[None]:
    """Hold this machine's training slot (waiting for it), creating its limit if missing."""
    name = training_slot_name()
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            # (an existing limit, e.g. raised with `prefect gcl update`, is left as it is)
            with suppress(ObjectAlreadyExists):  # another run created it a moment ago
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=TRAINING_SLOTS)
                )
    get_run_logger().info("waiting for the training slot %s", name)
    with concurrency(name, occupy=1, strict=True):
        yield


@flow(name="finetune", on_cancellation=[cancel_remote_jobs])
def finetune(
    profile: str = "default",
    data_dir: str | None = None,
    make_current: bool = True,
    backend: Backend | None = None,
) -> dict:
    """Fine-tune the configured backend on the exported JSONL (and make it the current model).

    The retrain flow passes ``make_current=False``: there, evaluation decides (champion/challenger).
    ``backend`` overrides the profile's ``finetune.backend``.
    """
    settings = flow_settings(profile, data_dir, backend)
    jsonl = Path(settings.data_dir) / "jsonl"
    train, valid = jsonl / "train.jsonl", jsonl / "valid.jsonl"
    if not train.exists():
        raise FileNotFoundError(f"{train} not found: run `pgpt export` first")
    valid_or_none = str(valid) if valid.exists() and valid.stat().st_size else None
    local = settings.finetune.backend == "local"  # OpenAI trains elsewhere: no slot needed
    with training_slot() if local else nullcontext():
        job = in_data_dir(finetune_model, settings.data_dir)(
            str(train),
            valid_or_none,
            file_sha256(train, valid_or_none),
            settings.finetune.model_dump(),
            str(settings.data_dir),
            settings.model_dump(mode="json")["export"]["prices"],
        )
    loss_png = publish_training(job, str(settings.data_dir))
    if make_current:
        set_current_model(settings.data_dir, job["model_id"])
    return {**job, "loss_png": loss_png}


if __name__ == "__main__":
    from config.runtime import results_in

    with results_in(load_settings().data_dir):
        finetune()
