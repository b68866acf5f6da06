"""``/v1/fine_tuning/jobs``: requests, and the worker training one job at a time in a subprocess."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.runs import JobSpec, RunFolder
from server.api import ACTIVE, API_KEY_ENV, APIError, new_id, now
from server.files import Files, dataset_problem
from server.models import Models
from server.store import Store

if TYPE_CHECKING:
    from backends.base import Event
    from config.settings import FinetuneSettings, Settings


log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # the project: the trainer subprocess runs here
STDERR_LINES = 15  # lines of a failed trainer's stderr quoted in the job's error
KILL_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long (a trainer checkpoint is atomic)


# --- fine-tuning: requests and the worker ---------------------------------------------------


class Hyperparameters(BaseModel):
    """Supervised hyperparameters: "auto" (or absent) takes the server's finetune settings."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: int | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None


class Supervised(BaseModel):
    """``method.supervised``."""

    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    """``method``: only supervised fine-tuning."""

    model_config = ConfigDict(extra="allow")
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: Supervised | None = None


class JobRequest(BaseModel):
    """``POST /v1/fine_tuning/jobs``."""

    model_config = ConfigDict(extra="forbid")
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=2_147_483_647)
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None


def resolve_hyperparameters(body: JobRequest, finetune: FinetuneSettings) -> dict[str, Any]:
    """n_epochs, batch_size, learning_rate_multiplier with "auto" resolved to the settings'."""
    if body.method is not None and body.method.type != "supervised":
        raise APIError(
            400,
            f"Fine-tuning method '{body.method.type}' is not supported by this server "
            "(only 'supervised').",
            param="method.type",
        )
    chosen = body.hyperparameters
    nested = body.method.supervised if body.method and body.method.supervised else None
    if nested is not None and nested.hyperparameters is not None:
        if chosen is not None and chosen != nested.hyperparameters:
            raise APIError(
                400,
                "Give hyperparameters either in 'hyperparameters' or in "
                "'method.supervised.hyperparameters', not both.",
                param="hyperparameters",
            )
        chosen = nested.hyperparameters
    chosen = chosen or Hyperparameters()

    def pick(name: str, default: Any, low: float, high: float) -> Any:
        value = getattr(chosen, name)
        if value in (None, "auto"):
            return default
        if not low <= value <= high:
            raise APIError(
                400,
                f"Invalid value for '{name}': {value} (must be in [{low}, {high}]).",
                param=f"hyperparameters.{name}",
            )
        return value

    return {
        "n_epochs": pick("n_epochs", finetune.epochs, 1, 50),
        "batch_size": pick("batch_size", finetune.batch_size, 1, 256),
        "learning_rate_multiplier": pick("learning_rate_multiplier", 1.0, 1e-6, 10),
    }


def _tail(path: Path, offset: int, lines: int = STDERR_LINES) -> str:
    """The last non-empty lines of a log written after byte ``offset``."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _is_our_trainer(pid: int, run_dir: Path) -> bool:
    """Whether ``pid`` is still a trainer process of ``run_dir`` (from a server that died)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"backends.local.train" in cmdline and str(run_dir).encode() in cmdline


