"""The openai backend: fine-tune and chat through OpenAI's API, or any OpenAI-compatible URL.

It does what the seed article did by hand — upload the JSONL, create a fine-tuning job, wait,
chat with ``ft:gpt-3.5-turbo:…`` — with the safety a scheduled pipeline needs:

- **never pay twice**: a job is keyed by what it trains on (data hashes, base model,
  hyperparameters, URL). Its record, ``DATA/openai/jobs/<key>.json``, is written after each
  upload and before any waiting, so a rerun (a crash, a Prefect retry) follows the job already
  there. Even a crash between "create" and "record" is covered: the rerun finds the job by its
  training file (an uploaded file's id is unique) before it creates one.
- **a budget**: a fine-tune whose estimate (cl100k tokens x epochs x the dated price) exceeds
  ``openai.max_cost_usd`` is refused before any upload, with the estimate in the message.
- **cancellation**: interrupting ``follow`` (Ctrl-C, a cancelled Prefect flow run's SIGTERM)
  cancels the job; an ordinary error (the network) does not — the job goes on and a rerun
  follows it.
- **the key** comes from ``OPENAI_API_KEY`` (``openai.api_key_env``) or a Prefect Secret block
  (``openai.api_key_secret``) and is only ever handed to the SDK's client: it is in no task
  parameter, log, record or report.

>>> price_for("ft:gpt-4o-mini-2024-07-18:acme:personal:abc123", default_prices()).training
3.0
>>> price_for("gpt-4o-mini", default_prices()).base_input
0.15
>>> price_for("smollm2-135m-instruct", default_prices()) is None
True
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from backends.base import TERMINAL, Event, Job
from config.settings import ExportSettings, FinetuneSettings, Price
from core.chat_data import Message
from core.io import write_atomic
from core.logs import run_logger
from core.runs import METRICS_COLUMNS, MetricsRow, RunFolder, file_sha256

OPENAI_HOST = "api.openai.com"
STOP_SIGNALS: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit)


def default_prices() -> dict[str, Price]:
    """The dated price table of ``config/settings.py`` (``export.prices``)."""
    return ExportSettings().prices


def price_for(model: str, prices: dict[str, Price]) -> Price | None:
    """The price row of ``model`` (a fine-tuned ``ft:<base>:…`` id prices as its base)."""
    name = model.split(":")[1] if model.startswith("ft:") else model
    if name in prices:
        return prices[name]
    for key, price in sorted(prices.items()):  # "gpt-4o-mini" -> "gpt-4o-mini-2024-07-18"
        if key.startswith(name + "-") or name.startswith(key + "-"):
            return price
    return None


def is_openai(base_url: str | None) -> bool:
    """Whether requests go to OpenAI itself (where they cost money)."""
    url = base_url or os.environ.get("OPENAI_BASE_URL") or f"https://{OPENAI_HOST}/v1"
    return OPENAI_HOST in url


def _stop_signals() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "stop": Ctrl-C, exit, and Prefect's termination signal."""
    from prefect.exceptions import TerminationSignal

    return (*STOP_SIGNALS, TerminationSignal)


class JobRecord(TypedDict, total=False):
    """``DATA/openai/jobs/<key>.json``: one fine-tune, written as it goes (so never paid twice).

    ``key`` .. ``base_url`` before any upload, each file id after its upload, ``job_id`` on
    (the ``status`` of the last follow, the ``flow_run_id`` following it, the ``model_id``).
    """

    key: str  # :meth:`OpenAIBackend.job_key`
    model: str  # the base model
    suffix: str
    charged_tokens: int
    estimated_cost_usd: float
    base_url: str | None
    training_file: str
    validation_file: str
    job_id: str
    status: str
    created_at: int  # Unix seconds (the API's)
    flow_run_id: str
    model_id: str | None


class BudgetError(ValueError):
    """A fine-tune whose estimated cost is over ``openai.max_cost_usd``."""


