"""The whole pipeline: ingest -> export -> fine-tune -> evaluate -> promote (or keep the champion).

python flows/retrain.py [SOURCE ...]
"""

from __future__ import annotations

import sys

from prefect import flow
from typing_extensions import TypedDict

from config.settings import load_settings
from core.articles import IngestSummary
from core.errors import BadInput
from flows.evaluate import Evaluation, evaluate
from flows.export import Dataset, export
from flows.export_model import export_model
from flows.finetune import Finetuned, finetune
from flows.ingest import ingest
from flows.runner import Backend, flow_settings
from tasks.model_export import ModelExport


class Retrained(TypedDict):
    """The retrain flow's result: each flow's."""

    ingest: IngestSummary
    export: Dataset
    finetune: Finetuned
    evaluate: Evaluation
    exported_model: ModelExport | None  # the promoted model's files, when export_to is given


@flow(name="retrain")
def retrain(
    sources: list[str] | None = None,
    profile: str = "default",
    data_dir: str | None = None,
    backend: Backend | None = None,
    export_to: str | None = None,
) -> Retrained:
    """Ingest, export, fine-tune and evaluate; the new model replaces the champion if not worse.

    Args:
        sources: Article URLs, RSS/Atom feeds, Medium exports or folders (none: the sample).
        profile: A settings profile: a name in config/profiles/ or the path of a YAML file.
        data_dir: Where everything goes (none: PGPT_DATA_DIR, else ./data).
        backend: Fine-tune and evaluate on "local" or "openai" (none: the profile's).
        export_to: A folder to write the promoted model into as GGUF with an Ollama Modelfile
            (none: no export; a model that is not promoted is not exported).
    """
    if export_to and flow_settings(profile, data_dir, backend).finetune.backend != "local":
        raise BadInput(f"export_to {export_to!r}: an OpenAI fine-tune's weights cannot be exported")
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
    exported_model = None
    if export_to and report["decision"]["promote"]:
        exported_model = export_model(
            export_to, model["model_id"], profile=profile, data_dir=data_dir
        )
    return {
        "ingest": ingested,
        "export": exported,
        "finetune": model,
        "evaluate": report,
        "exported_model": exported_model,
    }


if __name__ == "__main__":
    from config.runtime import results_in

    with results_in(load_settings().data_dir):
        retrain(sys.argv[1:] or None)
