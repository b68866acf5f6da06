"""Take a model elsewhere: its merged weights as GGUF (llama.cpp, Ollama) or a transformers
folder, written by ``backends.local.export_model``, with a Prefect artifact saying how to run it.

A model is checked before anything loads (:func:`exportable_model`): an OpenAI fine-tune, an
unknown id or a run folder with its adapter missing is one line naming it and what to do.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from typing_extensions import TypedDict

from backends.local import LOCAL_ID
from backends.local.export_model import Format
from backends.local.to_gguf import Quant
from config.settings import FinetuneSettings
from core.errors import BadInput, MissingInput
from core.runs import CURRENT_JSON, RunFolder, current_model, models_dir


class ModelExport(TypedDict):
    """What an export wrote: the model, the format, the files and their total size."""

    model_id: str
    format: str
    quant: str
    files: list[str]
    bytes: int
    seconds: float


def exportable_model(data_dir: str | Path, model_id: str | None) -> str:
    """``model_id`` (default: the current model) once it is a finished local fine-tune or a
    base model; else :class:`BadInput`/:class:`MissingInput` naming it and what to do.

    >>> exportable_model("/nonexistent", "ft:gpt-4o-mini-2024-07-18:acme::abc")
    Traceback (most recent call last):
    ...
    core.errors.BadInput: model 'ft:gpt-4o-mini-2024-07-18:acme::abc' is an OpenAI fine-tune: \
its weights stay on OpenAI's servers; export a local model (pgpt serve lists them)
    """
    chosen = model_id or current_model(data_dir)
    if chosen is None:
        where = models_dir(data_dir) / CURRENT_JSON
        raise MissingInput(
            f"no fine-tuned model yet ({where}): run `pgpt finetune` or give a model id"
        )
    if chosen.startswith("ft:") or not re.fullmatch(LOCAL_ID, chosen):
        raise BadInput(
            f"model {chosen!r} is an OpenAI fine-tune: its weights stay on OpenAI's servers; "
            "export a local model (pgpt serve lists them)"
        )
    run = RunFolder.of(data_dir, chosen)
    if not run.path.is_dir():
        from backends.local.model import SMOLLM2

        if chosen == SMOLLM2:
            return chosen  # the base model itself, converted on first use
        raise MissingInput(f"no model {chosen!r} in {models_dir(data_dir)}: pass a model id")
    try:
        json.loads(run.model_json.read_text(encoding="utf-8"))
        run.read_job()
        missing = not (run.adapter / "adapter_config.json").is_file()
    except (OSError, ValueError, TypeError):
        missing = True
    if missing:
        raise BadInput(
            f"model {chosen!r} in {run.path} is unfinished or damaged (its model.json, job.json "
            "or adapter/ is missing or unreadable): run `pgpt finetune` again"
        )
    from backends.local.model import job_base_dir

    job_base_dir(run.read_job(), data_dir)  # its base model is there (SmolLM2: converted)
    return chosen


def model_reader(data_dir: str | Path, model_id: str) -> Callable[[str], str]:
    """plain text -> what ``model_id`` reads: its scaffold's Markdown for a local fine-tune
    (``pgpt format --scaffold-only``, the input to give an exported model), else the text."""
    from backends.local.scaffold import recorded_scaffold

    run = RunFolder.of(data_dir, model_id) if re.fullmatch(LOCAL_ID, model_id) else None
    if run is None or not run.is_done():
        return lambda text: text
    return recorded_scaffold(run.adapter)


@task
def export_model_files(
    model_id: str, to: str, fmt: Format, quant: Quant, finetune: FinetuneSettings, data_dir: str,
    system: str,
) -> ModelExport:  # fmt: skip
    """Merge ``model_id``'s adapter into its base and write it into folder ``to``."""
    from backends.local import LocalBackend
    from backends.local.export_model import write_files

    logger = get_run_logger()
    started = time.monotonic()
    model, tokenizer = LocalBackend(data_dir, finetune).load(model_id)
    logger.info("exporting %s as %s (%s) into %s", model_id, fmt, quant, to)
    files = write_files(model, tokenizer, Path(to), model_id, fmt, quant, system)
    weights = quant if fmt == "gguf" else "float32"  # a transformers folder keeps fp32
    size = sum(path.stat().st_size for path in files)
    seconds = round(time.monotonic() - started, 1)
    megabytes = size / 1e6
    logger.info(
        "exported %s: %d files, %.0f MB in %.1f s", model_id, len(files), megabytes, seconds
    )
    paths = [str(path) for path in files]
    return ModelExport(
        model_id=model_id, format=fmt, quant=weights, files=paths, bytes=size, seconds=seconds
    )


def usage_lines(export: ModelExport) -> list[str]:
    """How to run what was exported, one command a line."""
    files = [Path(f) for f in export["files"]]
    if export["format"] == "hf":
        folder = files[0].parent
        return [f"AutoModelForCausalLM.from_pretrained({str(folder)!r})  # transformers"]
    gguf = next(f for f in files if f.suffix == ".gguf")
    return [
        f"cd {gguf.parent} && ollama create {gguf.stem} -f Modelfile && ollama run {gguf.stem}",
        f"llama-cli -m {gguf} -cnv  # the chat template and system message are in the file",
    ]


@task
def publish_model_export(export: ModelExport) -> str:
    """A Prefect artifact: the files written and how to run them."""
    lines = [f"## Exported {export['model_id']}", ""]
    lines += [f"- `{f}`" for f in export["files"]]
    size = f"{export['bytes'] / 1e6:.0f} MB"
    lines += ["", f"{export['format']} ({export['quant']}), {size}, {export['seconds']} s", ""]
    lines += ["```", *usage_lines(export), "```"]
    markdown = "\n".join(lines)
    create_markdown_artifact(key="pgpt-model-export", markdown=markdown, description="A model")
    return markdown
