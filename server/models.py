"""``/v1/models``: the base model, this server's fine-tunes and ``pgpt finetune``'s run folders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.local import LOCAL_ID, base_model_id
from core.runs import RunFolder, models_dir
from server.api import OWNER, model_not_found, now
from server.store import Store

if TYPE_CHECKING:
    from config.settings import Settings


# --- models ---------------------------------------------------------------------------------


class Models:
    """What ``model`` may name, and what ``LocalBackend.load`` loads for it."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.base_model = settings.finetune.base_model
        self.base_id = base_model_id(self.base_model)
        self.data_dir = Path(settings.data_dir)
        self.store = store
        self.started = now()

    def _base(self) -> dict[str, Any]:
        """The base model's object."""
        config = Path(self.base_model) / "config.json"
        created = int(config.stat().st_mtime) if config.is_file() else self.started
        return {"id": self.base_id, "object": "model", "created": created, "owned_by": "system"}

    def _local_runs(self) -> list[Path]:
        """Run folders of finished ``pgpt finetune`` models (not this server's jobs)."""
        root = models_dir(self.data_dir)
        if not root.is_dir():
            return []
        return sorted(
            folder
            for folder in root.iterdir()
            if re.fullmatch(LOCAL_ID, folder.name)
            and not folder.name.startswith("ftjob-")
            and RunFolder(folder).is_done()
            and RunFolder(folder).has_job()
        )

    def list(self) -> list[dict[str, Any]]:
        """Every model: the base, this server's fine-tunes (newest first), local fine-tunes."""
        models = [self._base()]
        jobs, _ = self.store.page("jobs", "status = ?", ("succeeded",), limit=1_000_000)
        models += [
            {
                "id": job["fine_tuned_model"],
                "object": "model",
                "created": job["finished_at"] or job["created_at"],
                "owned_by": OWNER,
            }
            for job in jobs
        ]
        models += [
            {
                "id": run.name,
                "object": "model",
                "created": int(RunFolder(run).model_json.stat().st_mtime),
                "owned_by": OWNER,
            }
            for run in self._local_runs()
        ]
        return models

    def get(self, model_id: str) -> dict[str, Any]:
        """One model's object; 404 model_not_found if unknown."""
        self.resolve(model_id)
        return next(m for m in self.list() if m["id"] == model_id)

    def resolve(self, model_id: str) -> str:
        """The ``LocalBackend.load`` key of a model id; 404 model_not_found if unknown."""
        if model_id == self.base_id:
            return self.base_model
        if model_id.startswith("ft:"):
            job = self.store.job_for_model(model_id)
            if job is not None and job["status"] == "succeeded":
                return job["id"]
        elif re.fullmatch(LOCAL_ID, model_id) and not model_id.startswith("ftjob-"):
            run = RunFolder.of(self.data_dir, model_id)
            if run.is_done() and run.has_job():
                return model_id
        raise model_not_found(model_id)
