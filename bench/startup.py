"""CLI start-up: the wall time of ``pgpt --help`` and of ``pgpt ingest`` of one small post.

    .venv/bin/python bench/startup.py              # 3 timed runs of each, medians
    .venv/bin/python bench/startup.py --runs 1     # quicker

``pgpt ingest`` runs on the smallest post of ``data/sample/posts/``, each time into a fresh
temporary data dir, as a user runs it (the console script, in a subprocess, with none of the
caller's ``PREFECT_*`` variables and a temporary ``PREFECT_HOME``), in two ways:

- **temporary**: no Prefect server running (``PGPT_REUSE_PREFECT_SERVER=0``, so a server of
  yours on port 4200 is not used): Prefect starts its temporary server for the command. The
  first run, on an empty ``PREFECT_HOME``, also creates Prefect's database; it is printed
  alone (``first_temporary_s``), the others make ``startup_temporary_s``;
- **reused**: with ``prefect server start`` running on a free loopback port (started here,
  stopped at the end), which ``pgpt`` finds (``PREFECT_SERVER_API_PORT``) and uses.

Each figure comes with the 1-minute load average before and after it: on a 2-core machine
that others use, a load above 2 makes every figure longer.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PGPT = Path(sys.executable).parent / "pgpt"
POST = min((ROOT / "data" / "sample" / "posts").glob("*.html"), key=lambda p: p.stat().st_size)
USING = "Prefect: using the server running at"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.pop("PGPT_REUSE_PREFECT_SERVER", None)
    return env | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"} | extra


def timed(command: list[str], env: dict[str, str], expect: str | None = None) -> float:
    """Wall seconds of ``command``; it must succeed (and print ``expect``)."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode != 0 or (expect and expect not in output):
        sys.exit(f"{' '.join(command)} failed (expected {expect!r}):\n{output}")
    return seconds


def ingest(tmp: Path, env: dict[str, str], expect: str) -> float:
    data = Path(tempfile.mkdtemp(prefix="data-", dir=tmp))
    return timed([str(PGPT), "--data-dir", str(data), "ingest", str(POST)], env, expect)


def series(name: str, runs: int, once) -> float:
    """``runs`` timed calls of ``once``; prints each with the load; returns the median."""
    times = []
    for i in range(runs):
        before = load()
        times.append(once())
        print(f"  {name} run {i + 1}: {times[-1]:.1f} s (load {before} -> {load()})", flush=True)
    return statistics.median(times)


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1:port, in its own process group; waits for it."""
    process = subprocess.Popen(
        [
            str(PGPT.parent / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=clean_env(home),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    sys.exit(f"prefect server did not start:\n{log.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each (median)")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}  load: {load()}  post: {POST.name} ({POST.stat().st_size} B)")

    with tempfile.TemporaryDirectory(prefix="pgpt-startup-") as name:
        tmp = Path(name)
        home = tmp / "prefect-home"
        help_s = series(
            "help", args.runs, lambda: timed([str(PGPT), "--help"], clean_env(home), "ingest")
        )

        alone = clean_env(home, PGPT_REUSE_PREFECT_SERVER="0")
        first = series("first temporary", 1, lambda: ingest(tmp, alone, "Starting temporary"))
        temporary = series("temporary", args.runs, lambda: ingest(tmp, alone, "Starting temp"))

        port = free_port()
        server = start_server(tmp / "server-home", port, tmp / "server.log")
        try:
            found = clean_env(home, PREFECT_SERVER_API_PORT=str(port))
            reused = series("reused", args.runs, lambda: ingest(tmp, found, USING))
        finally:
            stop_server(server)

    print(f"help_s: {help_s:.1f}")
    print(f"first_temporary_s: {first:.1f}")
    print(f"startup_temporary_s: {temporary:.1f}")
    print(f"startup_reused_s: {reused:.1f}")
    print(f"load: {load()}")


if __name__ == "__main__":
    main()
