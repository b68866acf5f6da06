"""The markup bias of a fine-tune: what its valid split chose, and what other biases would do.

For a trained local model, prints the calibration on the valid split (the line-start F1 of
each bias, ``backends.local.calibrate``), then generates the test chunks in faithful mode
once per bias (repaired as the evaluation repairs them) and prints CER, gap closed and
visible F1 for each, with identity, the ceiling and the rules as anchors. The test figures
are for reading only: the bias a model uses is the one its valid split chose ("auto").

    .venv/bin/python bench/markup_bias.py --data-dir data --model MODEL_ID --bias auto --bias 0
    .venv/bin/python bench/markup_bias.py --data-dir D --model ID --bias auto --bias 2 --chunks 20
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
    parser.add_argument("--model", required=True, help="a fine-tuned local model id")
    parser.add_argument("--bias", action="append", default=[], help="logits, or auto; repeat")
    parser.add_argument("--chunks", type=int, default=None, help="test chunks (all)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from backends.local import LocalBackend
    from backends.local.calibrate import calibrate
    from bench.quality import score_answer_rows, summary_lines
    from core.faithful import repair
    from tasks.evaluate import conversations

    backend = LocalBackend(args.data_dir, {"threads": 0})
    model, tokenizer = backend.load(args.model)
    job = backend.run_folder(args.model).read_job()
    started = time.perf_counter()
    from config.settings import FinetuneSettings

    limit = FinetuneSettings.model_validate(job.settings).max_valid_examples  # as training
    found = calibrate(model, tokenizer, job.valid, getattr(model, "scaffold", "none"), limit)
    print(f"valid split: {json.dumps(found)} ({time.perf_counter() - started:.0f} s)")
    test = Path(job.train).with_name("test.jsonl")
    rows = [json.loads(line)["messages"] for line in test.read_text().splitlines() if line]
    rows = rows[: args.chunks] if args.chunks else rows
    examples = [{"plain": m[-2]["content"], "reference": m[-1]["content"]} for m in rows]
    from core.rules import rules_markdown

    table = [{"index": i, **e, "identity": e["plain"]} for i, e in enumerate(examples)]
    for row in table:
        row["rules"] = rules_markdown(row["plain"])
    chats = conversations(examples, rows[0][0]["content"])
    from backends.local.generate import generate

    for bias in args.bias or ["auto"]:
        value = found["markup_bias"] if bias == "auto" else float(bias)
        started = time.perf_counter()
        answers = generate(  # one at a time: copy-ahead decoding, the same answers, faster
            model, tokenizer, chats, faithful=True, markup_bias=value, batch_size=1
        )
        seconds = time.perf_counter() - started
        for row, answer in zip(table, answers, strict=True):
            row[f"bias {value:g}"] = repair(answer, row["plain"])
        print(f"bias {value:g}: {len(answers)} chunks in {seconds:.0f} s")
    print("\n".join(summary_lines(score_answer_rows(table))))


if __name__ == "__main__":
    main()
