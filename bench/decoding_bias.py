"""A fine-tune's decoding biases: what its valid split chose, and what other biases would do.

For a trained local model, prints the calibration on the valid split
(``backends.local.calibrate``: the scaffold biases, then the markup bias; ``--saved``: none,
"auto" is then the biases the model was saved with), then generates the
test chunks (spread over the test split, as the evaluation takes them; ``--split valid``:
the valid chunks) in faithful mode once per setting, repaired as the evaluation repairs them,
and prints CER, gap closed and visible F1 for each, with identity, the ceiling, the rules and
the author's rules as anchors, and each setting's paired CER difference against them. The
test figures are for reading only: a model decodes with the biases its valid split chose
("auto"). A setting is ``SCAFFOLD_BIAS/BLOCK_BIAS/MARKUP_BIAS``, each logits or auto (the
scaffold bias inside lines, the block bias where a block's kind is decided:
``backends.local.faithful``); ``SCAFFOLD_BIAS/MARKUP_BIAS`` is one scaffold bias for both.

    .venv/bin/python bench/decoding_bias.py --data-dir data --model MODEL_ID --bias auto/auto \
        --bias 0/auto --bias 0/0
    .venv/bin/python bench/decoding_bias.py --data-dir D --model ID --bias auto/auto --chunks 32
    .venv/bin/python bench/decoding_bias.py --data-dir D --model ID --split valid --chunks 24 \
        --saved --bias 1/auto --bias 3/auto   # would departures the model is surer of pay?
    .venv/bin/python bench/decoding_bias.py --data-dir D --model ID --split valid --chunks 24 \
        --saved --bias auto/8/auto   # inline departures only: blocks held to the scaffold
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


BIASES = ("scaffold_bias", "block_bias", "markup_bias")  # a setting's parts, in its order


def biases(setting: str, found: dict) -> tuple[float, float, float]:
    """``(scaffold, block, markup)`` of a setting, "auto" taken from ``found``; a two-part
    setting is one scaffold bias for both (a model saved without a block bias has that).

    >>> biases("auto/8/0.5", {"scaffold_bias": 1.0})
    (1.0, 8.0, 0.5)
    >>> biases("2/auto", {"markup_bias": 0.25})
    (2.0, 2.0, 0.25)
    """
    parts = setting.split("/")
    if len(parts) == 2:
        parts = [parts[0], parts[0], parts[1]]
    values = dict(zip(BIASES, parts, strict=True))
    if values["block_bias"] == "auto" and "block_bias" not in found:
        values["block_bias"] = values["scaffold_bias"]
    return tuple(  # type: ignore[return-value]
        float(found[key]) if value == "auto" else float(value) for key, value in values.items()
    )


def bias_setting(text: str) -> str:
    """A ``--bias`` value as typed, once it reads as two or three parts of logits or auto."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(part == "auto" or _number(part) for part in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: write SCAFFOLD/MARKUP or SCAFFOLD/BLOCK/MARKUP, each logits or auto"
        )
    return text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--model", required=True, help="a fine-tuned local model id")
    parser.add_argument(
        "--bias", action="append", default=[], type=bias_setting,
        help="SCAFFOLD[/BLOCK]/MARKUP logits or auto; repeat",
    )  # fmt: skip
    parser.add_argument("--chunks", type=int, default=32, help="chunks (32, as the bench)")
    parser.add_argument("--split", default="test", choices=("test", "valid"))
    parser.add_argument(
        "--saved", action="store_true", help="auto: the model's saved biases (no calibration)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from backends.local import LocalBackend
    from backends.local.calibrate import calibrate
    from bench.quality import decoding_line, score_answer_rows, summary_lines
    from config.settings import FinetuneSettings
    from core.chat_data import read_chats
    from core.faithful import repair
    from core.rules import rules_markdown
    from core.sample import spread
    from tasks.evaluate import conversations
    from tasks.evaluate.metrics import paired_comparisons

    backend = LocalBackend(args.data_dir, FinetuneSettings(threads=0))
    model, tokenizer = backend.load(args.model)
    job = backend.run_folder(args.model).read_job()
    started = time.perf_counter()
    settings = FinetuneSettings.model_validate(job.settings)  # as training calibrates
    scaffold = getattr(model, "scaffold", "none")
    if args.saved:  # the biases the model decodes with, as training chose them
        found = {key: getattr(model, key, 0.0) for key in BIASES}
    else:
        found = calibrate(
            model, tokenizer, job.valid, scaffold, settings.max_valid_examples,
            settings.check_valid_examples,
        )  # fmt: skip
        print(f"valid split: {decoding_line(found)} ({time.perf_counter() - started:.0f} s)")
    rows = read_chats(Path(job.train).with_name(f"{args.split}.jsonl"))
    if args.split == "valid":  # the chunks the calibration weighs; --chunks 24: its check's
        rows = spread(rows, settings.max_valid_examples)
    rows = spread(rows, args.chunks)
    examples = [{"plain": m[-2]["content"], "reference": m[-1]["content"]} for m in rows]
    table = [{"index": i, **e, "identity": e["plain"]} for i, e in enumerate(examples)]
    for row in table:
        row["rules"] = rules_markdown(row["plain"])
        if callable(scaffold):  # the author's rules: what the model reads
            row["author_rules"] = scaffold(row["plain"])
    chats = conversations(examples, rows[0][0]["content"])
    from backends.local.generate import generate

    names: list[str] = []  # one per setting: its answers' column
    for setting in args.bias or ["auto/auto/auto"]:
        follow, block, markup = biases(setting, found)
        started = time.perf_counter()
        answers = generate(  # one at a time: copy-ahead decoding, the same answers, faster
            model, tokenizer, chats, faithful=True, markup_bias=markup, scaffold_bias=follow,
            block_bias=block, batch_size=1,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        name = f"s{follow:g}/b{block:g}/m{markup:g}"
        names.append(name)
        for row, answer in zip(table, answers, strict=True):
            row[name] = repair(answer, row["plain"])
        print(f"{name} (scaffold/block/markup bias): {len(answers)} chunks in {seconds:.0f} s")
    metrics = score_answer_rows(table)
    metrics["paired_cer"] = [
        paired for name in names for paired in paired_comparisons(metrics["models"], name)
    ]
    print("\n".join(summary_lines(metrics)))


if __name__ == "__main__":
    main()
