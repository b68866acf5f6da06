"""CLI start-up: which Prefect API a ``pgpt`` command uses (config/prefect_server.py).

A Prefect server running on the loopback port of ``PREFECT_SERVER_API_PORT`` is used, with one
line saying so; without one, Prefect's temporary server as before; ``PREFECT_API_URL``, when
set, is left alone. The server is a real ``make server`` on a free loopback port (the helpers
of ``servicefixture``); the commands run as a user runs them, in a subprocess.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from config import prefect_server
from config.prefect_server import REUSE_ENV, prefect_api

from conftest import SAMPLE
from servicefixture import Service, free_port

POST = min((SAMPLE / "posts").glob("*.html"), key=lambda p: p.stat().st_size)
USING = "Prefect: using the server running at"
TEMPORARY = "Starting temporary server"
# pgpt's CLI as the console script runs it, then the heavy libraries it had imported
CLI = """\
import sys
import pgpt
try:
    pgpt.app()
finally:
    heavy = ("torch", "transformers", "peft", "accelerate")
    print("heavy modules:", sorted(m for m in heavy if m in sys.modules), file=sys.stderr)
"""


@pytest.fixture(scope="module", name="server")
def server_fixture(tmp_path_factory):
    """``make server`` on a free loopback port, stopped (its process group) after the module."""
    tmp = tmp_path_factory.mktemp("startup")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    (tmp / "logs").mkdir()
    service = Service(url=f"http://127.0.0.1:{port}", env=env, logs=tmp / "logs")
    service.start("server", f"PORT={port}")
    try:
        service.wait_healthy(180)
        yield service
    finally:
        service.stop()


def pgpt_ingest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``pgpt --data-dir TMP/data ingest POST`` with no PREFECT_* but ``env``'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    clean |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), **env}
    clean.pop(REUSE_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", CLI, "--data-dir", str(tmp_path / "data"), "ingest", str(POST)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ingest" in done.stdout
    return done


def port_of(server: Service) -> str:
    return server.url.rsplit(":", 1)[1]


def ingest_runs(server: Service) -> list[dict]:
    flows = {f["id"]: f["name"] for f in server.post("/flows/filter", {"limit": 50})}
    runs = server.post("/flow_runs/filter", {"limit": 200})
    return [run for run in runs if flows.get(run["flow_id"]) == "ingest"]


def test_a_running_server_is_used_and_said_in_one_line(server, tmp_path):
    before = {run["id"] for run in ingest_runs(server)}
    done = pgpt_ingest(tmp_path, PREFECT_SERVER_API_PORT=port_of(server))
    lines = [line for line in done.stderr.splitlines() if line.startswith("Prefect:")]
    assert lines == [f"{USING} {server.api} ({REUSE_ENV}=0 to not)"], done.stderr
    assert TEMPORARY not in done.stderr
    new = [run for run in ingest_runs(server) if run["id"] not in before]
    assert [run["state_type"] for run in new] == ["COMPLETED"], done.stderr


def test_the_cli_path_of_ingest_imports_no_torch(server, tmp_path):
    done = pgpt_ingest(tmp_path, PREFECT_SERVER_API_PORT=port_of(server))
    assert USING in done.stderr
    assert "heavy modules: []" in done.stderr, done.stderr


def test_without_a_running_server_the_temporary_one_runs_as_before(tmp_path):
    done = pgpt_ingest(tmp_path, PREFECT_SERVER_API_PORT=str(free_port()))  # nothing listens
    assert TEMPORARY in done.stderr, done.stderr
    assert "Prefect:" not in done.stderr  # nothing of ours: Prefect's own message only
    assert "Traceback" not in done.stderr and "| ERROR" not in done.stderr, done.stderr


def test_prefect_api_url_is_used_as_it_is(server, tmp_path):
    """Set, PREFECT_API_URL wins: no probe, no line, no temporary server; the run is there."""
    before = {run["id"] for run in ingest_runs(server)}
    port = port_of(server)
    done = pgpt_ingest(
        tmp_path,
        PREFECT_API_URL=f"http://localhost:{port}/api",  # the same server, under another name
        PREFECT_SERVER_API_PORT=port,
    )
    assert "Prefect:" not in done.stderr and TEMPORARY not in done.stderr, done.stderr
    new = [run for run in ingest_runs(server) if run["id"] not in before]
    assert [run["state_type"] for run in new] == ["COMPLETED"], done.stderr


def test_prefect_api_url_and_the_switch_leave_prefect_s_choice(server, monkeypatch):
    monkeypatch.delenv(REUSE_ENV, raising=False)  # the suite turns reuse off (conftest.py)
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_API_PORT,
        temporary_settings,
    )

    said: list[str] = []
    with temporary_settings(
        {PREFECT_SERVER_API_PORT: int(port_of(server))}, restore_defaults={PREFECT_API_URL}
    ):
        with (
            temporary_settings({PREFECT_API_URL: "http://elsewhere:4200/api"}),
            prefect_api(said.append) as chosen,
        ):
            assert chosen is None
            assert PREFECT_API_URL.value() == "http://elsewhere:4200/api"
        monkeypatch.setenv(REUSE_ENV, "0")
        with prefect_api(said.append) as chosen:
            assert chosen is None and not PREFECT_API_URL.value()
        monkeypatch.setenv(REUSE_ENV, "1")
        with prefect_api(said.append) as chosen:
            assert chosen == server.api == PREFECT_API_URL.value()
        assert not PREFECT_API_URL.value()  # restored after the block
    assert said == [f"{USING} {server.api} ({REUSE_ENV}=0 to not)"]


class _NotPrefect(http.server.BaseHTTPRequestHandler):
    """Healthy, but the API version of another major release."""

    def do_GET(self):
        body = b"true" if self.path == "/api/health" else b'"1.0.0"'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_incompatible_server_is_not_used_and_said(monkeypatch):
    monkeypatch.delenv(REUSE_ENV, raising=False)  # the suite turns reuse off (conftest.py)
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_API_PORT, temporary_settings

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotPrefect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        said: list[str] = []
        port = httpd.server_address[1]
        with (
            temporary_settings({PREFECT_SERVER_API_PORT: port}, restore_defaults={PREFECT_API_URL}),
            prefect_api(said.append) as chosen,
        ):
            assert chosen is None and not PREFECT_API_URL.value()
        assert len(said) == 1 and "API version '1.0.0' does not match" in said[0], said
        assert prefect_server.probe(f"http://127.0.0.1:{free_port()}/api") == "not running"
    finally:
        httpd.shutdown()
        httpd.server_close()
