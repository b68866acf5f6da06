"""The author's rules against the general rules on a data dir's valid (or test) split.

Counts the author's rules (``core/author_rules.py``) from the exported train split, formats
every chunk of the chosen split with both, and prints the quality table (CER, gap closed,
visible F1, per kind, with 95 % intervals) beside identity and the ceiling, with the seconds
the counting and the formatting took. No model, no GPU: seconds on 2 cores, so the rules'
settings can be chosen on the valid split before anything is trained.

    .venv/bin/python bench/author_rules.py --data-dir DATA            # DATA/jsonl/valid.jsonl
    .venv/bin/python bench/author_rules.py --data-dir DATA --split test
    .venv/bin/python bench/author_rules.py --data-dir DATA --folds 5

DATA is a data dir after ``pgpt export`` (``bench/quality.py``'s, for example).

``--folds K`` cross-validates instead: the articles of the train and valid splits (never the
test split's) are dealt into K folds, the author's rules are counted from K - 1 of them and
format the chunks of the other, and the K folds' answers are scored together. Every train or
valid chunk is formatted once by rules that never saw its article: a steadier measure for
choosing the rules' settings than a valid split of a few dozen chunks, where one article with
a habit of its own moves the figure (the folds' spread is printed too). The folds also print
what each of the most frequent confusions is worth: the gap closed if the lines of that
confusion (a quote written as a paragraph, say) were given the author's kind and nothing else
changed, and if every line were (what line kinds alone can reach). A confusion of many lines
may cost few characters; this says where the characters are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--folds", type=int, default=0, help="cross-validate over K folds")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.folds:
        cross_validate(args.data_dir, args.folds)
        return
    from core.chat_data import chat_examples
    from tasks.evaluate import computing_function

    jsonl = args.data_dir / "jsonl"
    if not (jsonl / "train.jsonl").is_file():
        sys.exit(f"{jsonl / 'train.jsonl'} not found: run `pgpt --data-dir {args.data_dir} export`")
    train, chunks = (chat_examples(jsonl / f"{s}.jsonl") for s in ("train", args.split))
    started = time.perf_counter()
    author = computing_function("author_rules", args.data_dir)  # as the evaluation counts them
    counted = time.perf_counter() - started
    started = time.perf_counter()
    rows = answer_rows([(e["plain"], e["reference"]) for e in chunks], author)
    formatted = time.perf_counter() - started
    print(
        f"{len(train)} train chunks counted in {counted:.1f} s ({len(author.counts)} contexts); "
        f"{len(rows)} {args.split} chunks formatted by both in {formatted:.1f} s"
    )
    print_scores(rows)


def answer_rows(pairs: list[tuple[str, str]], author: Callable[[str], str]) -> list[dict]:
    """Each (plain text, reference) with identity's, the rules' and the author's rules' answers."""
    from core.rules import rules_markdown

    return [
        {"index": i, "plain": plain, "reference": reference, "identity": plain,
         "rules": rules_markdown(plain), "author_rules": author(plain)}
        for i, (plain, reference) in enumerate(pairs)
    ]  # fmt: skip


def print_scores(rows: list[dict], confusions_too: bool = False) -> None:
    """The quality table of the answers (CER, gap closed, visible F1, paired differences)."""
    from bench.quality import score_answer_rows, summary_lines
    from tasks.evaluate.metrics import paired_comparisons

    metrics = score_answer_rows(rows)
    metrics["paired_cer"] = paired_comparisons(
        metrics["models"], model="author_rules", samples=2000, confidence=0.95
    )
    print("\n".join(summary_lines(metrics)))
    if confusions_too:
        print("lines the author's rules gave another kind (reference -> theirs), most frequent:")
        found = confusions(rows).most_common(12)
        print(", ".join(f"{ref} -> {got} {n}" for (ref, got), n in found))
        print_worth(rows, [pair for pair, _ in found[:6]])
    print(json.dumps({"command": " ".join(sys.argv)}))


def article_folds(article_ids: list[str], k: int) -> dict[str, int]:
    """Each article's fold: the articles in id order dealt round, so folds differ by at most
    one article (ids are content hashes, so the order is a shuffle that stays the same).

    >>> article_folds(["c", "a", "b", "a"], 2)
    {'a': 0, 'b': 1, 'c': 0}
    """
    return {article: i % k for i, article in enumerate(sorted(set(article_ids)))}


def cross_validate(data_dir: Path, k: int) -> None:
    """Print the author's rules' quality over ``k`` folds of the train and valid articles."""
    import pandas as pd

    from bench.quality import score_answer_rows
    from core.author_rules import AuthorRules

    parquet = data_dir / "parquet" / "examples.parquet"
    if not parquet.is_file() or k < 2:
        sys.exit(f"--folds needs K >= 2 and {parquet}: run `pgpt --data-dir {data_dir} export`")
    chunks = pd.read_parquet(parquet).query("split != 'test'")
    fold = chunks["article_id"].map(article_folds(list(chunks["article_id"]), k))
    rows, gaps = [], []
    for f in range(k):
        held, counted = chunks[fold == f], chunks[fold != f]
        author = AuthorRules.fit(zip(counted["plain"], counted["markdown"], strict=True))
        answers = answer_rows(list(zip(held["plain"], held["markdown"], strict=True)), author)
        scored = score_answer_rows(answers, samples=200)["models"]["author_rules"]
        gaps.append(f"{scored['gap_closed']['mean']:.2f}" if scored["gap_closed"] else "-")
        rows += answers
    print(
        f"{k} folds of {chunks['article_id'].nunique()} articles ({len(rows)} train and valid "
        f"chunks); the author's rules' gap closed per fold: {', '.join(gaps)}"
    )
    print_scores(rows, confusions_too=True)


def confusions(rows: list[dict]) -> Counter[tuple[str, str]]:
    """How often a line of the reference in one kind (``core.author_rules.line_kinds``) was
    another kind in the author's rules' answer: what is left to learn, by kind."""
    from core.author_rules import line_kinds

    found: Counter[tuple[str, str]] = Counter()
    for row in rows:
        reference, answer = line_kinds(row["reference"]), line_kinds(row["author_rules"])
        if [line for line, _ in reference] == [line for line, _ in answer]:  # else edited
            pairs = zip(reference, answer, strict=True)
            found.update((ref, got) for (_, ref), (_, got) in pairs if ref != got)
    return found


def corrected(plain: str, reference: str, answer: str, fixed: set[tuple[str, str]] | None) -> str:
    """``answer`` (Markdown of ``plain`` built from line kinds, as the rules write it) with
    each line whose (reference kind, answer kind) is in ``fixed`` (None: every line) given
    the reference's kind (``core.author_rules.line_kinds``); ``answer`` itself where the
    reference does not read as ``plain`` line for line.

    >>> plain = "Wise words.\\n\\nhammers\\nsaws"
    >>> answer = "Wise words.\\n\\n1. hammers\\n2. saws"
    >>> reference = "> Wise words.\\n\\n- hammers\\n- saws"
    >>> print(corrected(plain, reference, answer, {("quote", "para")}))
    > Wise words.
    <BLANKLINE>
    1. hammers
    2. saws
    """
    from core.author_rules import line_kinds
    from core.rules import markdown_of, spanned

    lines = plain.split("\n")
    wanted, given = line_kinds(reference), line_kinds(answer)
    nonblank = [line for line in lines if line]
    if [line for line, _ in wanted] != nonblank or [line for line, _ in given] != nonblank:
        return answer
    chosen = iter(
        ("para" if ref == "html" else ref) if fixed is None or (ref, got) in fixed else got
        for (_, ref), (_, got) in zip(wanted, given, strict=True)
    )
    return markdown_of(lines, spanned([next(chosen) if line else "blank" for line in lines]))


def print_worth(rows: list[dict], pairs: list[tuple[str, str]]) -> None:
    """The author's rules' gap closed with each confusion in ``pairs`` corrected alone, and
    with every line corrected: what each is worth in characters, and the reach of line kinds."""
    from bench.quality import score_answer_rows

    fixes: dict[str, set[tuple[str, str]] | None] = {f"{a} -> {b}": {(a, b)} for a, b in pairs}
    fixes["every line"] = None
    worth = [
        {"plain": r["plain"], "reference": r["reference"], "identity": r["plain"]}
        | {name: corrected(r["plain"], r["reference"], r["author_rules"], fixed)
           for name, fixed in fixes.items()}
        for r in rows
    ]  # fmt: skip
    scored = score_answer_rows(worth, samples=200)["models"]
    gaps = [f"{name} {scored[name]['gap_closed']['mean']:.3f}" for name in fixes]
    print("the author's rules' gap closed with these lines given the author's kind:")
    print(", ".join(gaps))


if __name__ == "__main__":
    main()
