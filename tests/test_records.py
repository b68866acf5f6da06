"""The records (TypedDicts): plain dicts at run time, and whole as a flow's parameter."""

from __future__ import annotations

import pytest

from config.runtime import results_in
from flows.export import export
from flows.ingest import ingest

from conftest import SAMPLE

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_an_ingest_summary_is_a_whole_export_parameter(tmp_path):
    """Prefect validates the export flow's ``ingest_summary`` as an ``IngestSummary``: a key
    the ingest flow writes that the record does not declare would be dropped on the way."""
    post = min((SAMPLE / "posts").glob("*.html"), key=lambda p: p.stat().st_size)
    with results_in(tmp_path / "data"):
        summary = ingest([str(post)], "default", str(tmp_path / "data"))
    assert type(summary) is dict and summary["added"]
    validated = export.validate_parameters({"ingest_summary": summary})["ingest_summary"]
    assert validated == summary
