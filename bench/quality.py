"""Quality on real articles: the whole pipeline on ``../shared/corpora/``, then the table.

Ingests every corpus folder of Medium-export posts (or the first ``--articles`` of them, in
file-name order), exports (split by article), fine-tunes and evaluates with the chosen profile,
in its own data dir (default ``data/bench-quality``), and prints the evaluation table. The
goal (issue 4): the fine-tuned model's faithful CER below both identity and the base model
one-shot with intervals that do not overlap, and overall structure F1 >= 0.8.

    .venv/bin/python bench/quality.py                         # every article, profile "full"
    .venv/bin/python bench/quality.py --articles 60 --profile quick

After the table it prints what the table cannot show: per-kind structure F1 (micro, over
all scored chunks) of each model, and the **ceiling** of a model that gets every visible
element right but cannot see emphasis or strong (the plain text carries no trace of them):
the reference with its ``*``/``**`` removed. ``--answers DIR/reports/<run>/answers.jsonl``
prints these for an earlier run without running anything.

Runs take long on 2 cores (training is ~180 tokens/s): run it alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"


def corpus_posts(limit: int | None) -> list[Path]:
    """The corpora's post files, in name order (the first ``limit`` of them)."""
    posts = sorted(CORPORA.glob("*/posts/*.html"))
    if not posts:
        sys.exit(f"no posts under {CORPORA}: this benchmark needs ../shared/corpora/")
    return posts[:limit] if limit else posts


STRONG_OR_EMPHASIS = re.compile(r"(?<!\\)(\*\*|\*)(?=\S)(.+?)(?<=\S)(?<!\\)\1")


def without_invisible(markdown: str) -> str:
    r"""The Markdown with emphasis and strong markers removed (the text kept).

    >>> print(without_invisible(r"A **bold** and *light* word, ***both***, \*not\*."))
    A bold and light word, both, \*not\*.
    """
    previous = None
    while previous != markdown:  # nested: ***both*** or **a *b* c**
        previous, markdown = markdown, STRONG_OR_EMPHASIS.sub(r"\2", markdown)
    return markdown


def print_breakdown(answers_path: Path) -> None:
    """Per-kind F1 of every model in an answers.jsonl, and the no-emphasis ceiling."""
    from tasks.evaluate import bootstrap_interval, score_example, structure_by_kind

    rows = [json.loads(line) for line in answers_path.read_text().splitlines()]
    models = [k for k in rows[0] if k not in ("index", "plain", "reference") and "_cer" not in k]
    answers = {name: [r[name] for r in rows] for name in models}
    answers["ceiling"] = [without_invisible(r["reference"]) for r in rows]
    print(f"\nstructure F1 per kind, micro over {len(rows)} chunks (reference count):")
    scores = {
        name: [score_example(p, r["reference"], r["plain"]) for p, r in zip(ps, rows, strict=True)]
        for name, ps in answers.items()
    }
    for name, model_scores in scores.items():
        shown = ", ".join(
            f"{kind} {'-' if v['f1'] is None else format(v['f1'], '.2f')} ({v['reference']})"
            for kind, v in structure_by_kind(model_scores).items()
        )
        print(f"  {name}: {shown}")
    cer = bootstrap_interval([s["cer"] for s in scores["ceiling"]])
    f1 = sum(s["structure_f1"] for s in scores["ceiling"]) / len(rows)
    print(
        f"ceiling (every visible element right, no emphasis/strong): CER {cer['mean']:.4f}"
        f" [{cer['low']:.4f}, {cer['high']:.4f}], structure F1 {f1:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=None, help="post files to use (all)")
    parser.add_argument("--profile", default="full", help="settings profile or YAML path")
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench-quality"))
    parser.add_argument("--answers", type=Path, help="only print the breakdown of this file")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.answers:
        print_breakdown(args.answers)
        return
    from config.runtime import results_in
    from flows.retrain import retrain
    from pgpt import _print_evaluation

    posts = corpus_posts(args.articles)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "posts"
        source.mkdir()
        for post in posts:  # one folder: ingest reads it as a Medium export
            shutil.copy(post, source / post.name)
        with results_in(args.data_dir):
            result = retrain([str(source)], args.profile, args.data_dir)
    _print_evaluation(result["evaluate"])
    print_breakdown(Path(result["evaluate"]["report_dir"]) / "answers.jsonl")
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
