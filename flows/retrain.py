"""The whole pipeline: ingest -> export -> fine-tune -> evaluate -> promote (or keep the champion).

python flows/retrain.py [SOURCE ...]
"""

from __future__ import annotations

import sys

from prefect import flow
from typing_extensions import TypedDict

from config.settings import load_settings
from core.articles import IngestSummary
from flows.evaluate import Evaluation, evaluate
from flows.export import Dataset, export
from flows.finetune import Finetuned, finetune
from flows.ingest import ingest
from flows.runner import Backend


class Retrained(TypedDict):
    """The retrain flow's result: each flow's."""

    ingest: IngestSummary
    export: Dataset
    finetune: Finetuned
    evaluate: Evaluation


@flow(name="retrain")
def retrain(
    sources: list[str] | None = None,
    profile: str = "default",
    data_dir: str | None = None,
    backend: Backend | None = None,
) -> Retrained:
    """Ingest, export, fine-tune and evaluate; the new model replaces the champion if not worse.

    Args:
        sources: Article URLs, RSS/Atom feeds, Medium exports or folders (none: the sample).
        profile: A settings profile: a name in config/profiles/ or the path of a YAML file.
        data_dir: Where everything goes (none: PGPT_DATA_DIR, else ./data).
        backend: Fine-tune and evaluate on "local" or "openai" (none: the profile's).
    """
    ingested = ingest(sources, profile, data_dir)
    exported = export(profile, data_dir, ingest_summary=ingested)
    model = finetune(profile, data_dir, make_current=False, backend=backend)
    report = evaluate(
        profile,
        data_dir,
        model_id=model["model_id"],
        promote=True,
        loss_png=model["loss_png"],
        backend=backend,
    )
    return {"ingest": ingested, "export": exported, "finetune": model, "evaluate": report}


if __name__ == "__main__":
    from config.runtime import results_in

    with results_in(load_settings().data_dir):
        retrain(sys.argv[1:] or None)
