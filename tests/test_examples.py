"""Chunking at block boundaries and the article-level split."""

from __future__ import annotations

import random
import re
from collections import Counter

from config.settings import ExamplesSettings
from core.chunks import chunk_markdown, greedy, pack, split_block, split_blocks
from core.markdown import markdown_to_plain
from core.tokens import count_tokens
from tasks.examples import article_examples, assign_splits, build_examples

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


def test_a_code_block_over_budget_is_cut_at_its_lines_and_fenced_again():
    code = "```python\n" + "".join(f"x{i} = {i}\n" for i in range(31)) + "```"
    chunks = chunk_markdown(f"Intro.\n\n{code}\n\nOutro.", max_tokens=40)
    assert chunks[0] == "Intro." and len(chunks) >= 4
    body = []
    for chunk in chunks[1:]:
        assert count_tokens(chunk) <= 40
        lines = chunk.removesuffix("\n\nOutro.").split("\n")
        assert lines[0] == "```python" and lines[-1] == "```"
        body += lines[1:-1]
    assert body == [f"x{i} = {i}" for i in range(31)]  # every line once, in order
    assert chunks[-1] == "```python\nx30 = 30\n```\n\nOutro."  # the last piece packs on


def test_a_list_is_cut_at_its_top_level_items_and_each_piece_is_numbered_from_one():
    """A chunk is read on its own: its plain text cannot show that a list went on from an
    earlier chunk, so each piece of a cut ordered list counts from 1 (its first piece keeps
    the author's start), its items' other lines re-indented to the new markers."""
    items = [f"{i}. item number {i}\n{' ' * len(f'{i}. ')}- its child {i}" for i in range(1, 13)]
    pieces = split_block("\n".join(items), max_tokens=30)
    assert len(pieces) > 2 and all(count_tokens(p) <= 30 for p in pieces)
    children = [re.findall(r"- its child (\d+)", piece) for piece in pieces]
    assert [kid for kids in children for kid in kids] == [str(i) for i in range(1, 13)]
    for piece, kids in zip(pieces, children, strict=True):
        expected = [f"{n}. item number {kid}\n{' ' * len(f'{n}. ')}- its child {kid}"
                    for n, kid in enumerate(kids, 1)]  # fmt: skip
        assert piece == "\n".join(expected)
        assert markdown_to_plain(piece).count("its child") == len(kids)  # children kept
    assert split_block("3. c\n4. d", max_tokens=30) == ["3. c\n4. d"]  # not cut: as written
    later = split_block("\n".join(f"{i}. item number {i}" for i in range(5, 17)), max_tokens=20)
    assert later[0].startswith("5. ") and all(p.startswith("1. ") for p in later[1:])


def test_a_table_is_cut_at_its_rows_with_the_header_repeated():
    rows = [f"| {i} | value {i} |" for i in range(12)]
    table = "\n".join(["| n | v |", "| --- | --- |", *rows])
    pieces = split_block(table, max_tokens=40)
    assert len(pieces) > 1 and all(count_tokens(p) <= 40 for p in pieces)
    assert all(p.startswith("| n | v |\n| --- | --- |\n") for p in pieces)
    assert [line for p in pieces for line in p.split("\n")[2:]] == rows


def test_a_quote_is_cut_at_its_lines_without_blank_quote_lines_or_dangling_breaks():
    ends = {1: "\\", 2: "\\", 3: ""}  # two lines with a hard break, a line, a blank line
    lines = [f"> line {i} of the quote{ends[i % 4]}" if i % 4 else ">" for i in range(1, 16)]
    quote = "\n".join([*lines, "> line 15, the end."])
    pieces = split_block(quote, max_tokens=20)
    assert len(pieces) > 1
    for piece in pieces:
        assert piece.startswith("> line") and not piece.endswith(("\\", ">"))
        assert split_blocks(piece) == [piece]
    words = " ".join(markdown_to_plain(p) for p in pieces).split()
    assert words == markdown_to_plain(quote).split()