class OpenAIBackend:
    """Fine-tune and chat with the ``openai`` SDK against ``openai.base_url``."""

    name = "openai"

    def __init__(
        self,
        data_dir: str | Path,
        finetune: FinetuneSettings,
        prices: dict[str, Price] | None = None,
        client: Any | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.settings = finetune
        self.openai = finetune.openai
        self.prices = prices if prices is not None else default_prices()
        self._client = client
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}  # of complete() calls
        self._usage_lock = threading.Lock()

    # --- the client ---------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The SDK client (made on first use, so a backend object costs nothing)."""
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(
                api_key=self._api_key(),
                base_url=self.openai.base_url,
                max_retries=self.openai.max_retries,
                timeout=self.openai.timeout_s,
            )
        return self._client

    def _api_key(self) -> str:
        """From the Prefect Secret block if one is named, else from the environment."""
        if self.openai.api_key_secret:
            from prefect.blocks.system import Secret

            return Secret.load(self.openai.api_key_secret).get()
        key = os.environ.get(self.openai.api_key_env)
        if key:
            return key
        if is_openai(self.openai.base_url):
            raise ValueError(
                f"no OpenAI API key: set {self.openai.api_key_env} or name a Prefect Secret "
                "block in finetune.openai.api_key_secret"
            )
        return "no-key"  # a self-hosted server without auth; the SDK insists on some key

    # --- fine-tuning ------------------------------------------------------------------

    def hyperparameters(self) -> dict[str, Any]:
        """The supervised method's hyperparameters: epochs from ``finetune.epochs``."""
        return {
            "n_epochs": self.settings.epochs,
            "batch_size": self.openai.batch_size,
            "learning_rate_multiplier": self.openai.learning_rate_multiplier,
        }

    def job_key(self, train: str, valid: str | None, suffix: str) -> str:
        """What makes two fine-tunes the same job: data, base model, settings, server."""
        blob = json.dumps(
            {
                "data": file_sha256(train, valid),
                "model": self.settings.base_model,
                "hyperparameters": self.hyperparameters(),
                "seed": self.settings.seed,
                "suffix": suffix,
                "base_url": self.openai.base_url or os.environ.get("OPENAI_BASE_URL"),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def record_path(self, key: str) -> Path:
        """Where the job with this key is recorded."""
        return self.data_dir / "openai" / "jobs" / f"{key}.json"

    def _write_record(self, record: JobRecord) -> None:
        write_atomic(self.record_path(record["key"]), json.dumps(record, indent=2) + "\n")

    def estimate_cost(self, train: str) -> dict[str, Any]:
        """Billed tokens x epochs x the training price; refuse it over ``max_cost_usd``."""
        from core.chat_data import dataset_stats, read_jsonl

        model = self.settings.base_model
        tokens = dataset_stats(read_jsonl(train), ExportSettings(), name=train)["billing_tokens"]
        charged = tokens * self.settings.epochs
        price = price_for(model, self.prices)
        if price is None and is_openai(self.openai.base_url):
            known = ", ".join(sorted(self.prices))
            raise ValueError(
                f"no training price for {model!r} in export.prices ({known}): add it to "
                "your profile so the budget check can run"
            )
        usd = charged * price.training / 1e6 if price else 0.0
        if usd > self.openai.max_cost_usd:
            raise BudgetError(
                f"fine-tuning {model} on {train} is estimated at ${usd:.2f} ({charged:,} "
                f"tokens = {tokens:,} x {self.settings.epochs} epochs), over "
                f"finetune.openai.max_cost_usd = ${self.openai.max_cost_usd:.2f}: nothing "
                "was uploaded"
            )
        return {"charged_tokens": charged, "estimated_cost_usd": usd}

    def start_finetune(self, train: str, valid: str | None, suffix: str = "personal") -> str:
        """Find this fine-tune's job, or check the budget, upload and create it; its id."""
        key = self.job_key(train, valid, suffix)
        path = self.record_path(key)
        record: JobRecord | None = json.loads(path.read_text()) if path.exists() else None
        if record and record.get("job_id"):
            run_logger(__name__).info(
                "fine-tuning job %s already exists (%s)", record["job_id"], path
            )
            return record["job_id"]
        if record is None:
            record = {"key": key, "model": self.settings.base_model, "suffix": suffix}
            record.update(self.estimate_cost(train))
            record["base_url"] = self.openai.base_url
        for field, local in (("training_file", train), ("validation_file", valid)):
            if local and not record.get(field):
                record[field] = self.upload(local)
                self._write_record(record)  # an upload is never repeated
        job = self._find_job(record["training_file"]) or self._create_job(record)
        record.update(job_id=job.id, status=job.status, created_at=job.created_at)
        self._write_record(record)
        return job.id

    def upload(self, path: str) -> str:
        """Upload a JSONL for fine-tuning and wait until it is processed; the file id."""
        with open(path, "rb") as f:
            uploaded = self.client.files.create(file=(Path(path).name, f), purpose="fine-tune")
        deadline = time.monotonic() + self.openai.timeout_s
        while uploaded.status not in ("processed", "error") and time.monotonic() < deadline:
            time.sleep(1.0)
            uploaded = self.client.files.retrieve(uploaded.id)
        if uploaded.status == "error":
            raise ValueError(f"{path} was rejected by the server: {uploaded.status_details}")
        run_logger(__name__).info("uploaded %s as %s (%s bytes)", path, uploaded.id, uploaded.bytes)
        return uploaded.id

    def _find_job(self, training_file: str) -> Any | None:
        """A job already created on this training file (the crash-before-record case)."""
        for job in self.client.fine_tuning.jobs.list(limit=100):
            if job.training_file == training_file:
                return job
        return None

    def _create_job(self, record: JobRecord) -> Any:
        """Create the fine-tuning job of ``record`` (its files uploaded)."""
        job = self.client.fine_tuning.jobs.create(
            model=record["model"],
            training_file=record["training_file"],
            validation_file=record.get("validation_file"),
            suffix=record["suffix"],
            seed=self.settings.seed,
            method={
                "type": "supervised",
                "supervised": {"hyperparameters": self.hyperparameters()},
            },
            metadata={"personal_gpt_key": record["key"]},
        )
        run_logger(__name__).info(
            "created fine-tuning job %s (%s, estimated $%.2f)",
            job.id,
            record["model"],
            record["estimated_cost_usd"],
        )
        return job

    def records(self) -> list[JobRecord]:
        """Every job record in this data dir."""
        folder = self.data_dir / "openai" / "jobs"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]

    def _record_of(self, job_id: str) -> JobRecord | None:
        return next((r for r in self.records() if r.get("job_id") == job_id), None)

    def get_job(self, job_id: str) -> Job:
        """The job's state."""
        return self._job(self.client.fine_tuning.jobs.retrieve(job_id))

    def _job(self, job: Any) -> Job:
        error = f"{job.error.code}: {job.error.message}" if job.error and job.error.code else None
        price = price_for(job.model, self.prices)
        trained = job.trained_tokens
        return Job(
            id=job.id,
            status=job.status,
            model_id=job.fine_tuned_model,
            error=error,
            metrics={
                "trained_tokens": trained,
                "cost_usd": trained * price.training / 1e6 if trained and price else 0.0,
            },
        )

    def follow(self, job_id: str, on_event: Callable[[Event], None] | None = None) -> Job:
        """Poll the job (backing off) until it ends, passing its events on; the final job.

        A stop signal while following cancels the job; any other error leaves it running.
        """
        emit = on_event or (lambda event: None)
        seen: set[str] = set()
        rows: list[MetricsRow] = []
        delay = self.openai.poll_s
        self._note_follower(job_id)
        try:
            while True:
                job = self.client.fine_tuning.jobs.retrieve(job_id)
                fresh = self._new_events(job_id, seen)
                for event in fresh:
                    for ours in translate_event(event):
                        if ours["type"] == "step" and any(r["step"] == ours["step"] for r in rows):
                            continue  # a step's loss repeated in its validation event
                        collect_metrics(ours, rows)
                        emit(ours)
                if job.status in TERMINAL:
                    break
                delay = self.openai.poll_s if fresh else min(delay * 2, self.openai.poll_max_s)
                time.sleep(delay)
        except _stop_signals():
            self.cancel(job_id, reason="the run following it was stopped")
            raise
        result = self._job(job)
        self._update_record(job_id, status=job.status, model_id=job.fine_tuned_model)
        if job.status == "succeeded":
            self._write_model_folder(result, job, rows)
        emit({"type": "end", "status": job.status, "model_id": job.fine_tuned_model})
        return result

    def cancel(self, job_id: str, reason: str) -> None:
        """Cancel the job unless it has ended already."""
        job = self.client.fine_tuning.jobs.retrieve(job_id)
        if job.status not in TERMINAL:
            self.client.fine_tuning.jobs.cancel(job_id)
            run_logger(__name__).warning("cancelled fine-tuning job %s: %s", job_id, reason)
            self._update_record(job_id, status="cancelled")

    def cancel_jobs_of_flow_run(self, flow_run_id: str) -> list[str]:
        """Cancel every unfinished job a flow run was following (its on_cancellation hook)."""
        cancelled = []
        for record in self.records():
            if record.get("flow_run_id") == flow_run_id and record.get("job_id"):
                self.cancel(record["job_id"], reason=f"flow run {flow_run_id} was cancelled")
                cancelled.append(record["job_id"])
        return cancelled

    def _note_follower(self, job_id: str) -> None:
        """Record the Prefect flow run following the job (for cancellation hooks)."""
        try:
            from prefect.runtime import flow_run

            flow_run_id = flow_run.id
        except Exception:
            flow_run_id = None
        if flow_run_id:
            self._update_record(job_id, flow_run_id=str(flow_run_id))

    def _update_record(self, job_id: str, **fields: Any) -> None:
        record = self._record_of(job_id)
        if record is not None:
            self._write_record({**record, **fields})

    def _new_events(self, job_id: str, seen: set[str]) -> list[Any]:
        """The job's events not seen yet, oldest first (the API lists newest first)."""
        fresh = []
        for event in self.client.fine_tuning.jobs.list_events(job_id, limit=100):
            if event.id in seen:
                break
            fresh.append(event)
        seen.update(e.id for e in fresh)
        return fresh[::-1]

    def _write_model_folder(self, result: Job, job: Any, rows: list[MetricsRow]) -> None:
        """``DATA/models/<folder>/``: metrics.csv (the loss curve) and model.json."""
        run = RunFolder.of(self.data_dir, job.fine_tuned_model)
        rows = [
            {c: r.get(c) for c in METRICS_COLUMNS} for r in sorted(rows, key=lambda r: r["step"])
        ]
        run.write_metrics(rows)
        train_losses = [r["train_loss"] for r in rows if r.get("train_loss") is not None]
        valid_losses = [r["valid_loss"] for r in rows if r.get("valid_loss") is not None]
        result.metrics.update(
            steps=max((r["step"] for r in rows), default=0),
            tokens_seen=job.trained_tokens,
            final_train_loss=train_losses[-1] if train_losses else None,
            final_valid_loss=valid_losses[-1] if valid_losses else None,
            wall_time_s=(job.finished_at - job.created_at) if job.finished_at else None,
        )
        record = {
            "backend": "openai",
            "job_id": job.id,
            "model_id": job.fine_tuned_model,
            "base_model": job.model,
            "base_url": self.openai.base_url,
            "training_file": job.training_file,
            "validation_file": job.validation_file,
            **result.metrics,
        }
        run.write_model(record)

    # --- chat -------------------------------------------------------------------------

    def complete(
        self,
        model_id: str,
        conversations: list[list[Message]],
        progress: Callable[[int, int], None] | None = None,
        faithful: bool = False,
    ) -> list[str]:
        """Greedy replies, ``openai.concurrency`` requests at a time, in order.

        Token usage adds up in ``self.usage`` (for the cost column). ``faithful`` reaches
        the server only with ``openai.server_extensions`` (personal-gpt's own server).
        """
        from concurrent.futures import ThreadPoolExecutor, as_completed

        from openai import omit

        from backends.local.generate import max_new_tokens_for
        from core.tokens import count_tokens

        extra = {"faithful": True} if faithful and self.openai.server_extensions else None
        priced = is_openai(self.openai.base_url)

        def reply(conversation: list[Message]) -> str:
            # OpenAI's models count in cl100k/o200k: bound a runaway answer's cost. Another
            # server's tokenizer differs (SmolLM2's: ~1.3x the tokens), so it budgets itself.
            budget = max_new_tokens_for(count_tokens(conversation[-1]["content"]))
            response = self.client.chat.completions.create(
                model=model_id,
                messages=conversation,
                temperature=0,
                seed=self.settings.seed,
                max_tokens=budget if priced else omit,
                extra_body=extra,
            )
            if response.usage is not None:
                with self._usage_lock:
                    self.usage["prompt_tokens"] += response.usage.prompt_tokens
                    self.usage["completion_tokens"] += response.usage.completion_tokens
            return response.choices[0].message.content or ""

        answers: list[str] = [""] * len(conversations)
        with ThreadPoolExecutor(max_workers=max(1, self.openai.concurrency)) as pool:
            futures = {pool.submit(reply, c): i for i, c in enumerate(conversations)}
            for done, future in enumerate(as_completed(futures), start=1):
                answers[futures[future]] = future.result().strip()
                if progress is not None:
                    progress(done, len(conversations))
        return answers

    def usage_cost(self, model_id: str) -> float:
        """USD of the chat tokens used so far with ``model_id`` (0 off OpenAI's price list)."""
        price = price_for(model_id, self.prices)
        if price is None:
            return 0.0
        fine_tuned = model_id.startswith("ft:")
        per_in = price.input if fine_tuned else (price.base_input or price.input)
        per_out = price.output if fine_tuned else (price.base_output or price.output)
        return (
            self.usage["prompt_tokens"] * per_in + self.usage["completion_tokens"] * per_out
        ) / 1e6


def translate_event(event: Any) -> list[Event]:
    """An API job event as this project's training events (``tasks.finetune.progress_line``)."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "metrics" and "step" in data:
        out: list[Event] = []
        if data.get("train_loss") is not None:
            out.append(
                {
                    "type": "step",
                    "step": data["step"],
                    "total_steps": data.get("total_steps"),
                    "loss": data["train_loss"],
                    "tokens_per_s": data.get("tokens_per_s"),
                    "eta_s": data.get("eta_s"),
                }
            )
        valid = data.get("valid_loss", data.get("full_valid_loss"))
        if valid is not None:
            out.append({"type": "valid", "step": data["step"], "valid_loss": valid})
        return out
    return [{"type": "status", "level": event.level, "message": event.message}]


def collect_metrics(event: Event, rows: list[MetricsRow]) -> None:
    """Fold step and valid events into metrics rows, one per step."""
    if event["type"] not in ("step", "valid"):
        return
    row = next((r for r in rows if r["step"] == event["step"]), None)
    if row is None:
        row = {"step": event["step"]}
        rows.append(row)
    if event["type"] == "step":
        row.update(train_loss=event["loss"], tokens_per_s=event.get("tokens_per_s"))
    else:
        row["valid_loss"] = event["valid_loss"]
