"""The local model behind OpenAI's REST API: chat, files and fine-tuning jobs (``pgpt serve``).

The subset of ``/v1`` that the ``openai`` Python SDK needs to fine-tune and then use a chat
model, with OpenAI's JSON shapes, status codes and error objects, so the ``openai`` backend
(or any OpenAI client) can run against this machine instead of api.openai.com:

- ``GET /v1/models[/{id}]``: the base model (``finetune.base_model``, under its short id,
  e.g. ``smollm2-135m-instruct``), this server's succeeded fine-tunes
  (``ft:<base id>:personal:<suffix>:<8 hex>``) and the fine-tunes ``pgpt finetune`` left in
  ``DATA/models/<id>/`` (under that id).
- ``POST /v1/chat/completions``: greedy at temperature 0 (or absent), sampling above it
  (``top_p``, ``seed``), ``max_tokens`` / ``max_completion_tokens`` (capped by
  ``serve.max_tokens``; absent: the local backend's own budget, 1.5 x the last message's
  tokens + 32, so answers equal ``LocalBackend.complete``'s), ``stop``, ``n`` = 1, ``stream``
  (server-sent events, token by token, ``stream_options.include_usage``), and one extension:
  ``"faithful": true`` decodes under ``backends.local.faithful`` (the answer keeps the last
  user message's words and only adds markup; callers still run ``core.faithful.repair``).
- ``/v1/files`` (upload, list, retrieve, content, delete): bytes under
  ``DATA/server/files/``; a ``fine-tune`` file is checked at upload (``processed``, or
  ``error`` with the line and the reason in ``status_details``).
- ``/v1/fine_tuning/jobs`` (create, list, retrieve, events, checkpoints, cancel): one worker
  thread trains one job at a time, each in a subprocess ``python -m backends.local.train
  DATA/models/<job id>/`` whose JSON event lines become the job's events and checkpoints.

State (files, jobs, events, checkpoints) is SQLite (WAL) in ``DATA/server/state.sqlite3``: a
restarted server lists everything again and resumes a job that was queued or running (the
trainer continues from its last checkpoint), saying so in the job's events. Models are
loaded through ``LocalBackend.load``; at most ``MAX_LOADED`` stay in memory, and one lock
serialises their use (generation is CPU-bound; it runs off the event loop).

Worked example (``pgpt serve`` runs :func:`serve`; ``--api-key`` or ``PGPT_SERVER_API_KEY``
makes every request need ``Authorization: Bearer <key>``)::

    $ python -m backends.local.server --data-dir data --port 8000 &
    $ curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' -d '{
        "model": "smollm2-135m-instruct", "max_tokens": 40, "faithful": true,
        "messages": [{"role": "system", "content": "You render plain text into markdown format."},
                     {"role": "user", "content": "Title\\nSome text"}]}'
    {"id": "chatcmpl-...", "object": "chat.completion", "choices": [{"index": 0,
     "message": {"role": "assistant", "content": "# Title\\n\\nSome text"}, ...}], ...}

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")
    f = client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=f.id)
    client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model  # once it has succeeded:
    # 'ft:smollm2-135m-instruct:personal:personal:1a2b3c4d' (served by /v1/chat/completions)

>>> first_stop("Hello\\n## Next", ["##", "\\n\\n"])
6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import BackgroundTasks, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from backends.local import JOB_JSON, MODEL_JSON, LocalBackend, base_model_id, models_dir
from core.io import atomic_path, write_atomic

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the project: the trainer subprocess runs here
OWNER = "personal"  # the "organization" in fine-tuned model ids and owned_by
ORGANIZATION_ID = "org-personal"
API_KEY_ENV = "PGPT_SERVER_API_KEY"
MAX_LOADED = 2  # models kept in memory (LRU): SmolLM2 is ~0.6 GB in fp32, base + one fine-tune
STDERR_LINES = 15  # lines of a failed trainer's stderr quoted in the job's error
KILL_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long (a trainer checkpoint is atomic)
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
ACTIVE = ("validating_files", "queued", "running")
SUFFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # no ":" (it separates a model id's parts)


def now() -> int:
    """Unix time in seconds (OpenAI's timestamps)."""
    return int(time.time())


def new_id(prefix: str, nbytes: int = 12) -> str:
    """``<prefix>-<hex>``: an object id (``file-``, ``ftjob-``, ``ftevent-``, ``ftckpt-``)."""
    return f"{prefix}-{secrets.token_hex(nbytes)}"


# --- errors ---------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered as OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type_,
        )

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code=None
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    """An APIError as a response (4xx: the SDK must not retry it)."""
    headers = {"x-should-retry": "false"} if error.status < 500 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def model_not_found(model: str) -> APIError:
    """OpenAI's 404 for an unknown model."""
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


_TYPE_NAMES = {"string": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}


