"""The author's rules against the general rules on a data dir's valid (or test) split.

Counts the author's rules (``core/author_rules.py``) from the exported train split, formats
every chunk of the chosen split with both, and prints the quality table (CER, gap closed,
visible F1, per kind, with 95 % intervals) beside identity and the ceiling, with the seconds
the counting and the formatting took. No model, no GPU: seconds on 2 cores, so the rules'
settings can be chosen on the valid split before anything is trained.

    .venv/bin/python bench/author_rules.py --data-dir DATA            # DATA/jsonl/valid.jsonl
    .venv/bin/python bench/author_rules.py --data-dir DATA --split test

DATA is a data dir after ``pgpt export`` (``bench/quality.py``'s, for example).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.quality import score_answer_rows, summary_lines
    from core.chat_data import chat_examples
    from core.rules import rules_markdown
    from tasks.evaluate import computing_function
    from tasks.evaluate.metrics import paired_comparisons

    jsonl = args.data_dir / "jsonl"
    if not (jsonl / "train.jsonl").is_file():
        sys.exit(f"{jsonl / 'train.jsonl'} not found: run `pgpt --data-dir {args.data_dir} export`")
    train, chunks = (chat_examples(jsonl / f"{s}.jsonl") for s in ("train", args.split))
    started = time.perf_counter()
    author = computing_function("author_rules", args.data_dir)  # as the evaluation counts them
    counted = time.perf_counter() - started
    started = time.perf_counter()
    rows = [
        {"index": i, "plain": e["plain"], "reference": e["reference"], "identity": e["plain"],
         "rules": rules_markdown(e["plain"]), "author_rules": author(e["plain"])}
        for i, e in enumerate(chunks)
    ]  # fmt: skip
    formatted = time.perf_counter() - started
    print(
        f"{len(train)} train chunks counted in {counted:.1f} s ({len(author.counts)} contexts); "
        f"{len(rows)} {args.split} chunks formatted by both in {formatted:.1f} s"
    )
    metrics = score_answer_rows(rows)
    metrics["paired_cer"] = paired_comparisons(
        metrics["models"], model="author_rules", samples=2000, confidence=0.95
    )
    print("\n".join(summary_lines(metrics)))
    print(json.dumps({"command": " ".join(sys.argv)}))


if __name__ == "__main__":
    main()
