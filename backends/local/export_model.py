"""A local model as files other tools run: a merged transformers folder, or GGUF + Modelfile.

A fine-tune lives in ``DATA/models/<id>/`` as a LoRA adapter that only this project loads.
Exported, the adapter is merged into the base model's weights (``load_for_inference`` does
that for generation too) and written as:

- ``hf``: a plain transformers folder (safetensors, tokenizer, chat template), for any
  transformers, vLLM or TGI user;
- ``gguf``: ``<name>.gguf`` (``backends.local.to_gguf``) for llama.cpp and LM Studio, with an
  Ollama ``Modelfile`` beside it: the file, the ChatML template, the system message the model
  was trained with, greedy decoding.

The model was trained to read its scaffold's Markdown (``finetune.scaffold``:
``backends/local/scaffold.py``), which the faithful decoder of ``pgpt format`` prepares; in
another tool, give it that (``pgpt format --scaffold-only``), or plain text for a weaker answer.
Every file is written beside its target and renamed into place, so a folder is never left
half-written.

>>> print(modelfile("notes.gguf", "You render plain text into markdown format.", 8192))
... # doctest: +ELLIPSIS
# personal-gpt: `ollama create notes -f Modelfile`, then `ollama run notes`
FROM ./notes.gguf
TEMPLATE \"\"\"{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
\"\"\"
SYSTEM \"\"\"You render plain text into markdown format.\"\"\"
PARAMETER temperature 0
...
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from backends.local.to_gguf import Quant, write_gguf

Format = Literal["gguf", "hf"]
FORMATS: tuple[Format, ...] = ("gguf", "hf")
MODELFILE = "Modelfile"
# Ollama's Go template of SmolLM2's ChatML chat template: the same prompt, token for token.
CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)
STOPS = ("<|im_end|>", "<|endoftext|>")
OLLAMA_CONTEXT = 8192  # tokens: Ollama's own default (2048) cuts a long chunk and its answer


def modelfile(gguf_name: str, system: str, context: int) -> str:
    """Ollama's ``Modelfile`` for ``gguf_name`` beside it: greedy, the system message."""
    name = Path(gguf_name).stem
    lines = [
        f"# personal-gpt: `ollama create {name} -f {MODELFILE}`, then `ollama run {name}`",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{CHATML_TEMPLATE}"""',
        f'SYSTEM """{system}"""',
        "PARAMETER temperature 0",  # greedy, as pgpt format decodes
        "PARAMETER top_k 1",
        f"PARAMETER num_ctx {min(context, OLLAMA_CONTEXT)}",
        *(f'PARAMETER stop "{stop}"' for stop in STOPS),
    ]
    return "\n".join(lines) + "\n"


def write_files(
    model: Any, tokenizer: Any, to: Path, name: str, fmt: Format, quant: Quant, system: str
) -> list[Path]:
    """Write the model's files into folder ``to`` (made if missing); the paths written."""
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=to, prefix=".export-", suffix=".tmp"))
    try:
        tokenizer.save_pretrained(scratch)
        if fmt == "hf":
            model.save_pretrained(scratch)
        else:
            gguf = scratch / f"{name}.gguf"
            write_gguf(model, tokenizer, scratch, gguf, quant)
            context = model.config.max_position_embeddings
            (scratch / MODELFILE).write_text(modelfile(gguf.name, system, context), "utf-8")
            for path in scratch.iterdir():  # the tokenizer's files were the writer's input
                if path.name not in (gguf.name, MODELFILE):
                    path.unlink()
        written = []
        for path in sorted(scratch.iterdir()):
            os.replace(path, to / path.name)
            written.append(to / path.name)
        return written
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