class Worker:
    """One thread that trains the queued jobs one at a time, each in a trainer subprocess."""

    def __init__(self, store: Store, files: Files, models: Models, settings: Settings) -> None:
        self.store, self.files, self.models = store, files, models
        self.settings = settings
        self.data_dir = Path(settings.data_dir).resolve()  # the trainer runs in ROOT
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.proc_lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.current: str | None = None
        self.thread: threading.Thread | None = None
        self.lock_fd: int | None = None

    def run_folder(self, job_id: str) -> RunFolder:
        """A job's run folder (``DATA/models/<job id>``): what ``LocalBackend.load`` reads."""
        return RunFolder.of(self.data_dir, job_id)

    # lifecycle

    def start(self) -> None:
        """Take the data dir's lock, recover what a previous server left, start the thread."""
        self._lock_data_dir()
        self.recover()
        self.thread = threading.Thread(target=self._loop, name="pgpt-fine-tuning", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop the thread; a running trainer is killed (its job resumes at the next start)."""
        self.stopping.set()
        self.wake.set()
        with self.proc_lock:
            proc = self.proc
        if proc is not None:
            _kill(proc)
        if self.thread is not None:
            self.thread.join(timeout=120)  # a first SmolLM2 conversion takes ~40 s
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # releases the flock
            self.lock_fd = None

    def _lock_data_dir(self) -> None:
        """Hold ``DATA/server/lock``: one server (one training worker) per data dir."""
        import fcntl

        path = self.data_dir / "server" / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"another personal-gpt server is already serving {self.data_dir} (it holds "
                f"{path}); stop it first, or use another --data-dir"
            ) from None
        self.lock_fd = fd

    def recover(self) -> None:
        """Requeue jobs that were running; re-check files of jobs that were being validated."""
        requeued = set()
        for job in self.store.jobs_with_status("running"):
            pid = self.store.internal(job["id"]).get("pid")
            if pid and _is_our_trainer(pid, self.run_folder(job["id"]).path):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)  # an orphan of a server that was killed
            self.store.update_job(job["id"], {"status": "queued", "estimated_finish": None})
            requeued.add(job["id"])
            self.store.add_event(
                job["id"],
                "The server restarted while this job was running: it is queued again and will "
                "resume from its last checkpoint.",
            )
        for job in self.store.jobs_with_status("queued"):
            if job["id"] not in requeued:
                self.store.add_event(job["id"], "The server restarted: the job is still queued.")
        for job in self.store.jobs_with_status("validating_files"):
            self.validate(job["id"])

    # validation (runs in a request's background task, or at start)

    def validate(self, job_id: str) -> None:
        """Check the job's files: queued (and the worker woken), or failed naming the problem."""
        job = self.store.get("jobs", job_id)
        if job is None or job["status"] != "validating_files":
            return
        for param, file_id in (
            ("training_file", job["training_file"]),
            ("validation_file", job.get("validation_file")),
        ):
            if file_id is None:
                continue
            problem = self._file_problem(param, file_id)
            if problem is not None:
                self.fail(job_id, f"invalid_{param}", problem, param, when=("validating_files",))
                return
        if self.store.update_job(job_id, {"status": "queued"}, when=("validating_files",)):
            self.store.add_event(job_id, "Files validated, moving job to queued state")
            self.wake.set()

    def _file_problem(self, param: str, file_id: str) -> str | None:
        """Why a job's file cannot be trained on, or None."""
        from core.chat_data import MIN_FINE_TUNE_EXAMPLES  # OpenAI's minimum: 10

        kind = param.replace("_", " ")
        found = self.store.get("files", file_id)
        if found is None or not self.files.path(file_id).is_file():
            return f"The job failed due to an invalid {kind}: {file_id} no longer exists."
        count, problem = dataset_problem(self.files.path(file_id), found["filename"])
        if problem is not None:
            name = found["filename"]
            return f"The job failed due to an invalid {kind} ({file_id}, {name}): {problem}."
        if param == "training_file" and count is not None and count < MIN_FINE_TUNE_EXAMPLES:
            return (
                f"The job failed due to an invalid {kind} ({file_id}): it has {count} example(s), "
                f"but must have at least {MIN_FINE_TUNE_EXAMPLES} examples."
            )
        return None

    def fail(
        self,
        job_id: str,
        code: str,
        message: str,
        param: str | None = None,
        when: tuple[str, ...] = ACTIVE,
    ) -> None:
        """Mark a job failed (if it is still in one of ``when``) with OpenAI's error object."""
        changes = {
            "status": "failed",
            "error": {"code": code, "message": message, "param": param},
            "finished_at": now(),
            "estimated_finish": None,
        }
        if self.store.update_job(job_id, changes, when=when):
            self.store.add_event(job_id, message, level="error")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel an unfinished job (kill its trainer if it runs); the job."""
        job = self.store.update_job(
            job_id, {"status": "cancelled", "finished_at": now(), "estimated_finish": None}, ACTIVE
        )
        if job is None:
            current = self.store.get("jobs", job_id)
            if current is None:
                raise job_not_found(job_id)
            raise APIError(
                400,
                f"Job {job_id} has already {current['status']}; only a job that has not ended "
                "can be cancelled.",
                param="fine_tuning_job_id",
                code="job_not_cancellable",
            )
        self.store.add_event(job_id, "The job was cancelled.")
        with self.proc_lock:
            proc = self.proc if self.current == job_id else None
        if proc is not None:
            _kill(proc)
        return job

    # training

    def _loop(self) -> None:
        """Run queued jobs, oldest first, until stopped."""
        while not self.stopping.is_set():
            queued = self.store.jobs_with_status("queued")
            if not queued:
                self.wake.wait(timeout=5)
                self.wake.clear()
                continue
            try:
                self.train(queued[0]["id"])
            except Exception as e:  # a server-side bug must not kill the worker
                log.exception("fine-tuning job %s", queued[0]["id"])
                self.fail(queued[0]["id"], "server_error", f"The server failed: {e}")

    def _write_job_json(self, job: dict[str, Any]) -> RunFolder:
        """The run folder with the job.json that ``backends.local.train`` reads (once)."""
        from backends.local.model import base_model_dir

        run = self.run_folder(job["id"])
        if not run.has_job():
            valid = job.get("validation_file")
            spec = JobSpec(
                id=job["id"],
                train=str(self.files.path(job["training_file"]).resolve()),
                valid=str(self.files.path(valid).resolve()) if valid else None,
                base_dir=str(Path(base_model_dir(self.models.base_model, self.data_dir)).resolve()),
                settings=self.store.internal(job["id"])["settings"],
            )
            run.write_job(spec)
        return run

    def train(self, job_id: str) -> None:
        """Run one job's trainer to its end (or until cancelled or the server stops)."""
        job = self.store.update_job(job_id, {"status": "running"}, when=("queued",))
        if job is None:
            return
        self.store.add_event(job_id, "Fine-tuning job started")
        run = self._write_job_json(job)
        run_dir, log_path = run.path, run.train_log
        offset = log_path.stat().st_size if log_path.exists() else 0
        env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        with self.proc_lock:
            if self.stopping.is_set() or self.store.get("jobs", job_id)["status"] != "running":
                return
            with log_path.open("ab") as stderr:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "backends.local.train", str(run_dir)],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    start_new_session=True,  # its own process group: killed as one
                )
            self.proc, self.current = proc, job_id
        self.store.update_job(job_id, {}, internal={"pid": proc.pid})
        progress = Progress(job_id, self.store.internal(job_id)["model_id"])
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                self._event(progress, raw)
            code = proc.wait()
        finally:
            with self.proc_lock:
                self.proc, self.current = None, None
            if proc.stdout is not None:
                proc.stdout.close()
        self._finish(job_id, code, run_dir, log_path, offset, progress)

    def _event(self, progress: Progress, raw: bytes) -> None:
        """Turn one trainer event line into job events, checkpoints and progress."""
        try:
            event = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("trainer of %s printed a non-event line: %r", progress.job_id, raw[:200])
            return
        for message, kind, data, level in progress.translate(event):
            self.store.add_event(progress.job_id, message, level=level, data=data, kind=kind)
        if event.get("type") == "checkpoint":
            self.store.insert("checkpoints", progress.checkpoint(event), job_id=progress.job_id)
        if event.get("type") == "step" and event.get("eta_s") is not None:
            finish = now() + round(event["eta_s"])
            self.store.update_job(progress.job_id, {"estimated_finish": finish}, when=("running",))

    def _finish(
        self, job_id: str, code: int, run_dir: Path, log_path: Path, offset: int, progress: Progress
    ) -> None:
        """Book the end of a trainer: succeeded, failed, or (stopped server) left to resume."""
        status = self.store.get("jobs", job_id)["status"]
        if status != "running":  # cancelled meanwhile: the cancel recorded it
            return
        if code == 0 and RunFolder(run_dir).is_done():
            self._succeed(job_id, run_dir, progress)
            return
        if self.stopping.is_set():
            self.store.add_event(
                job_id,
                "The server stopped during training; the job resumes from its last checkpoint "
                "when the server starts again.",
            )
            return
        tail = _tail(log_path, offset) or "(no output on stderr)"
        self.fail(job_id, "training_failed", f"Training exited with code {code}:\n{tail}")

    def _succeed(self, job_id: str, run_dir: Path, progress: Progress) -> None:
        """Record the model, the results file and the final events."""
        record = RunFolder(run_dir).read_model()
        results = []
        metrics = RunFolder(run_dir).metrics_csv
        if metrics.is_file():  # OpenAI's results file is a per-step metrics CSV too
            csv_file = self.files.add_bytes(
                metrics.read_bytes(), "step_metrics.csv", "fine-tune-results"
            )
            results.append(csv_file["id"])
        model_id = progress.model_id
        changes = {
            "status": "succeeded",
            "fine_tuned_model": model_id,
            "finished_at": now(),
            "estimated_finish": None,
            "trained_tokens": record.get("tokens_seen"),
            "result_files": results,
        }
        if self.store.update_job(job_id, changes, when=("running",)):
            self.store.add_event(job_id, f"New fine-tuned model created: {model_id}")
            self.store.add_event(job_id, "The job has successfully completed")


