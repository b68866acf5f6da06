"""The Prefect UI in a real browser (Debian's headless Chromium, driven by selenium): the
deployments of prefect.yaml, and a retrain run's evaluation artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.runs import current_model

pytest_plugins = ["servicefixture"]  # the server, worker and runs of tests/test_deploy.py
pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = Path("/tmp")  # copies of the screenshots, to look at: /tmp/pgpt-ui*.png


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


def page_text(driver, *words: str, timeout_s: float = 60) -> str:
    """The page's visible text, once it shows every one of ``words``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        text = d.find_element(By.TAG_NAME, "body").text
        return text if all(w in text for w in words) else False

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.5).until(shown)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{words} not all on {driver.current_url}:\n{body[:3000]}") from None


def screenshot(driver, path: Path) -> None:
    """Save the page as ``path`` (under pytest's tmp dir) and copy it to /tmp."""
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"
    shutil.copyfile(path, SHOTS / path.name)


def test_the_ui_shows_the_deployments_and_the_evaluation(browser, deployed, tmp_path):
    service = deployed.service
    browser.get(f"{service.url}/deployments")
    page_text(browser, "retrain", "ingest", "evaluate")
    screenshot(browser, tmp_path / "pgpt-ui-deployments.png")

    deployment = service.deployment("retrain")
    browser.get(f"{service.url}/deployments/deployment/{deployment['id']}")
    # every figure is waited for: the page renders its panels one by one
    page_text(
        browser,
        "At 03:00 AM, only on Monday",
        "pgpt-process",
        "Completed",
        "Concurrency Limit\n1",
        "2 Flow runs",
    )
    screenshot(browser, tmp_path / "pgpt-ui-deployment.png")

    model_id = current_model(deployed.data_dir)
    (artifact,) = service.post(
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["pgpt-evaluation"]}}, "sort": "CREATED_DESC", "limit": 1},
    )
    browser.get(f"{service.url}/artifacts/artifact/{artifact['id']}")
    text = page_text(browser, "pgpt-evaluation", "finetuned", model_id)
    assert "identity" in text and "CER" in text
    screenshot(browser, tmp_path / "pgpt-ui.png")
