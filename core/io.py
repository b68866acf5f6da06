"""Atomic file writes: write to a temp file beside the target, then rename over it.

A crash mid-write leaves the old file intact (rename is atomic on POSIX), so nothing
already stored is ever lost or half-written.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "b.txt"
>>> write_atomic(p, "hello")
>>> p.read_text()
'hello'
"""

from __future__ import annotations

import glob
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOST = socket.gethostname()


def _atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces ``path``, on error it is removed.
    The temp file is named for this host and process (``.NAME~HOST~PID~xxxx.tmp``), so one
    left by a killed process is removed by the next write of ``path`` (:func:`clear_stale`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(target)
    prefix = f".{target.name}~{HOST}~{os.getpid()}~"
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# applied here, not as a decorator: mutmut (`make mutate`) leaves decorated functions alone
atomic_path = contextmanager(_atomic_path)


def clear_stale(target: Path) -> list[Path]:
    """Remove (and return) the temp files of ``target`` that a process of this host left
    when it was killed mid-write: its id no longer runs. Another host's are left alone."""
    from config.runtime import running

    stale = []
    for tmp in target.parent.glob(f".{glob.escape(target.name)}~*~*~*.tmp"):
        host, pid = tmp.name[len(target.name) + 2 :].split("~")[:2]
        if host == HOST and pid.isdigit() and not running(int(pid)):
            tmp.unlink(missing_ok=True)
            stale.append(tmp)
    return stale


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write text (UTF-8, whatever the locale) or bytes to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
