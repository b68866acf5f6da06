"""Chunking at block boundaries and the article-level split."""

from __future__ import annotations

from collections import Counter

from tasks.clean import markdown_to_plain
from tasks.examples import (
    assign_splits,
    build_examples,
    chunk_markdown,
    split_blocks,
)
from tasks.tokens import count_tokens

DOC = """# Title

A first paragraph with *emphasis*.

```python
def f():

    return 1
```

- one
- two
  - nested

| a | b |
| --- | --- |
| 1 | 2 |

> quoted"""


def test_split_blocks_keeps_code_lists_and_tables_whole():
    assert split_blocks(DOC) == [
        "# Title",
        "A first paragraph with *emphasis*.",
        "```python\ndef f():\n\n    return 1\n```",
        "- one\n- two\n  - nested",
        "| a | b |\n| --- | --- |\n| 1 | 2 |",
        "> quoted",
    ]


def test_chunks_respect_the_budget_and_block_boundaries():
    chunks = chunk_markdown(DOC, max_tokens=16)
    assert "\n\n".join(chunks) == DOC  # nothing lost, nothing reordered
    blocks = split_blocks(DOC)
    for chunk in chunks:
        assert split_blocks(chunk) == [b for b in blocks if b in chunk]
        assert count_tokens(chunk) <= 16 or len(split_blocks(chunk)) == 1


def test_a_block_over_budget_is_a_chunk_of_its_own():
    code = "```\n" + "x = 1\n" * 50 + "```"
    chunks = chunk_markdown(f"Intro.\n\n{code}\n\nOutro.", max_tokens=20)
    assert chunks == ["Intro.", code, "Outro."]


def test_chunk_plains_concatenate_to_the_article_plain():
    chunks = chunk_markdown(DOC, max_tokens=16)
    assert "\n".join(markdown_to_plain(c) for c in chunks) == markdown_to_plain(DOC)


def test_splits_are_deterministic_stable_and_near_the_fractions():
    ids = [f"article-{i}" for i in range(1000)]
    splits = assign_splits(ids, test_fraction=0.1, valid_fraction=0.1, seed=42)
    assert splits == assign_splits(list(reversed(ids)), 0.1, 0.1, 42)
    counts = Counter(splits.values())
    assert 70 <= counts["test"] <= 130 and 70 <= counts["valid"] <= 130
    grown = assign_splits([*ids, "a-new-one"], 0.1, 0.1, 42)
    assert {i: grown[i] for i in ids} == splits  # adding an article moves no other
    assert assign_splits(ids, 0.1, 0.1, seed=7) != splits


def test_small_datasets_still_get_a_test_and_a_valid_article():
    for n in (2, 3, 5, 12):
        counts = Counter(assign_splits([f"x{i}" for i in range(n)], 0.1, 0.1, 42).values())
        assert counts["test"] >= 1 and counts["train"] >= 1
        assert counts["valid"] >= (1 if n >= 3 else 0)


def test_build_examples_keeps_each_article_in_one_split():
    articles = [{"id": f"a{i}", "markdown": DOC} for i in range(6)]
    rows = build_examples.fn(
        articles, {"chunk_tokens": 16, "test_fraction": 0.2, "valid_fraction": 0.2, "seed": 1}
    )
    per_article = {}
    for row in rows:
        per_article.setdefault(row["article_id"], set()).add(row["split"])
        assert row["plain"] == markdown_to_plain(row["markdown"])
        assert row["markdown_tokens"] == count_tokens(row["markdown"])
    assert all(len(s) == 1 for s in per_article.values())
    assert [r["chunk"] for r in rows if r["article_id"] == "a0"] == list(
        range(len(chunk_markdown(DOC, 16)))
    )
