"""Generation speed: copy-ahead decoding against plain greedy, same model, chunks and constraint.

Plain greedy is ``model.generate`` one token a forward pass (``generate(draft_tokens=0)``);
ours is ``backends.local.decode`` (``generate``'s default), which checks the input's next
tokens in one pass. Both decode the same chunks of the bundled sample blog (cleaned and
chunked as the pipeline does) with the same choice rule (faithful by default, ``--raw`` for
argmax), at batch 1 and at batch 8, one after the other in this process. The answers must be
token for token the same; the script says so, or exits 1.

Printed: tokens/s of each side at each batch size, each side's share of the compute-bound
limit (forward FLOPs per token, 2 x the parameters of every linear layer including the LM
head, times tokens/s, over the fp32 matmul peak measured here as ``bench/train_throughput.py``
does), ``ratio: X.XX`` (ours over plain at batch 1) and, unless ``--no-format``, the wall
time of ``pgpt format`` on a ~400-token chunk in a fresh process (model load included),
with the light model ``pgpt format`` loads and through transformers (``PGPT_LIGHT=0``),
alternated, and ``format_ratio`` (transformers' time over the light one's).

    .venv/bin/python bench/generate_speed.py                  # base SmolLM2, faithful
    .venv/bin/python bench/generate_speed.py --data-dir D --model ID  # a fine-tune of D
    .venv/bin/python bench/generate_speed.py --chunks 2 --no-format   # a smoke run

Run it alone: two torch processes on 2 cores slow each other 5-10x (the load is printed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "data" / "sample" / "posts"


def sample_chunks(chunk_tokens: int) -> list[str]:
    """The plain text of every chunk of the bundled sample's articles, longest first."""
    import hashlib

    from config.settings import CleanSettings
    from tasks.clean import clean_record
    from tasks.examples import article_examples

    clean = CleanSettings()
    plains = []
    for path in sorted(SAMPLE.glob("*.html")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        record = clean_record(str(path), digest, f"file://{path.name}", "sample", clean)
        if not record["skip_reason"]:
            plains += [row["plain"] for row in article_examples(record, "test", chunk_tokens)]
    return sorted(plains, key=len, reverse=True)


def matmul_peak() -> float:
    """The fp32 matmul peak, measured as ``bench/train_throughput.py`` measures it."""
    sys.path.insert(0, str(ROOT / "bench"))
    from train_throughput import matmul_peak as measure

    return measure(2048, reps=8)


def forward_flops_per_token(model) -> float:
    """2 x the weights of every linear layer (LM head included): one token's matmul FLOPs."""
    import torch

    return 2.0 * sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def timed(model, tokenizer, chats, batch_size: int, faithful: bool, drafts: int) -> tuple:
    """(answers' token lists, new tokens, seconds) of one ``generate`` call."""
    from backends.local.generate import generate

    details: list[dict] = []
    start = time.perf_counter()
    answers = generate(
        model, tokenizer, chats, batch_size=batch_size, faithful=faithful,
        draft_tokens=drafts, details=details, copy_ahead_rows=batch_size,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return answers, sum(d["completion_tokens"] for d in details), seconds


FORMAT_RUNS = 3  # fresh pgpt format processes per side; the fastest is printed


def format_seconds(data_dir: Path, model_id: str, plain: str, light: bool) -> tuple[float, str]:
    """Wall time and output of ``pgpt format --model MODEL_ID`` of ``plain`` in a fresh
    process, with the light model (``backends.local.llama``) or through transformers."""
    path = Path(tempfile.mkdtemp()) / "chunk.txt"
    path.write_text(plain, encoding="utf-8")
    command = [str(ROOT / ".venv/bin/pgpt"), "--data-dir", str(data_dir), "format", str(path)]
    command += ["--model", model_id]
    env = {**os.environ, "PGPT_LIGHT": "1" if light else "0"}
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=env, text=True)
    return time.perf_counter() - start, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=8, help="chunks decoded at batch 1")
    parser.add_argument("--draft-tokens", type=int, default=None, help="ours: tokens a pass")
    parser.add_argument("--raw", action="store_true", help="argmax, not the faithful constraint")
    parser.add_argument("--no-format", action="store_true", help="skip the pgpt format timing")
    parser.add_argument("--data-dir", default="data", help="where the base model is converted")
    parser.add_argument("--model", default=None, help="a model id of --data-dir (default: base)")
    args = parser.parse_args()

    import torch

    from backends.local import LocalBackend
    from backends.local.decode import DRAFT_TOKENS
    from backends.local.model import SMOLLM2
    from config.settings import ExportSettings, FinetuneSettings

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    drafts = args.draft_tokens if args.draft_tokens is not None else DRAFT_TOKENS
    model_id = args.model or SMOLLM2
    backend = LocalBackend(args.data_dir, FinetuneSettings())
    model, tokenizer = backend.load(model_id)
    print(f"model: {model_id}")
    system = {"role": "system", "content": ExportSettings().system_message}
    plains = sample_chunks(384)
    chats = [[system, {"role": "user", "content": p}] for p in plains]
    peak = matmul_peak()
    flops = forward_flops_per_token(model)
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; {flops / 1e9:.3f} GFLOP a token forward")
    faithful = not args.raw
    rates: dict[tuple[str, int], float] = {}
    same = True
    for batch_size, count in ((1, args.chunks), (8, max(8, args.chunks))):
        subset = chats[:count]
        outputs = {}
        for name, n in (("plain", 0), ("ours", drafts)):
            answers, tokens, seconds = timed(model, tokenizer, subset, batch_size, faithful, n)
            outputs[name] = answers
            rates[name, batch_size] = tokens / seconds
            share = 100 * flops * tokens / seconds / peak
            print(
                f"batch {batch_size} {name:<5} {tokens:>5} tokens {seconds:>7.1f} s "
                f"{tokens / seconds:>6.1f} tok/s  {share:>4.1f} % of the compute-bound limit"
            )
        if outputs["plain"] != outputs["ours"]:
            same = False
            differ = sum(a != b for a, b in zip(outputs["plain"], outputs["ours"], strict=True))
            print(f"batch {batch_size}: {differ} of {len(subset)} answers differ")
    print(f"identical answers: {'yes' if same else 'NO'}")
    print(f"ratio: {rates['ours', 1] / rates['plain', 1]:.2f}")
    print(f"ratio_batch8: {rates['ours', 8] / rates['plain', 8]:.2f}")
    if not args.no_format:
        target = min(plains, key=lambda p: abs(len(tokenizer(p)["input_ids"]) - 400))
        n = len(tokenizer(target)["input_ids"])
        data_dir = Path(args.data_dir).resolve()
        runs = {light: [] for light in (False, True)}
        printed = set()
        for _ in range(FORMAT_RUNS):  # alternated, so both see the same machine
            for light in (False, True):
                seconds, output = format_seconds(data_dir, model_id, target, light)
                runs[light].append(seconds)
                printed.add(output)
        for light, name in ((False, "through transformers"), (True, "light (the default)")):
            times = ", ".join(f"{s:.1f}" for s in runs[light])
            print(f"pgpt format ({n} tokens), {name}: {min(runs[light]):.1f} s (runs: {times})")
        print(f"format_ratio: {min(runs[False]) / min(runs[True]):.2f}")
        print(f"same output: {'yes' if len(printed) == 1 else 'NO'}")
        same = same and len(printed) == 1
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
