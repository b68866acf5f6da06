"""The server's state in SQLite (WAL): files, jobs, events and checkpoints, as JSON rows."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from server.api import ACTIVE, new_id, now

if TYPE_CHECKING:
    pass


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
