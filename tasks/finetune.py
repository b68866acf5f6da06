"""Fine-tune with the configured backend, publish the loss curve, remember the current model.

The task is cached on (train and valid file hashes, fine-tune settings — the backend and base
model among them), so an unchanged dataset never retrains; the backend itself is idempotent
too (same data and settings -> same job, resumed from its checkpoint after a crash).

>>> progress_line({"type": "step", "step": 3, "total_steps": 90, "loss": 1.234,
...                "tokens_per_s": 181.0, "eta_s": 512})
'step 3/90  loss 1.2340  181 tok/s  ETA 8m32s'
>>> progress_line({"type": "step", "step": 3, "total_steps": None, "loss": 1.234})
'step 3/?  loss 1.2340'
>>> progress_line({"type": "status", "level": "info", "message": "Fine-tuning job started"})
'Fine-tuning job started'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from backends import get_backend
from backends.base import Event, Job
from config.settings import FinetuneSettings, Price
from core.runs import MetricsRow, RunFolder

_listeners: list[Callable[[Event], None]] = []  # in-process watchers of training events (the CLI)


@contextmanager
def training_events(listener: Callable[[Event], None]) -> Iterator[None]:
    """Send every training event of this process to ``listener`` (e.g. a progress bar)."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def progress_line(event: Event) -> str:
    """One line for a training event: step, loss, tokens/s and ETA."""
    if event["type"] == "status":  # a job event of the openai backend
        return event["message"]
    if event["type"] != "step":
        fields = {k: v for k, v in event.items() if k != "type"}
        return f"{event['type']}: {fields}"
    line = f"step {event['step']}/{event.get('total_steps') or '?'}  loss {event['loss']:.4f}"
    if event.get("tokens_per_s") is not None:  # the openai backend's events carry neither
        line += f"  {event['tokens_per_s']:.0f} tok/s"
    if event.get("eta_s") is not None:
        minutes, seconds = divmod(int(event["eta_s"]), 60)
        line += f"  ETA {minutes}m{seconds:02d}s"
    return line


# ``prices`` is export.prices, a dict, not ExportSettings: the cache key (INPUTS) then follows
# the price table only, so an export setting that leaves the data alone never retrains.
@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def finetune_model(
    train: str,
    valid: str | None,
    dataset_sha256: str,
    finetune: FinetuneSettings,
    data_dir: str,
    prices: dict[str, Price] | None = None,
) -> Job:
    """Fine-tune on train/valid JSONL with the configured backend; the finished job.

    ``prices``: ``export.prices`` (the openai backend's budget check and cost).
    """
    logger = get_run_logger()
    backend = get_backend(finetune, data_dir, prices)
    job_id = backend.start_finetune(train, valid)
    logger.info(
        "fine-tuning job %s (%s backend, data %s)", job_id, backend.name, dataset_sha256[:12]
    )
    every = {"n": 1}

    def on_event(event: Event) -> None:
        for listener in _listeners:
            listener(event)
        if event["type"] == "step" and event.get("total_steps"):
            every["n"] = max(1, event["total_steps"] // 40)  # ~40 progress lines a run
            if event["step"] % every["n"] and event["step"] != event["total_steps"]:
                return
        logger.info(progress_line(event))

    job = backend.follow(job_id, on_event=on_event)
    if job.status != "succeeded":
        raise RuntimeError(f"fine-tuning job {job_id} {job.status}: {job.error}")
    return job


def plot_loss(rows: list[MetricsRow], out: Path) -> Path:
    """Train and valid loss per step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], label="train")
    valid = [r for r in rows if r.get("valid_loss") is not None]
    ax.plot([r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-", label="valid")
    ax.set(xlabel="optimizer step", ylabel="loss (assistant tokens)", title="Fine-tuning loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


@task
def publish_training(job: Job, data_dir: str) -> str:
    """Plot the loss curve (loss.png in the run folder) and publish it as Prefect artifacts."""
    run = RunFolder.of(data_dir, job.model_id)
    rows = run.read_metrics()
    png = plot_loss(rows, run.loss_png)
    step = max(1, len(rows) // 50)
    create_table_artifact(
        key="pgpt-loss-curve",
        table=rows[::step] + rows[-1:],
        description=f"Training loss of {job.model_id}",
    )
    m = job.metrics
    create_markdown_artifact(
        key="pgpt-finetune",
        markdown=(
            f"## Fine-tuned `{job.model_id}`\n\n"
            f"| steps | tokens seen | wall time (s) | final train loss | final valid loss |\n"
            f"| --- | --- | --- | --- | --- |\n"
            f"| {m.get('steps')} | {m.get('tokens_seen')} | {m.get('wall_time_s')} "
            f"| {m.get('final_train_loss')} | {m.get('final_valid_loss')} |\n\n"
            f"Loss curve: `{png}`"
        ),
        description="Fine-tuning summary",
    )
    return str(png)
