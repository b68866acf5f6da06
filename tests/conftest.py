"""Shared test set-up: an isolated Prefect home, and one Prefect test server per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="pgpt-prefect-home-")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

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
    from backends.local.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_profile(tmp_path, tiny_model) -> str:
    """A profile (YAML path) that fine-tunes the tiny model for a few steps."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "examples:\n  chunk_tokens: 96\n"
        f"finetune:\n  base_model: {tiny_model}\n  epochs: 1\n  max_steps: 3\n"
        "  max_seq_tokens: 1024\n  batch_size: 2\n  checkpoint_every: 100\n"
        "evaluate:\n  max_examples: 3\n  bootstrap_samples: 200\n"
    )
    return str(path)