def test_a_paragraph_is_cut_at_sentences_never_inside_emphasis_or_before_a_marker():
    text = "First one here. *Second. Still emphasis.* Third 1. Not a list. " * 4 + "End."
    pieces = split_block(text.strip(), max_tokens=20)
    assert len(pieces) > 1
    assert " ".join(pieces) == text.strip()  # cut at single spaces: the text is all there
    for piece in pieces:
        assert piece.count("*") % 2 == 0  # emphasis whole
        assert split_blocks(piece) == [piece] and not piece.startswith("Not")  # no "1. Not"
        assert count_tokens(piece) <= 20


def test_a_paragraph_without_sentences_is_cut_at_words():
    text = " ".join(["sound die party asked sleep"] * 40)
    pieces = split_block(text, max_tokens=50)
    assert len(pieces) >= 4 and all(count_tokens(p) <= 50 for p in pieces)
    assert " ".join(pieces) == text


def test_what_cannot_be_cut_stays_one_oversized_chunk():
    long_line = "```\n" + "x" * 400 + "\n```"
    assert chunk_markdown(f"Intro.\n\n{long_line}\n\nOutro.", max_tokens=20) == [
        "Intro.",
        long_line,
        "Outro.",
    ]
    heading = "# " + "word " * 50
    assert split_block(heading.strip(), max_tokens=10) == [heading.strip()]


def one_at_a_time(units: list[str], max_tokens: int) -> list[str]:
    """Greedy packing as the definition reads: add units while the piece still fits."""
    pieces, current = [], []
    for unit in units:
        if current and count_tokens(" ".join([*current, unit])) > max_tokens:
            pieces.append(" ".join(current))
            current = []
        current.append(unit)
    return [*pieces, " ".join(current)] if current else pieces


