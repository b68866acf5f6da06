"""Quality on real articles: the whole pipeline on ``../shared/corpora/``, then the table.

Ingests every corpus folder of Medium-export posts (or the first ``--articles`` of them, in
file-name order), exports (split by article), fine-tunes and evaluates with the chosen profile,
in its own data dir (default ``data/bench-quality``), and prints the evaluation table. The
goal (issue 4): the fine-tuned model's faithful CER below both identity and the base model
one-shot with intervals that do not overlap, and overall structure F1 >= 0.8.

    .venv/bin/python bench/quality.py                         # every article, profile "full"
    .venv/bin/python bench/quality.py --articles 60 --profile quick

Runs take long on 2 cores (training is ~180 tokens/s): run it alone on a quiet machine.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=None, help="post files to use (all)")
    parser.add_argument("--profile", default="full", help="settings profile or YAML path")
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "bench-quality"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
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
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
