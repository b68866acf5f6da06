"""The local backend: LoRA fine-tuning of a small open model on the CPU, and its inference.

A job is identified by what it depends on (the dataset's sha256, the base model and the
hyperparameters), so starting the same fine-tune twice finds the same job, and following a
job that was interrupted resumes it from its last checkpoint. Its model id doubles as the
job id and names the run folder ``DATA/models/<model id>/`` (``core.runs.RunFolder``).

>>> LocalBackend.model_id_for("smollm2-135m-instruct", "personal", "0123456789abcdef")
'smollm2-135m-instruct-personal-0123456789ab'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.base import Event, Job
from config.settings import FinetuneSettings
from core.chat_data import Message
from core.errors import MissingInput
from core.runs import JobSpec, RunFolder, models_dir

LOCAL_ID = r"[a-z0-9.-]+"  # a local model id (base name, suffix, fingerprint): its folder name


def base_model_id(base_model: str) -> str:
    """A base model's short id: its folder name, lower case (how ``pgpt serve`` lists it).

    >>> base_model_id("/models/Tiny Model0")
    'tiny-model0'
    """
    return re.sub(r"[^a-z0-9.-]+", "-", Path(base_model).name.lower()).strip("-")


class LocalBackend:
    """Fine-tune with ``backends.local.train`` and generate with ``backends.local.generate``."""

    name = "local"

    def __init__(
        self, data_dir: str | Path, finetune: FinetuneSettings, light: bool = False
    ) -> None:
        self.data_dir = Path(data_dir)
        self.settings = finetune
        self.light = light  # greedy answers only, from a quick start (backends.local.llama)
        self._loaded: dict[str, tuple[Any, Any]] = {}

    @staticmethod
    def model_id_for(base_model: str, suffix: str, fingerprint: str) -> str:
        """``<base name>-<suffix>-<12 hex>``: readable, unique per data and settings."""
        return f"{base_model_id(base_model)}-{suffix}-{fingerprint[:12]}"

    def run_folder(self, model_id: str) -> RunFolder:
        """The run folder of a model (and of the job that makes it)."""
        if not re.fullmatch(LOCAL_ID, model_id):
            raise ValueError(f"not a local model id: {model_id!r}")
        return RunFolder.of(self.data_dir, model_id)

    def start_finetune(self, train: str, valid: str | None, suffix: str = "personal") -> str:
        """Write the job (once) for this data and these settings; its id."""
        from backends.local.model import base_model_dir
        from backends.local.train import run_fingerprint
        from core.runs import file_sha256

        base_dir = base_model_dir(self.settings.base_model, self.data_dir)
        # the trainer's own fingerprint: threads or checkpoint spacing don't make a new job
        fingerprint = run_fingerprint(file_sha256(train, valid), base_dir, self.settings)
        job_id = self.model_id_for(self.settings.base_model, suffix, fingerprint)
        spec = JobSpec(
            id=job_id,
            train=str(Path(train).resolve()),
            valid=str(Path(valid).resolve()) if valid else None,
            base_dir=str(Path(base_dir).resolve()),
            settings=self.settings.model_dump(mode="json"),  # job.json: JSON on disk
        )
        self.run_folder(job_id).write_job(spec)
        return job_id

    def get_job(self, job_id: str) -> Job:
        """Succeeded once model.json exists; else queued (or resumable from a checkpoint)."""
        run = self.run_folder(job_id)
        if not run.has_job():
            raise KeyError(f"no local fine-tuning job {job_id!r} in {run.path.parent}")
        done = run.is_done()
        metrics = run.read_model()
        return Job(
            id=job_id,
            status="succeeded" if done else "queued",
            model_id=job_id if done else None,
            metrics=metrics,
        )

    def follow(self, job_id: str, on_event: Callable[[Event], None] | None = None) -> Job:
        """Train (or resume) in this process until done; the finished job."""
        from backends.local.train import train_job

        train_job(self.run_folder(job_id).path, on_event=on_event)
        return self.get_job(job_id)

    def complete(
        self,
        model_id: str,
        conversations: list[list[Message]],
        progress: Callable[[int, int], None] | None = None,
        faithful: bool = False,
    ) -> list[str]:
        """Greedy replies from the merged model (loaded once per backend object)."""
        from backends.local.generate import generate

        model, tokenizer = self.load(model_id)
        return generate(model, tokenizer, conversations, progress=progress, faithful=faithful)

    def load(self, model_id: str, keep: int | None = None) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of a model id, loaded once; ``keep``: at most that many stay.

        A fine-tuned model id (its run folder has ``model.json``) loads base + merged adapter;
        anything else is a base model name or folder (``base_model_dir``). With ``keep``, the
        least recently used other models are dropped first (a server's memory bound).
        """
        if model_id in self._loaded:
            self._loaded[model_id] = self._loaded.pop(model_id)  # now the most recent
            return self._loaded[model_id]
        if keep is not None:
            while self._loaded and len(self._loaded) >= max(1, keep):
                self._loaded.pop(next(iter(self._loaded)))  # the least recently used
        self._loaded[model_id] = self._load(model_id)
        return self._loaded[model_id]

    def _load(self, model_id: str) -> tuple[Any, Any]:
        """A fine-tuned model id, or a base model name / folder as itself."""
        from backends.local.device import pick_device
        from backends.local.generate import load_for_inference
        from backends.local.model import SMOLLM2, base_model_dir, job_base_dir

        threads, device = self.settings.threads, pick_device(self.settings.device)
        run = self.run_folder(model_id) if re.fullmatch(LOCAL_ID, model_id) else None
        if run is not None and run.is_done():
            base = job_base_dir(run.read_job(), self.data_dir)
            return load_for_inference(base, run.adapter, threads, device, self.light)
        if model_id != SMOLLM2 and not Path(model_id).expanduser().is_dir():
            where = models_dir(self.data_dir)
            raise MissingInput(
                f"model {model_id!r} in {where} has not finished training: wait, or fine-tune again"
                if run is not None and run.path.is_dir()
                else f"no model {model_id!r} in {where} and no model folder at that path: "
                "pass a model id (pgpt serve lists them) or a folder"
            )
        base = base_model_dir(model_id, self.data_dir)
        return load_for_inference(base, None, threads, device, self.light)
