"""``/v1/files``: uploaded bytes under ``DATA/server/files/``; fine-tune files checked on upload."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.io import atomic_path, write_atomic
from server.api import APIError, new_id, now
from server.store import Store

if TYPE_CHECKING:
    pass


# --- files ----------------------------------------------------------------------------------


def check_chat_jsonl(path: Path, name: str) -> int:
    """Number of chat examples in a JSONL file; DatasetError names the first bad line.

    OpenAI's checks (``core.chat_data.validate_examples``) plus the trainer's own: the last
    message of each example is the assistant's.
    """
    from core.chat_data import read_chats

    return len(read_chats(path, name))


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
