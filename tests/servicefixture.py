"""personal-gpt as a service, for the deployment and browser tests: a real Prefect server,
the deployments of prefect.yaml, a process worker, and retrain runs triggered through the API.

Everything is started with the README's own commands (``make server``, ``make deploy``,
``make worker``) on a free loopback port, with a temporary ``PREFECT_HOME``; the processes are
stopped (their process groups, by id) when the session ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tinymodel import write_tiny_profile

ROOT = Path(__file__).resolve().parents[1]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    """A running server (``url``: its UI, ``api``: its REST API) and its worker."""

    url: str
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def wait_healthy(self, timeout_s: float) -> None:
        """Wait until the server answers ``/health`` (RuntimeError after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.processes[0].poll() is not None:
                raise RuntimeError(f"prefect server did not start: {self.tail()}")
            time.sleep(0.5)

    def request(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        """One API request; retried on 503 (SQLite busy under a worker's polling), as
        Prefect's own client does."""
        for attempt in range(6):
            response = httpx.request(method, self.api + path, json=body, timeout=30)
            if response.status_code != 503:
                break
            time.sleep(0.5 * 2**attempt)
        return response

    def get(self, path: str) -> dict | list:
        return self.request("GET", path).raise_for_status().json()

    def post(self, path: str, body: dict) -> dict | list:
        return self.request("POST", path, body).raise_for_status().json()

    def post_raw(self, path: str, body: dict) -> httpx.Response:
        return self.request("POST", path, body)

    def deployment(self, name: str) -> dict:
        return self.get(f"/deployments/name/{name}/{name}")

    def run_deployment(self, name: str, parameters: dict) -> str:
        """Start a run as the UI's Run button does; its flow run id."""
        deployment = self.deployment(name)
        run = self.post(
            f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters}
        )
        return run["id"]

    def wait(self, run_ids: list[str], timeout_s: float = 300) -> list[dict]:
        """The flow runs, once all are in a final state (else a TimeoutError with the logs)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = [self.get(f"/flow_runs/{run_id}") for run_id in run_ids]
            if all(run["state_type"] in FINAL for run in runs):
                return runs
            time.sleep(1)
        raise TimeoutError(f"runs not done in {timeout_s} s: {self.tail()}")

    def subflow_runs(self, parent_id: str) -> dict[str, dict]:
        """The subflow runs of a flow run, by flow name (ingest, export, ...)."""
        runs = self.post(
            "/flow_runs/filter",
            {"flow_runs": {"parent_flow_run_id": {"any_": [parent_id]}}, "limit": 50},
        )
        return {self.get(f"/flows/{run['flow_id']}")["name"]: run for run in runs}

    def task_runs(self, flow_run_ids: list[str]) -> list[dict]:
        return self.post(
            "/task_runs/filter",
            {"flow_runs": {"id": {"any_": flow_run_ids}}, "limit": 200},
        )

    def tail(self, chars: int = 4000) -> str:
        return "".join(
            f"\n--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
            for log in sorted(self.logs.glob("*.log"))
        )

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """``make NAME`` in the background, in its own process group, logged to NAME.log."""
        log = (self.logs / f"{name}.log").open("w")
        process = subprocess.Popen(
            ["make", "--no-print-directory", name, *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def start_service(tmp: Path) -> Service:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # schedules are stored (and checked) but fire no runs while the tests run
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        # a run waiting for the deployment's concurrency slot retries after 1 s (default 30)
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # the worker polls every second (default 10)
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
    }
    logs = tmp / "logs"
    logs.mkdir(parents=True)
    service = Service(url=f"http://127.0.0.1:{port}", env=env, logs=logs)
    service.start("server", f"PORT={port}")
    try:
        service.wait_healthy(120)
    except RuntimeError:
        service.stop()
        raise
    deploy = subprocess.run(
        ["make", "--no-print-directory", "deploy", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    (logs / "deploy.log").write_text(deploy.stdout + deploy.stderr)
    if deploy.returncode != 0:
        service.stop()
        raise RuntimeError(f"make deploy failed: {service.tail()}")
    service.start("worker", f"PORT={port}")
    return service


@dataclass
class Deployed:
    """Two retrain runs of the sample with the tiny model, started together."""

    service: Service
    data_dir: Path
    profile: str
    runs: list[dict]  # the two flow runs (final), in the order they started


@pytest.fixture(scope="session", name="prefect_service")
def prefect_service_fixture(tmp_path_factory):
    service = start_service(tmp_path_factory.mktemp("service"))
    yield service
    service.stop()


@pytest.fixture(scope="session", name="deployed")
def deployed_fixture(prefect_service, tiny_model, tmp_path_factory) -> Deployed:
    """Two `retrain` deployment runs triggered at once, as two clicks on the UI's Run would."""
    tmp = tmp_path_factory.mktemp("retrain")
    profile = tmp / "tiny.yaml"
    write_tiny_profile(profile, tiny_model)
    data = tmp / "data"
    parameters = {"profile": str(profile), "data_dir": str(data)}
    ids = [prefect_service.run_deployment("retrain", parameters) for _ in range(2)]
    runs = sorted(prefect_service.wait(ids), key=lambda run: run["start_time"] or "")
    return Deployed(prefect_service, data, str(profile), runs)
