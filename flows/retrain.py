"""The whole pipeline: ingest -> export (-> fine-tune -> evaluate, as those stages land).

python flows/retrain.py [SOURCE ...]
"""

from __future__ import annotations

import sys

from prefect import flow

from flows.export import export
from flows.ingest import ingest


@flow(name="retrain")
def retrain(
    sources: list[str] | None = None, profile: str = "default", data_dir: str | None = None
) -> dict:
    """Ingest the sources and export the fine-tuning dataset."""
    ingested = ingest(sources, profile, data_dir)
    exported = export(profile, data_dir, ingest_summary=ingested)
    return {"ingest": ingested, "export": exported}


if __name__ == "__main__":
    retrain(sys.argv[1:] or None)
