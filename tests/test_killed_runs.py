"""What a killed run leaves behind is cleaned up by the next one (issue 15): temp files of an
atomic write, and the temporary Prefect server Prefect started for a pgpt command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from config.prefect_server import OWNER_ENV, TEMPORARY_SERVER, stop_orphans
from core.io import HOST, write_atomic

ROOT = Path(__file__).resolve().parents[1]
WRITER = """
import sys, time
from core.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half of it")
    print(tmp, flush=True)
    time.sleep(120)
"""


def gone_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_a_temp_file_of_a_killed_writer_goes_with_the_next_write(tmp_path):
    target = tmp_path / "articles.parquet"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    left = Path(writer.stdout.readline().strip())
    writer.kill()
    writer.wait()
    assert left.exists() and not target.exists()
    busy = tmp_path / f".articles.parquet~{HOST}~{os.getpid()}~x.tmp"  # a live writer's
    elsewhere = tmp_path / f".articles.parquet~another-host~{gone_pid()}~y.tmp"
    busy.write_text("busy")
    elsewhere.write_text("theirs")
    write_atomic(target, "whole")
    assert target.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, busy.name, elsewhere.name]
    )


def fake_server(owner: int) -> subprocess.Popen:
    """A process that looks like a temporary Prefect server started for pgpt ``owner``."""
    env = {**os.environ, OWNER_ENV: str(owner)}
    sleeper = "import time; time.sleep(120)"
    return subprocess.Popen([sys.executable, "-c", sleeper, TEMPORARY_SERVER], env=env)


def test_a_temporary_server_whose_pgpt_was_killed_is_stopped():
    orphan, owned, foreign = fake_server(gone_pid()), fake_server(os.getpid()), None
    try:
        env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
        foreign = subprocess.Popen(  # a server someone else started: never touched
            [sys.executable, "-c", "import time; time.sleep(120)", TEMPORARY_SERVER], env=env
        )
        stopped = stop_orphans()
        assert orphan.pid in stopped and owned.pid not in stopped and foreign.pid not in stopped
        assert orphan.wait(timeout=30) != 0
        assert owned.poll() is None and foreign.poll() is None
    finally:
        for process in (orphan, owned, foreign):
            if process is not None:
                process.kill()
                process.wait()
