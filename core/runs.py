"""The run folders under ``DATA/models/``: the one module that knows their layout.

Every fine-tune, whatever its backend, leaves one folder named after its model id, and the
current model is named in one file::

    DATA/models/
      current.json        {"model_id": "..."}: the model `pgpt format` and `serve` use
      base/<name>/        base models converted once (plain Hugging Face folders)
      <model id>/         one fine-tune (a local job's id is its model id)
        job.json          what a local job trains on (JobSpec), written once, by write_job
        model.json        the finished model's record; a local run is done once it exists
        metrics.csv       one row per optimizer step (METRICS_COLUMNS), local and OpenAI alike
        adapter/          the LoRA adapter (local), with decoding.json
        checkpoint/       the last checkpoint of an unfinished local run
        loss.png          the loss curve the finetune flow plots
        train.log         a `pgpt serve` trainer's stderr

OpenAI's model ids hold colons; the folder name keeps letters, digits, dots and dashes.

>>> run = RunFolder.of("data", "ft:gpt-4o-mini-2024-07-18:acme:personal:abc123")
>>> run.path.as_posix(), run.model_json.name
('data/models/ft-gpt-4o-mini-2024-07-18-acme-personal-abc123', 'model.json')
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from core.errors import MissingInput
from core.io import write_atomic

MODELS = "models"
BASE = "base"
CURRENT_JSON = "current.json"
ADAPTER = "adapter"  # a local run's LoRA adapter folder
CHECKPOINT = "checkpoint"  # a local run's last checkpoint folder (checkpoint.old/ while replaced)
METRICS_COLUMNS = ("step", "epoch", "train_loss", "valid_loss", "tokens_per_s", "lr", "elapsed_s")


class MetricsRow(TypedDict, total=False):
    """One optimizer step: a row of ``metrics.csv`` (a column a backend does not know is
    left out, and written as an empty cell; read back, every column is there, None if empty).
    """

    step: float
    epoch: float | None
    train_loss: float | None
    valid_loss: float | None
    tokens_per_s: float | None
    lr: float | None
    elapsed_s: float | None


def models_dir(data_dir: str | Path) -> Path:
    """``DATA/models``: every run folder, ``current.json`` and the base models."""
    return Path(data_dir) / MODELS


def base_model_folder(data_dir: str | Path, name: str) -> Path:
    """``DATA/models/base/<name>``: where a base model is converted once."""
    return models_dir(data_dir) / BASE / name


def folder_name(model_id: str) -> str:
    """A model id as a folder name: runs of other characters become one dash.

    >>> folder_name("ft:gpt-4o-mini:acme::x1"), folder_name("smollm2-135m-personal-0a1b")
    ('ft-gpt-4o-mini-acme-x1', 'smollm2-135m-personal-0a1b')
    """
    return re.sub(r"[^A-Za-z0-9.-]+", "-", model_id).strip("-")


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What a local fine-tuning job trains on: ``job.json``, read by ``backends.local.train``.

    ``train``/``valid``/``base_dir`` are absolute paths; ``settings`` are ``FinetuneSettings``
    as JSON (missing keys take their defaults: the trainer validates them in its process).
    """

    id: str = ""  # the job's (and its model's) id; a hand-written job.json may leave it out
    train: str
    valid: str | None = None
    base_dir: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunFolder:
    """One fine-tune's folder, ``DATA/models/<model id>/``, and the files in it."""

    path: Path

    @classmethod
    def of(cls, data_dir: str | Path, model_id: str) -> RunFolder:
        """The folder of ``model_id`` under ``data_dir`` (it need not exist)."""
        return cls(models_dir(data_dir) / folder_name(model_id))

    @property
    def job_json(self) -> Path:
        return self.path / "job.json"

    @property
    def model_json(self) -> Path:
        return self.path / "model.json"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def loss_png(self) -> Path:
        return self.path / "loss.png"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    def has_job(self) -> bool:
        """Whether a job was written here."""
        return self.job_json.is_file()

    def is_done(self) -> bool:
        """Whether the model is finished (its ``model.json`` exists)."""
        return self.model_json.is_file()

    def write_job(self, spec: JobSpec) -> bool:
        """Write ``job.json`` unless there is one (a job's inputs never change); True if written."""
        if self.has_job():
            return False
        write_atomic(self.job_json, json.dumps(asdict(spec), indent=2) + "\n")
        return True

    def read_job(self) -> JobSpec:
        """The job written here."""
        return JobSpec(**json.loads(self.job_json.read_text(encoding="utf-8")))

    def write_model(self, record: dict[str, Any]) -> None:
        """Write ``model.json``, the finished model's record (atomically: it marks a run done)."""
        write_atomic(self.model_json, json.dumps(record, indent=2) + "\n")

    def read_model(self) -> dict[str, Any]:
        """The finished model's record (``{}`` while it is not finished)."""
        return json.loads(self.model_json.read_text(encoding="utf-8")) if self.is_done() else {}

    def write_metrics(self, rows: list[MetricsRow]) -> None:
        """Replace ``metrics.csv`` with a header and ``rows`` (atomically)."""
        write_atomic(self.metrics_csv, metrics_text(rows, header=True))

    def append_metrics(self, row: MetricsRow) -> None:
        """Append one row to ``metrics.csv``."""
        with self.metrics_csv.open("a", encoding="utf-8") as f:
            f.write(metrics_text([row], header=False))

    def read_metrics(self) -> list[MetricsRow]:
        """The rows of ``metrics.csv``, numbers parsed (empty cells None)."""
        with self.metrics_csv.open(newline="") as f:
            return [
                {k: float(v) if v not in ("", None) else None for k, v in row.items()}
                for row in csv.DictReader(f)
            ]


def metrics_text(rows: list[MetricsRow], header: bool) -> str:
    """``rows`` as CSV text in ``METRICS_COLUMNS`` order (None as an empty cell).

    >>> metrics_text([dict.fromkeys(METRICS_COLUMNS, 1) | {"valid_loss": None}], header=False)
    '1,1,1,,1,1,1\\n'
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRICS_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in METRICS_COLUMNS})
    return out.getvalue()


def current_model(data_dir: str | Path) -> str | None:
    """The model id ``pgpt format`` uses by default (None before any model was made current)."""
    path = models_dir(data_dir) / CURRENT_JSON
    return json.loads(path.read_text())["model_id"] if path.exists() else None


def model_to_use(data_dir: str | Path, model_id: str | None) -> str:
    """``model_id``, else the current model; :class:`MissingInput` when there is neither."""
    chosen = model_id or current_model(data_dir)
    if chosen is None:
        where = models_dir(data_dir) / CURRENT_JSON
        raise MissingInput(
            f"no fine-tuned model yet ({where}): run `pgpt finetune` or pass --model"
        )
    return chosen


def set_current_model(data_dir: str | Path, model_id: str) -> None:
    """Make ``model_id`` the current model."""
    write_atomic(models_dir(data_dir) / CURRENT_JSON, json.dumps({"model_id": model_id}) + "\n")


def file_sha256(*paths: str | Path | None) -> str:
    """SHA-256 of the files' bytes, one after the other (``None`` paths skipped): what a
    dataset is known by (a job's id, a report's ``data_sha256``)."""
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            with Path(path).open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()