def validation_error(exc: RequestValidationError) -> APIError:
    """FastAPI's validation error as OpenAI's 400, naming the first offending field."""
    errors = exc.errors()
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    if any(e.get("type") == "json_invalid" for e in errors):
        return APIError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        )
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(loc) or None
    kind = str(first.get("type", ""))
    if kind == "missing":
        return APIError(
            400, f"Missing required parameter: '{param}'.", param=param, code="missing_required"
        )
    if kind == "extra_forbidden":
        return APIError(
            400,
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    expected = next((name for key, name in _TYPE_NAMES.items() if kind.startswith(key)), None)
    if expected and ("_type" in kind or "_parsing" in kind):
        return APIError(
            400,
            f"Invalid type for '{param}': expected {expected}.",
            param=param,
            code="invalid_type",
        )
    return APIError(
        400, f"Invalid value for '{param}': {first.get('msg')}.", param=param, code="invalid_value"
    )


# --- middleware: auth and body size ---------------------------------------------------------


async def _send_error(send: Callable, error: APIError) -> None:
    """Answer a raw ASGI request with an OpenAI error."""
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-should-retry", b"false"),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> str | None:
    """A request header's value (latin-1), or None."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class BearerAuth:
    """ASGI middleware: every ``/v1`` request needs ``Authorization: Bearer <key>`` (401 else).

    The key lives only in this object's memory: it is never stored, logged or written.
    """

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = (_header(scope, b"authorization") or "").encode("latin-1")
            if not hmac.compare_digest(given, self._expected):
                message = (
                    "Incorrect API key provided."
                    if given
                    else "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
                )
                await _send_error(send, APIError(401, message, code="invalid_api_key"))
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, before it is read.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is
    counted as it arrives, and the app's answer is replaced by the 413 once it runs over.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: int | None) -> APIError:
        """The 413 error."""
        got = f"{size:,} bytes" if size is not None else f"more than {self.max_bytes:,} bytes"
        return APIError(
            413,
            f"Request body too large: {got}; this server accepts at most "
            f"{self.max_bytes:,} bytes (serve.max_body_bytes).",
            code="request_too_large",
        )

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _send_error(send, APIError(400, "Invalid Content-Length header."))
                return
            if int(declared) > self.max_bytes:
                await _send_error(send, self._too_large(int(declared)))
                return
        state = {"received": 0, "over": False, "started": False, "replaced": False}

        async def counting_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["over"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            if state["replaced"]:
                return
            if message["type"] == "http.response.start":
                if state["over"]:
                    state["replaced"] = True
                    await _send_error(send, self._too_large(None))
                    return
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not state["started"] and not state["replaced"]:
                await _send_error(send, self._too_large(None))


class BodyTooLarge(Exception):
    """Raised while reading a request body that runs over the limit."""


# --- state: SQLite --------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, purpose TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, status TEXT NOT NULL,
    model_id TEXT UNIQUE NOT NULL, body TEXT NOT NULL, internal TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, seq);
CREATE INDEX IF NOT EXISTS checkpoints_by_job ON checkpoints (job_id, seq);
"""
TABLES = ("files", "jobs", "events", "checkpoints")


class UnknownCursor(KeyError):
    """A pagination ``after`` id that is not in the list."""


class Store:
    """Files, jobs, events and checkpoints as JSON objects in SQLite (one connection + a lock).

    Each table keeps OpenAI's object as ``body`` with an insertion counter ``seq`` (the list
    order: newest first is ``seq`` descending); ``jobs.internal`` holds what the server needs
    but the API does not show (the planned model id, the training settings, the trainer's pid).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            self.db.close()

    def insert(self, table: str, body: dict[str, Any], **columns: Any) -> dict[str, Any]:
        """Add an object; return it."""
        assert table in TABLES
        names = ["id", "body", *columns]
        values = [body["id"], json.dumps(body), *columns.values()]
        marks = ", ".join("?" for _ in names)
        with self.lock:
            self.db.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", values)
        return body

    def get(self, table: str, object_id: str) -> dict[str, Any] | None:
        """The object with this id, or None."""
        assert table in TABLES
        with self.lock:
            row = self.db.execute(f"SELECT body FROM {table} WHERE id = ?", (object_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def delete(self, table: str, object_id: str) -> None:
        """Remove an object."""
        assert table in TABLES
        with self.lock:
            self.db.execute(f"DELETE FROM {table} WHERE id = ?", (object_id,))

    def page(
        self,
        table: str,
        where: str = "1",
        args: tuple = (),
        after: str | None = None,
        limit: int = 20,
        newest_first: bool = True,
    ) -> tuple[list[dict[str, Any]], bool]:
        """(up to ``limit`` objects after the ``after`` id in list order, whether more follow)."""
        assert table in TABLES
        with self.lock:
            if after is not None:
                row = self.db.execute(f"SELECT seq FROM {table} WHERE id = ?", (after,)).fetchone()
                if row is None:
                    raise UnknownCursor(after)
                where += f" AND seq {'<' if newest_first else '>'} ?"
                args = (*args, row[0])
            order = "DESC" if newest_first else "ASC"
            rows = self.db.execute(
                f"SELECT body FROM {table} WHERE {where} ORDER BY seq {order} LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        return [json.loads(r[0]) for r in rows[:limit]], len(rows) > limit

    def put_job(self, job: dict[str, Any], internal: dict[str, Any]) -> dict[str, Any]:
        """Add a job with its internal record."""
        return self.insert(
            "jobs",
            job,
            status=job["status"],
            model_id=internal["model_id"],
            internal=json.dumps(internal),
        )

    def internal(self, job_id: str) -> dict[str, Any]:
        """A job's internal record."""
        with self.lock:
            row = self.db.execute("SELECT internal FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else {}

    def update_job(
        self,
        job_id: str,
        changes: dict[str, Any],
        when: tuple[str, ...] | None = None,
        internal: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Merge ``changes`` into the job if its status is in ``when`` (None: any); it, or None."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                row = self.db.execute(
                    "SELECT body, internal FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()
                if row is None:
                    self.db.execute("ROLLBACK")
                    return None
                job, extra = json.loads(row[0]), json.loads(row[1])
                if when is not None and job["status"] not in when:
                    self.db.execute("ROLLBACK")
                    return None
                job.update(changes)
                extra.update(internal or {})
                self.db.execute(
                    "UPDATE jobs SET body = ?, status = ?, internal = ? WHERE id = ?",
                    (json.dumps(job), job["status"], json.dumps(extra), job_id),
                )
                self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise
        return job

    def jobs_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Jobs in these states, oldest first."""
        marks = ", ".join("?" for _ in statuses)
        with self.lock:
            rows = self.db.execute(
                f"SELECT body FROM jobs WHERE status IN ({marks}) ORDER BY seq", statuses
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def job_for_model(self, model_id: str) -> dict[str, Any] | None:
        """The job whose (planned) fine-tuned model id this is."""
        with self.lock:
            row = self.db.execute(
                "SELECT body FROM jobs WHERE model_id = ?", (model_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def jobs_using_file(self, file_id: str) -> list[str]:
        """Ids of unfinished jobs that train or validate on this file."""
        return [
            job["id"]
            for job in self.jobs_with_status(*ACTIVE)
            if file_id in (job["training_file"], job.get("validation_file"))
        ]

    def add_event(
        self,
        job_id: str,
        message: str,
        level: str = "info",
        data: dict[str, Any] | None = None,
        kind: Literal["message", "metrics"] = "message",
    ) -> dict[str, Any]:
        """Record a ``fine_tuning.job.event``."""
        event = {
            "id": new_id("ftevent"),
            "object": "fine_tuning.job.event",
            "created_at": now(),
            "level": level,
            "message": message,
            "data": data or {},
            "type": kind,
        }
        return self.insert("events", event, job_id=job_id)


# --- files ----------------------------------------------------------------------------------


def check_chat_jsonl(path: Path, name: str) -> int:
    """Number of chat examples in a JSONL file; DatasetError names the first bad line.

    OpenAI's checks (``core.chat_data.validate_examples``) plus the trainer's own: the last
    message of each example is the assistant's.
    """
    from core.chat_data import DatasetError, read_jsonl, validate_examples

    examples = read_jsonl(path)
    numbers = [
        number
        for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1)
        if raw.decode("utf-8").strip()
    ]
    validate_examples(examples, name, numbers)
    for example, number in zip(examples, numbers, strict=True):
        if example["messages"][-1].get("role") != "assistant":
            raise DatasetError(name, number, "the last message is not the assistant's")
    return len(examples)


def dataset_problem(path: Path, name: str) -> tuple[int | None, str | None]:
    """(examples, None) for a good chat JSONL file, or (None, "line N: reason")."""
    from core.chat_data import DatasetError

    try:
        return check_chat_jsonl(path, name), None
    except DatasetError as e:
        where = f"line {e.line}: " if e.line is not None else ""
        return None, f"{where}{e.reason}"
    except UnicodeDecodeError as e:  # read_jsonl names the line; this is a belt for braces
        return None, f"not UTF-8 ({e.reason})"


class Files:
    """Uploaded files: bytes in ``DATA/server/files/<id>``, objects in the store."""

    def __init__(self, store: Store, folder: Path) -> None:
        self.store = store
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        """Where a file's bytes are."""
        return self.folder / file_id

    def get(self, file_id: str) -> dict[str, Any]:
        """The file object; 404 if unknown."""
        found = self.store.get("files", file_id)
        if found is None:
            raise APIError(
                404, f"No such File object: {file_id}", param="id", code="file_not_found"
            )
        return found

    def add(self, source: Any, filename: str, purpose: str) -> dict[str, Any]:
        """Store the bytes of a binary stream atomically, check a fine-tune file; the object."""
        file_id = new_id("file")
        with atomic_path(self.path(file_id)) as tmp, tmp.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        return self._record(file_id, filename, purpose)

    def add_bytes(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """Store bytes the server made itself (a job's results); the object."""
        file_id = new_id("file")
        write_atomic(self.path(file_id), data)
        return self._record(file_id, filename, purpose)

    def _record(self, file_id: str, filename: str, purpose: str) -> dict[str, Any]:
        """Insert the object of stored bytes (checked when it is fine-tuning data)."""
        status, details = "processed", None
        if purpose == "fine-tune":
            _, problem = dataset_problem(self.path(file_id), filename)
            if problem is not None:
                status, details = "error", f"Invalid file format: {problem}"
        body = {
            "id": file_id,
            "object": "file",
            "bytes": self.path(file_id).stat().st_size,
            "created_at": now(),
            "filename": filename,
            "purpose": purpose,
            "status": status,
            "status_details": details,
            "expires_at": None,
        }
        return self.store.insert("files", body, purpose=purpose)

    def delete(self, file_id: str) -> dict[str, Any]:
        """Remove a file (not while an unfinished job uses it)."""
        self.get(file_id)
        users = self.store.jobs_using_file(file_id)
        if users:
            raise APIError(
                400,
                f"File {file_id} is used by the unfinished fine-tuning job {users[0]}; cancel "
                "it or wait for it to end first.",
                param="id",
                code="file_in_use",
            )
        self.store.delete("files", file_id)
        self.path(file_id).unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}


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
            run
            for run in root.iterdir()
            if re.fullmatch(r"[a-z0-9.-]+", run.name)
            and not run.name.startswith("ftjob-")
            and (run / MODEL_JSON).is_file()
            and (run / JOB_JSON).is_file()
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
                "created": int((run / MODEL_JSON).stat().st_mtime),
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
        elif re.fullmatch(r"[a-z0-9.-]+", model_id) and not model_id.startswith("ftjob-"):
            run = models_dir(self.data_dir) / model_id
            if (run / MODEL_JSON).is_file() and (run / JOB_JSON).is_file():
                return model_id
        raise model_not_found(model_id)


# --- chat -----------------------------------------------------------------------------------


def first_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text``, or None."""
    found = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return min(found) if found else None


def safe_end(text: str, stops: list[str], cautious: bool) -> int:
    """How much of ``text`` (decoded so far) can be sent: what later tokens cannot change.

    Held back: trailing whitespace (the answer is stripped at the end), a half UTF-8
    character, the start of a possible stop string, and, for tokenizers that clean up spaces
    on decoding (``" 's"`` -> ``"'s"``), the text after the second-last space.
    """
    end = len(text.rstrip())
    while end and text[end - 1] == "\ufffd":
        end -= 1
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                end = min(end, len(text) - k)
                break
    if cautious:
        spaces = [i for i, char in enumerate(text[:end]) if char.isspace()]
        end = spaces[-2] if len(spaces) >= 2 else 0
    return max(end, 0)


class DeltaStreamer:
    """A transformers streamer: sends answer text as soon as it is final, stops at a stop string.

    ``generate`` calls ``put`` with the prompt, then with each new token, and ``end``.
    """

    def __init__(
        self, tokenizer: Any, stops: list[str], on_delta: Callable[[str], None] | None
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.on_delta = on_delta
        self.ids: list[int] = []
        self.sent = ""  # the answer text sent so far: always a prefix of the final answer
        self.stopped = False  # a stop string turned up: generation may end
        self.cautious = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self._prompt = True

    def text(self) -> str:
        """The answer decoded so far (leading whitespace dropped, as the final answer's)."""
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()

    def put(self, value: Any) -> None:
        """Take the next token(s) (the first call is the prompt, skipped)."""
        if self._prompt:
            self._prompt = False
            return
        if self.stopped:
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.text()
        cut = first_stop(text.rstrip("\ufffd"), self.stops)  # not in a half character
        if cut is not None:
            self.stopped = True
            self.send(text[:cut])
        else:
            self.send(text[: safe_end(text, self.stops, self.cautious)])

    def end(self) -> None:
        """Generation is over (the final text is sent by the caller)."""

    def send(self, upto: str) -> None:
        """Send what ``upto`` (the answer so far) adds to what was sent."""
        if len(upto) > len(self.sent) and upto.startswith(self.sent):
            delta, self.sent = upto[len(self.sent) :], upto
            if self.on_delta is not None:
                self.on_delta(delta)
        elif not upto.startswith(self.sent):
            log.warning("streamed text is not a prefix of the answer: %r", self.sent[-40:])


@dataclass
class Prepared:
    """A chat request ready to generate: the model, the conversation and its token budget."""

    model: Any
    tokenizer: Any
    conversation: list[dict[str, str]]
    prompt_tokens: int
    cap: int  # most new tokens: serve.max_tokens, and what the context has left


@dataclass
class Decoding:
    """How to decode (from the request)."""

    max_tokens: int | None = None  # None: the local backend's budget from the input
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    faithful: bool = False


@dataclass
class Completion:
    """One answer."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class Engine:
    """Loaded models (LRU, ``LocalBackend.load``) and the lock that serialises their use."""

    def __init__(self, backend: LocalBackend, max_tokens: int, keep: int = MAX_LOADED) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.keep = keep
        self.lock = threading.Lock()

    def prepare(self, key: str, conversation: list[dict[str, str]]) -> Prepared:
        """Load the model, count the prompt's tokens; 400 if the context cannot hold it."""
        with self.lock:  # a fast tokenizer must not be used by two threads at once either
            model, tokenizer = self.backend.load(key, keep=self.keep)
            prompt = tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
            prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        context = getattr(model.config, "max_position_embeddings", None) or 1_000_000
        if prompt_tokens >= context:
            raise APIError(
                400,
                f"This model's maximum context length is {context} tokens. However, your "
                f"messages resulted in {prompt_tokens} tokens.",
                param="messages",
                code="context_length_exceeded",
            )
        cap = min(self.max_tokens, context - prompt_tokens)
        return Prepared(model, tokenizer, conversation, prompt_tokens, cap)

    def complete(
        self,
        job: Prepared,
        decoding: Decoding,
        on_delta: Callable[[str], None] | None = None,
        abort: threading.Event | None = None,
    ) -> Completion:
        """Generate one answer (sending its text through ``on_delta`` as it comes)."""
        from backends.local.generate import generate

        streamer = DeltaStreamer(job.tokenizer, decoding.stop, on_delta)
        details: list[dict[str, Any]] = []
        with self.lock:
            [answer] = generate(
                job.model,
                job.tokenizer,
                [job.conversation],
                max_new_tokens=decoding.max_tokens,
                max_new_tokens_cap=job.cap,
                faithful=decoding.faithful,
                temperature=decoding.temperature,
                top_p=decoding.top_p,
                seed=decoding.seed,
                streamer=streamer,
                should_stop=lambda: streamer.stopped or (abort is not None and abort.is_set()),
                details=details,
            )
            raw = job.tokenizer.decode(streamer.ids, skip_special_tokens=True).lstrip()
        [info] = details
        cut = first_stop(raw, decoding.stop)
        if cut is not None:
            text, reason = raw[:cut], "stop"
        else:
            text, reason = answer, "stop" if info["finish_reason"] != "length" else "length"
        streamer.send(text)
        return Completion(text, reason, info["prompt_tokens"], info["completion_tokens"])


class ContentPart(BaseModel):
    """A part of a message's content: only text is understood."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """A chat message (extra keys such as ``tool_calls`` are ignored)."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    """``stream_options``."""

    model_config = ConfigDict(extra="ignore")
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``: what this server does, ignores, or refuses (400)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)  # torch.manual_seed's range
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    faithful: bool | None = None  # personal-gpt's extension: constrained decoding
    # accepted and ignored: bookkeeping that does not change the answer
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[str] | None = None
    # accepted only at their neutral values (refused with a 400 otherwise)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: str | None = None
    verbosity: str | None = None


def _unsupported(body: ChatRequest) -> APIError | None:
    """A 400 for a request this server cannot honour, or None."""
    if (body.n or 1) > 1:
        return APIError(400, "n > 1 is not supported by this server; send n = 1.", param="n")
    neutral = {
        "frequency_penalty": body.frequency_penalty in (None, 0),
        "presence_penalty": body.presence_penalty in (None, 0),
        "logprobs": not body.logprobs,
        "top_logprobs": body.top_logprobs in (None, 0),
        "logit_bias": not body.logit_bias,
        "tools": not body.tools,
        "tool_choice": body.tool_choice in (None, "none"),
        "functions": not body.functions,
        "function_call": body.function_call in (None, "none"),
        "response_format": (body.response_format or {"type": "text"}).get("type") == "text",
        "audio": body.audio is None,
        "prediction": body.prediction is None,
        "web_search_options": body.web_search_options is None,
        "modalities": body.modalities in (None, ["text"]),
        "reasoning_effort": body.reasoning_effort is None,
    }
    for param, ok in neutral.items():
        if not ok:
            return APIError(
                400, f"'{param}' is not supported by this server.", param=param, code="unsupported"
            )
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    if len(stops) > 4:
        return APIError(400, "'stop' takes at most 4 sequences.", param="stop")
    return None


def _conversation(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """The messages as the chat template takes them (developer -> system, text parts joined)."""
    out = []
    for i, message in enumerate(messages):
        if message.role in ("tool", "function"):
            raise APIError(
                400,
                f"messages[{i}]: role '{message.role}' is not supported by this server.",
                param=f"messages.[{i}].role",
            )
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" or part.text is None for part in content):
                raise APIError(
                    400,
                    f"messages[{i}]: only text content parts are supported by this server.",
                    param=f"messages.[{i}].content",
                )
            content = "\n".join(part.text or "" for part in content)
        role = "system" if message.role == "developer" else message.role
        out.append({"role": role, "content": content or ""})
    return out


def _decoding(body: ChatRequest, conversation: list[dict[str, str]]) -> Decoding:
    """The request's decoding settings (temperature 0 or top_p 0: greedy)."""
    temperature = body.temperature or 0.0
    top_p = 1.0 if body.top_p is None else body.top_p
    if top_p == 0:
        temperature = 0.0
    if body.faithful and conversation[-1]["role"] != "user":
        raise APIError(
            400,
            "'faithful' keeps the last user message's words: the last message must be the user's.",
            param="faithful",
        )
    return Decoding(
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=temperature,
        top_p=top_p if temperature > 0 else 1.0,
        seed=body.seed,
        stop=[body.stop] if isinstance(body.stop, str) else list(body.stop or []),
        faithful=bool(body.faithful),
    )


def _usage(done: Completion) -> dict[str, int]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _sse(data: dict[str, Any] | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


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


def resolve_hyperparameters(body: JobRequest, finetune: dict[str, Any]) -> dict[str, Any]:
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
        "n_epochs": pick("n_epochs", finetune["epochs"], 1, 50),
        "batch_size": pick("batch_size", finetune["batch_size"], 1, 256),
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

    def run_dir(self, job_id: str) -> Path:
        """A job's run folder (``DATA/models/<job id>``): what ``LocalBackend.load`` reads."""
        return models_dir(self.data_dir) / job_id

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
            if pid and _is_our_trainer(pid, self.run_dir(job["id"])):
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

    def _write_job_json(self, job: dict[str, Any]) -> Path:
        """The run folder with the job.json that ``backends.local.train`` reads (once)."""
        from backends.local.model import base_model_dir

        run_dir = self.run_dir(job["id"])
        if not (run_dir / JOB_JSON).is_file():
            settings = self.store.internal(job["id"])["settings"]
            valid = job.get("validation_file")
            spec = {
                "id": job["id"],
                "train": str(self.files.path(job["training_file"]).resolve()),
                "valid": str(self.files.path(valid).resolve()) if valid else None,
                "base_dir": str(
                    Path(base_model_dir(self.models.base_model, self.data_dir)).resolve()
                ),
                "settings": settings,
            }
            write_atomic(run_dir / JOB_JSON, json.dumps(spec, indent=2) + "\n")
        return run_dir

    def train(self, job_id: str) -> None:
        """Run one job's trainer to its end (or until cancelled or the server stops)."""
        job = self.store.update_job(job_id, {"status": "running"}, when=("queued",))
        if job is None:
            return
        self.store.add_event(job_id, "Fine-tuning job started")
        run_dir = self._write_job_json(job)
        log_path = run_dir / "train.log"
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
        if code == 0 and (run_dir / MODEL_JSON).is_file():
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
        record = json.loads((run_dir / MODEL_JSON).read_text(encoding="utf-8"))
        results = []
        metrics = run_dir / "metrics.csv"
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

    def translate(self, event: dict[str, Any]) -> list[tuple[str, str, dict | None, str]]:
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

    def checkpoint(self, event: dict[str, Any]) -> dict[str, Any]:
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


# --- the app --------------------------------------------------------------------------------


@dataclass
class ServerState:
    """Everything one app works with."""

    settings: Settings
    store: Store
    files: Files
    models: Models
    engine: Engine
    worker: Worker
    closed: bool = False

    def close(self) -> None:
        """Stop the worker and close the store (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.worker.stop()
        self.store.close()


def _list(data: list[dict[str, Any]], has_more: bool | None = None) -> dict[str, Any]:
    """OpenAI's list object (``has_more`` for cursor pages)."""
    body: dict[str, Any] = {"object": "list", "data": data}
    if has_more is not None:
        body.update(
            has_more=has_more,
            first_id=data[0]["id"] if data else None,
            last_id=data[-1]["id"] if data else None,
        )
    return body


def _page(store: Store, table: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A cursor page as a list object; 400 for an ``after`` that is not in the list."""
    try:
        items, more = store.page(table, *args, **kwargs)
    except UnknownCursor as e:
        raise APIError(400, f"No such object for 'after': {e.args[0]}", param="after") from None
    return _list(items, more)


def create_app(settings: Settings, api_key: str | None = None) -> FastAPI:
    """The OpenAI-compatible app over ``settings.data_dir`` (``api_key``: the bearer it needs)."""
    data_dir = Path(settings.data_dir)
    store = Store(data_dir / "server" / "state.sqlite3")
    files = Files(store, data_dir / "server" / "files")
    models = Models(settings, store)
    finetune = settings.finetune.model_dump(mode="json")
    engine = Engine(LocalBackend(data_dir, finetune), settings.serve.max_tokens)
    state = ServerState(
        settings, store, files, models, engine, Worker(store, files, models, settings)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state.worker.start()
        except Exception as e:
            app.state.startup_error = str(e)
            raise
        try:
            yield
        finally:
            await asyncio.to_thread(state.close)

    app = FastAPI(
        title="personal-gpt",
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",  # behind the bearer check like the rest of /v1
        lifespan=lifespan,
    )
    app.state.pgpt = state
    app.add_middleware(BodyLimit, max_bytes=settings.serve.max_body_bytes)
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)  # added last: runs first
    _add_error_handlers(app)
    _add_model_routes(app, state)
    _add_chat_routes(app, state)
    _add_file_routes(app, state)
    _add_job_routes(app, state, finetune)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's error object; bad input is never a 500."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            message = f"Invalid URL ({request.method} {request.url.path})"
        else:
            message = str(exc.detail)
        return error_response(APIError(exc.status_code, message, code=None))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(f"The server had an error processing your request: {exc}", "server_error"),
            status_code=500,
        )


def _add_model_routes(app: FastAPI, state: ServerState) -> None:
    """``/v1/models``."""

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return _list(state.models.list())

    @app.get("/v1/models/{model_id}")
    def retrieve_model(model_id: str) -> dict[str, Any]:
        return state.models.get(model_id)


def _add_chat_routes(app: FastAPI, state: ServerState) -> None:
    """``/v1/chat/completions``."""

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> JSONResponse | StreamingResponse:
        refused = _unsupported(body)
        if refused is not None:
            raise refused
        key = await asyncio.to_thread(state.models.resolve, body.model)
        conversation = _conversation(body.messages)
        decoding = _decoding(body, conversation)
        prepared = await asyncio.to_thread(state.engine.prepare, key, conversation)
        completion_id, created = f"chatcmpl-{secrets.token_hex(12)}", now()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _stream(
                state.engine, prepared, decoding, body.model, completion_id, created, include_usage
            )
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        done = await asyncio.to_thread(state.engine.complete, prepared, decoding)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": done.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": done.finish_reason,
                    }
                ],
                "usage": _usage(done),
                "system_fingerprint": None,
            }
        )


async def _stream(
    engine: Engine,
    prepared: Prepared,
    decoding: Decoding,
    model: str,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The chat completion as ``chat.completion.chunk`` events, token by token, then [DONE]."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    abort = threading.Event()

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return _sse(body)

    def on_delta(text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, text)

    task = asyncio.ensure_future(
        asyncio.to_thread(engine.complete, prepared, decoding, on_delta, abort)
    )
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        while (text := await queue.get()) is not None:
            yield chunk({"content": text})
        try:
            done = task.result()
        except Exception as e:
            log.exception("streaming chat completion %s", completion_id)
            yield _sse(error_body(f"The server had an error while generating: {e}", "server_error"))
            return
        yield chunk({}, done.finish_reason)
        if include_usage:
            yield _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": _usage(done),
                }
            )
        yield _sse("[DONE]")
    finally:
        abort.set()  # a client that went away stops the generation at its next token


def _add_file_routes(app: FastAPI, state: ServerState) -> None:
    """``/v1/files``."""

    @app.post("/v1/files")
    def upload(
        file: UploadFile = File(...),  # noqa: B008 (FastAPI's idiom)
        purpose: str = Form(...),
    ) -> dict[str, Any]:
        if purpose not in FILE_PURPOSES:
            raise APIError(
                400,
                f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'",
                param="purpose",
                code="invalid_value",
            )
        filename = Path(file.filename or "upload").name or "upload"
        return state.files.add(file.file, filename, purpose)

    @app.get("/v1/files")
    def list_files(
        after: str | None = None,
        limit: int = Query(10_000, ge=1, le=10_000),
        order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ) -> dict[str, Any]:
        where, args = ("purpose = ?", (purpose,)) if purpose else ("1", ())
        return _page(state.store, "files", where, args, after, limit, order == "desc")

    @app.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str) -> dict[str, Any]:
        return state.files.get(file_id)

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str) -> FileResponse:
        found = state.files.get(file_id)
        if not state.files.path(file_id).is_file():
            raise APIError(
                404, f"The bytes of {file_id} are gone.", param="id", code="file_not_found"
            )
        return FileResponse(
            state.files.path(file_id),
            media_type="application/octet-stream",
            filename=found["filename"],
        )

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str) -> dict[str, Any]:
        return state.files.delete(file_id)


def _add_job_routes(app: FastAPI, state: ServerState, finetune: dict[str, Any]) -> None:
    """``/v1/fine_tuning/jobs``."""
    store, worker = state.store, state.worker

    def get_job(job_id: str) -> dict[str, Any]:
        job = store.get("jobs", job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    @app.post("/v1/fine_tuning/jobs")
    def create_job(body: JobRequest, background: BackgroundTasks) -> dict[str, Any]:
        job, internal = _new_job(state, body, finetune)
        store.put_job(job, internal)
        store.add_event(job["id"], f"Created fine-tuning job: {job['id']}")
        store.add_event(job["id"], f"Validating training file: {job['training_file']}")
        background.add_task(worker.validate, job["id"])
        return job

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs(
        request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=10_000)
    ) -> dict[str, Any]:
        where, args = "1", ()
        for key, value in request.query_params.multi_items():
            if key == "metadata" and value == "null":
                where += " AND json_extract(body, '$.metadata') IS NULL"
            elif key.startswith("metadata[") and key.endswith("]"):
                name = key[len("metadata[") : -1].replace('"', '\\"')
                where += " AND json_extract(body, ?) = ?"
                args = (*args, f'$.metadata."{name}"', value)
        return _page(store, "jobs", where, args, after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    def retrieve_job(job_id: str) -> dict[str, Any]:
        return get_job(job_id)

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return worker.cancel(job_id)

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    def list_events(
        job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=10_000)
    ) -> dict[str, Any]:
        get_job(job_id)
        return _page(store, "events", "job_id = ?", (job_id,), after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def list_checkpoints(
        job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=10_000)
    ) -> dict[str, Any]:
        get_job(job_id)
        return _page(store, "checkpoints", "job_id = ?", (job_id,), after, limit)


def _new_job(
    state: ServerState, body: JobRequest, finetune: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job object and its internal record for a create request (4xx if it cannot be run)."""
    models = state.models
    if body.model != models.base_id:
        models.resolve(body.model)  # 404 model_not_found if it is no model at all
        raise APIError(
            400,
            f"Model {body.model} is not available for fine-tuning on this server: only the "
            f"base model {models.base_id} is.",
            param="model",
            code="model_not_available",
        )
    for param, file_id in (
        ("training_file", body.training_file),
        ("validation_file", body.validation_file),
    ):
        if file_id is None:
            continue
        found = state.store.get("files", file_id)
        if found is None:
            raise APIError(400, f"invalid {param}: {file_id}", param=param, code="file_not_found")
        if found["purpose"] != "fine-tune":
            raise APIError(
                400,
                f"File {file_id} has purpose '{found['purpose']}', not 'fine-tune'.",
                param=param,
                code="invalid_file_purpose",
            )
    if body.suffix is not None and not SUFFIX.fullmatch(body.suffix):
        raise APIError(
            400, "'suffix' must be 1-64 letters, digits, '.', '_' or '-'.", param="suffix"
        )
    if body.integrations:
        raise APIError(400, "Integrations are not supported by this server.", param="integrations")
    if body.metadata is not None and (
        len(body.metadata) > 16
        or any(len(k) > 64 or len(v) > 512 for k, v in body.metadata.items())
    ):
        raise APIError(
            400,
            "'metadata': at most 16 pairs, keys <= 64 and values <= 512 characters.",
            param="metadata",
        )
    hyper = resolve_hyperparameters(body, finetune)
    seed = finetune["seed"] if body.seed is None else body.seed
    job_id = new_id("ftjob")
    model_id = (
        f"ft:{models.base_id}:{OWNER}:{body.suffix or OWNER}:{job_id.removeprefix('ftjob-')[:8]}"
    )
    settings = {
        **finetune,
        "epochs": hyper["n_epochs"],
        "batch_size": hyper["batch_size"],
        "learning_rate": finetune["learning_rate"] * hyper["learning_rate_multiplier"],
        "seed": seed,
    }
    job = {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": now(),
        "model": models.base_id,
        "fine_tuned_model": None,
        "organization_id": ORGANIZATION_ID,
        "result_files": [],
        "status": "validating_files",
        "training_file": body.training_file,
        "validation_file": body.validation_file,
        "hyperparameters": hyper,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "trained_tokens": None,
        "error": None,
        "finished_at": None,
        "estimated_finish": None,
        "seed": seed,
        "metadata": body.metadata,
        "integrations": [],
        "user_provided_suffix": body.suffix,
    }
    return job, {"model_id": model_id, "settings": settings}


# --- running it -----------------------------------------------------------------------------


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread; yield its base URL ``http://host:port/v1``.

    On exit uvicorn shuts down (the app's lifespan stops its training worker; a running
    job is left to resume on the next start).
    """
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)

    def run() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits 3 when the startup fails
            server.run()

    thread = threading.Thread(target=run, name="pgpt-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=10)
            why = getattr(app.state, "startup_error", None) or "see the log"
            raise RuntimeError(f"the server did not start on {host}:{port}: {why}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        state = getattr(app.state, "pgpt", None)
        if state is not None:
            state.close()


def serve(
    settings: Settings, host: str | None = None, port: int | None = None, api_key: str | None = None
) -> None:
    """Serve until interrupted (``pgpt serve``); host and port default to ``settings.serve``."""
    import uvicorn

    host = host or settings.serve.host
    port = settings.serve.port if port is None else port
    app = create_app(settings, api_key=api_key)
    log.info("personal-gpt serving on http://%s:%d/v1", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def main(argv: list[str] | None = None) -> int:
    """``python -m backends.local.server [--data-dir D] [--profile P] [--host H] [--port N]
    [--api-key K]`` (the key defaults to ``$PGPT_SERVER_API_KEY``)."""
    from config.settings import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m backends.local.server",
        description="Serve the local model behind OpenAI's API (chat, files, fine-tuning).",
    )
    parser.add_argument("--data-dir", help="data directory (default: PGPT_DATA_DIR or ./data)")
    parser.add_argument("--profile", help="settings profile name or .yaml path")
    parser.add_argument("--host", help="address to listen on (default: serve.host, loopback)")
    parser.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    parser.add_argument(
        "--api-key", help=f"require this bearer token (default: ${API_KEY_ENV}; none: open)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings(args.profile, args.data_dir)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    serve(settings, args.host, args.port, api_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