def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after ``KILL_GRACE_S``."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def job_not_found(job_id: str) -> APIError:
    """OpenAI's 404 for an unknown job."""
    return APIError(
        404,
        f"Could not find fine tune job: {job_id}",
        param="fine_tuning_job_id",
        code="job_not_found",
    )


@dataclass
class Progress:
    """What one trainer process has reported, and its events in OpenAI's words."""

    job_id: str
    model_id: str
    total_steps: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None

    def translate(self, event: Event) -> list[tuple[str, str, dict[str, Any] | None, str]]:
        """(message, type, data, level) of the job events a trainer event makes."""
        kind = event.get("type")
        if kind == "start":
            self.total_steps = event.get("total_steps")
            if event.get("resumed"):
                where = f"{event['step']}/{self.total_steps}"
                text = (
                    f"Resumed training from the checkpoint at step {where} (steps after it "
                    "are trained, and reported, again)"
                )
            else:
                text = (
                    f"Training started: {event.get('n_train')} examples, {self.total_steps} steps"
                    + (f", {event['n_valid']} validation examples" if event.get("n_valid") else "")
                )
            return [(text, "message", None, "info")]
        if kind == "step":
            self.total_steps = event.get("total_steps", self.total_steps)
            self.train_loss = event["loss"]
            data = {
                "step": event["step"],
                "total_steps": self.total_steps,
                "train_loss": event["loss"],
                "epoch": event.get("epoch"),
                "learning_rate": event.get("lr"),
                "tokens_per_s": event.get("tokens_per_s"),
            }
            text = f"Step {event['step']}/{self.total_steps}: training loss={event['loss']:.4f}"
            return [(text, "metrics", data, "info")]
        if kind == "valid":
            self.valid_loss = event["valid_loss"]
            data = {
                "step": event["step"],
                "total_steps": self.total_steps,
                "train_loss": self.train_loss,
                "valid_loss": event["valid_loss"],
                "full_valid_loss": event["valid_loss"],
                "epoch": event.get("epoch"),
            }
            loss = event["valid_loss"]
            text = f"Step {event['step']}/{self.total_steps}: validation loss={loss:.4f}"
            return [(text, "metrics", data, "info")]
        if kind == "checkpoint":
            return [(f"Checkpoint created at step {event['step']}", "message", None, "info")]
        if kind == "end":
            return [(f"Training finished: {event.get('steps')} steps", "message", None, "info")]
        return []

    def checkpoint(self, event: Event) -> dict[str, Any]:
        """A ``fine_tuning.job.checkpoint`` for a trainer checkpoint event."""
        step = int(event["step"])
        return {
            "id": new_id("ftckpt"),
            "object": "fine_tuning.job.checkpoint",
            "created_at": now(),
            "fine_tuning_job_id": self.job_id,
            "fine_tuned_model_checkpoint": f"{self.model_id}:ckpt-step-{step}",
            "step_number": step,
            "metrics": {"step": step, "train_loss": self.train_loss, "valid_loss": self.valid_loss},
        }
