"""Export-model flow: a fine-tuned model (default: the current one) as files other tools run.

``gguf`` (default): one ``<model id>.gguf`` for llama.cpp and LM Studio, and an Ollama
``Modelfile`` beside it; ``hf``: a plain transformers folder. The adapter is merged into the
base model's weights first (``backends/local/export_model.py``).

python flows/export_model.py DIR [MODEL_ID]
"""

from __future__ import annotations

import sys
from typing import Literal

from prefect import flow

from config.settings import load_settings
from flows.runner import flow_settings
from tasks.model_export import (
    ModelExport,
    export_model_files,
    exportable_model,
    publish_model_export,
)


@flow(name="export-model")
def export_model(
    to: str,
    model_id: str | None = None,
    format: Literal["gguf", "hf"] = "gguf",
    quant: Literal["f16", "q8_0"] = "q8_0",
    profile: str = "default",
    data_dir: str | None = None,
) -> ModelExport:
    """Write a model's merged weights into folder ``to``.

    Args:
        to: The folder to write into (made if missing; files of the same names are replaced).
        model_id: A local fine-tune's id or a base model (none: the current model).
        format: gguf (llama.cpp, Ollama) or hf (a transformers folder).
        quant: gguf's weights: q8_0 (half of f16's size) or f16.
        profile: A settings profile: a name in config/profiles/ or the path of a YAML file.
        data_dir: Where the models are (none: PGPT_DATA_DIR, else ./data).
    """
    settings = flow_settings(profile, data_dir)
    chosen = exportable_model(settings.data_dir, model_id)
    exported = export_model_files(
        chosen, to, format, quant, settings.finetune, str(settings.data_dir),
        settings.export.system_message,
    )  # fmt: skip
    publish_model_export(exported)
    return exported


if __name__ == "__main__":
    from config.runtime import results_in

    with results_in(load_settings().data_dir):
        export_model(sys.argv[1], *sys.argv[2:3])
