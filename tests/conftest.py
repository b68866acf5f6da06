"""Shared test set-up: an isolated Prefect home, and one Prefect test server per session."""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="pgpt-prefect-home-")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# never the Prefect server a developer may have running (config/prefect_server.py)
os.environ.setdefault("PGPT_REUSE_PREFECT_SERVER", "0")
# the machine's training slot (flows.finetune.training_lock): the suite's own, inherited by
# the workers and subprocesses it starts
os.environ["PGPT_TRAIN_LOCK"] = os.path.join(tempfile.mkdtemp(prefix="pgpt-lock-"), "train.lock")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
CORPORA = ROOT.parent / "shared" / "corpora"


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect API (SQLite in a temp dir) for tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama with a real (small) tokenizer, saved as an HF model folder."""
    from tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_profile(tmp_path, tiny_model) -> str:
    """A profile (YAML path) that fine-tunes the tiny model for a few steps."""
    from tinymodel import write_tiny_profile

    return str(write_tiny_profile(tmp_path / "tiny.yaml", tiny_model))


def task_states(flow_state, settle_s: float = 1.5, timeout_s: float = 60) -> Counter:
    """Counter of (task name, state name) over the task runs of one flow run.

    Prefect records task-run states from events, a moment after the flow returns: poll
    until every run has a final state and the count has not changed for ``settle_s``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    flow_run_id = flow_state.state_details.flow_run_id
    seen, stable_since, deadline = None, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
        if all(run.state and run.state.is_final() for run in runs):
            counts = Counter((run.name.rsplit("-", 1)[0], run.state.name) for run in runs)
            if counts != seen:
                seen, stable_since = counts, time.monotonic()
            elif time.monotonic() - stable_since >= settle_s:
                return counts
        time.sleep(0.25)
    raise TimeoutError(f"task runs of {flow_run_id} did not settle: {seen}")