def test_greedy_fills_each_piece_with_few_counts(monkeypatch):
    """Each piece is full (its next unit would not fit) and, where counts grow with the units
    (words joined by spaces), the pieces are those of adding one unit at a time; a piece of
    n units costs about 2 log2(n) counts, not n."""
    import core.chunks

    rng = random.Random(7)
    vocabulary = ["a", "tool", "hammers,", "saws.", "Thereafter", "x1", "—", "don't"]
    counted = []

    def counting(text: str) -> int:
        counted.append(text)
        return count_tokens(text)

    monkeypatch.setattr(core.chunks, "count_tokens", counting)
    for budget in (1, 7, 40, 300):
        units = [rng.choice(vocabulary) for _ in range(rng.randrange(1, 400))]
        counted.clear()
        pieces = greedy(units, " ".join, budget)
        assert pieces == one_at_a_time(units, budget)
        assert len(counted) <= 2 * len(pieces) * (2 + (len(units) // len(pieces)).bit_length())
        ends = [len(" ".join(pieces[: i + 1]).split()) for i in range(len(pieces) - 1)]
        for piece, end in zip(pieces, ends, strict=False):
            assert count_tokens(f"{piece} {units[end]}") > budget  # the next unit overflows


def test_pack_takes_the_smallest_budget_that_needs_no_more_pieces():
    """Five one-token words at 4 tokens: greedy fills 4 and leaves 1; the budget is searched
    down to 3, the smallest that still makes two pieces (2 would make three)."""
    words = list("abcde")
    assert greedy(words, " ".join, 4) == ["a b c d", "e"]
    assert len(greedy(words, " ".join, 2)) == 3
    assert pack(words, " ".join, 4) == ["a b c", "d e"]
    assert pack(words[:3], " ".join, 4) == ["a b c"]  # one piece: as it is


def test_chunks_are_as_even_as_the_blocks_allow():
    """An article a little over the budget is two chunks of about half, not a full one and
    a stray last paragraph (whose CER would weigh like a whole chunk's in the mean)."""
    paragraphs = [f"Paragraph number {i} says a few words." for i in range(10)]
    nine = count_tokens("\n\n".join(paragraphs[:9]))  # greedy: 9 paragraphs, then 1
    chunks = chunk_markdown("\n\n".join(paragraphs), max_tokens=nine)
    assert "\n\n".join(chunks) == "\n\n".join(paragraphs)
    assert [chunk.count("Paragraph") for chunk in chunks] == [5, 5]


def test_a_heading_never_ends_a_chunk_nor_stands_alone_before_a_long_block():
    """A heading goes with the block it heads: greedy packing would end the first chunk with
    '## Second' (its paragraph did not fit), and leave '## Long' alone before a block over
    the budget; now the first goes with its paragraph and the second with the block's first
    piece, cut smaller to leave it room."""
    words = " ".join(f"Sentence {i} is here." for i in range(40))
    filler, more = ("Filler words go here. " * 5).strip(), ("More words here. " * 6).strip()
    doc = f"One short paragraph.\n\n{filler}\n\n## Second\n\n{more}"
    chunks = chunk_markdown(f"{doc}\n\n## Long\n\n{words}", max_tokens=48)
    assert all(not chunk.split("\n\n")[-1].startswith("#") for chunk in chunks)
    assert chunks[1].startswith("## Second\n\nMore words")
    assert chunks[2].startswith("## Long\n\nSentence 0 is here.")
    assert all(count_tokens(chunk) <= 48 for chunk in chunks)
    full = f"{doc}\n\n## Long\n\n{words}"
    more = ("More words here. " * 10).strip()  # fits with its heading, not with the intro too
    assert chunk_markdown(f"Intro.\n\n## Why\n\n{more}", max_tokens=44) == [
        "Intro.", f"## Why\n\n{more}"
    ]  # fmt: skip
    assert re.sub(r"\s+", " ", " ".join(chunks)) == re.sub(r"\s+", " ", full)  # all, in order


def test_plain_text_keeps_a_heading_line_with_the_block_after_it():
    """``pgpt format`` cuts plain text as the examples were cut: a short unpunctuated line
    (a heading to the rules) does not end a chunk."""
    from core.chunks import chunk_plain

    body = "A line of the body that goes on for a while."
    plain = f"{body}\n{body}\n\nThe next part\n\n{body}\n{body}"
    chunks = chunk_plain(plain, max_tokens=2 * count_tokens(body) + 8)
    assert chunks == [f"{body}\n{body}", f"The next part\n\n{body}\n{body}"]


def test_at_most_max_chunks_per_article_spread_through_it():
    article = {"id": "a", "markdown": "\n\n".join(f"Paragraph {i}." for i in range(20))}
    every = article_examples(article, "train", max_tokens := 4)
    assert len(every) == 20
    some = article_examples(article, "train", max_tokens, max_chunks=4)
    assert [r["chunk"] for r in some] == [0, 6, 13, 19]
    assert [r["markdown"] for r in some] == [every[i]["markdown"] for i in (0, 6, 13, 19)]


def test_chunk_plains_concatenate_to_the_article_plain():
    chunks = chunk_markdown(DOC, max_tokens=16)
    assert "\n\n".join(markdown_to_plain(c) for c in chunks) == markdown_to_plain(DOC)


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
        articles, ExamplesSettings(chunk_tokens=16, test_fraction=0.2, valid_fraction=0.2, seed=1)
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


def test_a_table_without_rows_or_a_block_of_another_kind_is_left_whole():
    header = "| " + " | ".join(f"column {i}" for i in range(40)) + " |"
    table = header + "\n|" + " --- |" * 40
    assert split_block(table, max_tokens=20) == [table]
    html = "<div>\n" + "<p>x</p>\n" * 40 + "</div>"
    assert split_block(html, max_tokens=20) == [html]


def test_pack_fills_a_piece_up_to_exactly_its_budget():
    """A piece of exactly ``max_tokens`` tokens is full, not over: ``>`` and not ``>=``."""
    from core.chunks import pack

    words = ["one", "two", "three", "four", "five"]
    sizes = [count_tokens(" ".join(words[:n])) for n in range(1, 6)]
    assert sizes == [1, 2, 3, 4, 5]  # one cl100k token a word here
    assert pack(words, " ".join, max_tokens=2) == ["one two", "three four", "five"]
    assert pack(words, " ".join, max_tokens=5) == [" ".join(words)]
    assert pack(["a very long unit over budget", "b"], " ".join, max_tokens=2) == [
        "a very long unit over budget", "b"
    ]  # fmt: skip
