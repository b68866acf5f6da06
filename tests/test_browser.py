"""The Prefect UI in a real browser (Debian's headless Chromium, driven by selenium): the
deployments of prefect.yaml, and a retrain run's evaluation artifact."""

from __future__ import annotations

import pytest

from core.runs import current_model

from conftest import page_text, screenshot

pytest_plugins = ["servicefixture"]  # the server, worker and runs of tests/test_deploy.py
pytestmark = pytest.mark.slow


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
