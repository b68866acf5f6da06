"""Atomic writes (core/io.py) in one process: where the temp file is, what a failure leaves,
and which left-over temp files the next write clears. (A writer really killed mid-write:
tests/test_killed_runs.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import config.runtime
from core.io import HOST, atomic_path, clear_stale, write_atomic


def gone_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_the_temp_file_is_beside_the_target_and_named_for_this_process(tmp_path):
    target = tmp_path / "deep" / "er" / "runs.parquet"  # folders made as needed
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.exists()
        assert tmp.name.startswith(f".runs.parquet~{HOST}~{os.getpid()}~")
        assert tmp.name.endswith(".tmp")
        assert not target.exists()  # nothing lands before the block ends
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["runs.parquet"]
    with atomic_path(target) as tmp:  # the folder exists now: written again
        tmp.write_bytes(b"newer")
    assert target.read_bytes() == b"newer"


def test_a_failed_write_leaves_the_old_file_byte_identical_and_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_bytes(b"old \x00 bytes")
    with pytest.raises(OSError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise OSError("disk full")
    assert target.read_bytes() == b"old \x00 bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_writer_that_removed_its_temp_file_still_raises_its_own_error(tmp_path):
    """The clean-up of a failed write never hides the error that failed it."""
    target = tmp_path / "a.txt"
    with pytest.raises(KeyError, match="its own"), atomic_path(target) as tmp:
        tmp.unlink()
        raise KeyError("its own")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_also_removes_the_temp_file(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_writes_text_as_utf8_and_bytes_as_they_are(tmp_path):
    target = tmp_path / "t" / "x.md"
    write_atomic(target, "Café — ünïcödé\n")
    assert target.read_bytes() == "Café — ünïcödé\n".encode()
    write_atomic(target, b"\xff\xfe raw")
    assert target.read_bytes() == b"\xff\xfe raw"
    assert [p.name for p in target.parent.iterdir()] == ["x.md"]


def stale_name(target_name: str, host: str, pid: int | str, tag: str = "abc") -> str:
    return f".{target_name}~{host}~{pid}~{tag}.tmp"


def test_clear_stale_removes_exactly_this_hosts_dead_writers_temp_files(tmp_path):
    target = tmp_path / "a~b.parquet"  # a name with the separator in it, and glob characters
    dead = gone_pid()
    left = tmp_path / stale_name(target.name, HOST, dead)
    alive = tmp_path / stale_name(target.name, HOST, os.getpid())
    elsewhere = tmp_path / stale_name(target.name, "another-host", dead)
    malformed = tmp_path / stale_name(target.name, HOST, "not-a-pid")
    other_file = tmp_path / stale_name("b.parquet", HOST, dead)
    for path in (left, alive, elsewhere, malformed, other_file):
        path.write_text("x")
    assert clear_stale(target) == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (alive, elsewhere, malformed, other_file)
    )
    assert clear_stale(target) == []


def test_clear_stale_with_glob_characters_in_the_name(tmp_path):
    target = tmp_path / "[ab]*.txt"
    left = tmp_path / stale_name(target.name, HOST, gone_pid())
    decoy = tmp_path / stale_name("a.txt", HOST, gone_pid())  # what "[ab]*" would match
    left.write_text("x")
    decoy.write_text("x")
    assert clear_stale(target) == [left]
    assert decoy.exists()


def test_a_stale_file_another_writer_clears_first_is_no_error(tmp_path, monkeypatch):
    """Two writers of one file both clear its stale temp files: whoever is second finds it
    gone (here: it goes while its process is looked up)."""
    target = tmp_path / "a.txt"
    left = tmp_path / stale_name(target.name, HOST, 999_999_999)

    def gone_meanwhile(pid: int) -> bool:
        left.unlink()
        return False

    left.write_text("x")
    monkeypatch.setattr(config.runtime, "running", gone_meanwhile)
    assert clear_stale(target) == [left]
    assert not left.exists()


def test_the_next_write_clears_stale_temp_files(tmp_path):
    target = tmp_path / "a.txt"
    left = tmp_path / stale_name(target.name, HOST, gone_pid())
    left.write_text("half")
    write_atomic(target, "whole")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
