"""Shared test set-up: an isolated Prefect home, and one Prefect test server per session."""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture(scope="session")
def retrained(tmp_path_factory, tiny_model) -> tuple[Path, str, dict]:
    """(data dir, profile, result) of one retrain run of the sample with the tiny model (3
    steps, 3 test chunks): the tests that read a finished run share it. A test may run
    more in it: tests/test_evaluate.py promotes a twin, which changes ``current.json`` and
    ``runs.parquet``, so a test that needs the first run as current sets it again
    (tests/test_dask.py calls ``set_current_model``)."""
    from config.runtime import results_in
    from flows.retrain import retrain

    from tinymodel import write_tiny_profile

    data = tmp_path_factory.mktemp("retrained")
    profile = str(write_tiny_profile(data / "tiny.yaml", tiny_model))
    with results_in(data):
        result = retrain(None, profile, str(data))
    return data, profile, result


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


# --- a real browser for the UI tests -------------------------------------------------------
# Debian's headless Chromium, driven through its ChromeDriver by selenium (`make browser`)

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = Path("/tmp")  # copies of the screenshots, to look at: /tmp/pgpt-*.png


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromedriver are needed: `make browser` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_in_page(driver, condition, what: str, timeout_s: float = 60, poll_s: float = 0.5):
    """``condition(driver)``'s first truthy value; failing, ``what`` and the page's text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=poll_s).until(condition)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{what} on {driver.current_url}:\n{body[:3000]}") from None


def page_text(driver, *words: str, timeout_s: float = 60) -> str:
    """The page's visible text, once it shows every one of ``words``."""
    from selenium.webdriver.common.by import By

    def shown(d):
        text = d.find_element(By.TAG_NAME, "body").text
        return text if all(w in text for w in words) else False

    return wait_in_page(driver, shown, f"{words} not all", timeout_s)


def screenshot(driver, path: Path) -> None:
    """Save the page as ``path`` (under pytest's tmp dir) and copy it to /tmp."""
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"
    shutil.copyfile(path, SHOTS / path.name)
