"""Chunks: a text cut at block boundaries into pieces of at most so many tokens.

An article's Markdown is cut into its top-level blocks (markdown-it's block tokens: a
paragraph, a heading, a whole list, a whole code block, a whole table, a whole quote), then
blocks are packed into as few chunks of at most ``max_tokens`` cl100k tokens of Markdown as
greedy packing makes, as even as the blocks allow, each heading with the block it heads. A
block over the budget is first cut into blocks of its own kind: a code block at its lines
(fenced again), a list at its items, a table at its rows (header repeated), a quote at its
lines, a paragraph at its sentences; only what cannot be cut (one long line or item) stays
over the budget. Plain text (what ``pgpt format`` reads) is cut the same way at its blank
lines. The training examples (``tasks.examples``) and ``pgpt format`` share this, so a model
reads chunks like the ones it was trained on; it imports no Prefect and no torch.

>>> chunk_markdown("# Title\\n\\nOne.\\n\\n- a\\n- b", max_tokens=5)
['# Title\\n\\nOne.', '- a\\n- b']
>>> chunk_markdown("# Title\\n\\nOne.\\n\\n- a\\n- b", max_tokens=4)  # the list is cut
['# Title', 'One.', '- a', '- b']
>>> chunk_plain("Title\\nOne.\\nTwo.", max_tokens=4)
['Title\\nOne.', 'Two.']
"""

from __future__ import annotations

import re
from collections.abc import Callable

from core.markdown import MD
from core.rules import is_short, unpunctuated
from core.tokens import count_tokens


def split_blocks(markdown: str) -> list[str]:
    """The top-level Markdown blocks, each as its source lines."""
    lines = markdown.split("\n")
    blocks = []
    for token in MD.parse(markdown):
        if token.level == 0 and token.map and token.nesting in (0, 1):
            start, end = token.map
            blocks.append("\n".join(lines[start:end]).strip("\n"))
    return [b for b in blocks if b.strip()]


def pack(units: list[str], render: Callable[[list[str]], str], max_tokens: int) -> list[str]:
    """Consecutive units grouped into as few pieces of at most ``max_tokens`` as greedy
    packing makes, and as even as the units allow: packed at the smallest budget that needs no
    more pieces, so an article of 400 tokens at 384 is two chunks of about 200, not 384 and a
    stray last sentence (a chunk of a few words is no example of anything, and its CER would
    weigh like a whole chunk's). A unit over the budget on its own is a piece of its own.

    >>> pack(["a", "b", "c"], " ".join, max_tokens=2)
    ['a b', 'c']
    >>> pack(["a", "b", "c", "d", "e"], " ".join, max_tokens=4)  # not 'a b c d', 'e'
    ['a b c', 'd e']
    """
    pieces = greedy(units, render, max_tokens)
    low, high = 0, max_tokens  # greedy needs more pieces at low, as few at high
    while len(pieces) > 1 and high - low > 1:
        middle = (low + high) // 2
        if len(greedy(units, render, middle)) <= len(pieces):
            high = middle
        else:
            low = middle
    return greedy(units, render, high) if len(pieces) > 1 else pieces


def greedy(units: list[str], render: Callable[[list[str]], str], max_tokens: int) -> list[str]:
    """Consecutive units in pieces whose ``render`` is at most ``max_tokens``, each filled
    before the next is begun (a unit over the budget on its own is a piece of its own).

    A piece's end is found by doubling its length while it fits, then halving the step back:
    a few counts a piece, where adding one unit at a time counted every prefix (a paragraph
    cut at its words is hundreds of units). A piece then fits and the same piece with its
    next unit does not; a shorter one may rarely not fit either (a BPE merge across a unit's
    edge can take a token back), which only makes the piece fuller.

    >>> greedy(["a", "b", "c", "d", "e"], " ".join, max_tokens=3)
    ['a b c', 'd e']
    """
    pieces: list[str] = []
    start = 0

    def grows(end: int) -> bool:  # units[start:end] exists and fits
        return end <= len(units) and fits(render(units[start:end]), max_tokens)

    while start < len(units):
        end, step = start + 1, 1  # units[start:end] is the piece: at least one unit
        while grows(end + step):
            end, step = end + step, 2 * step
        while step > 1:  # units[start:end + step] is over: the last fitting end lies within
            step //= 2
            if grows(end + step):
                end += step
        pieces.append(render(units[start:end]))
        start = end
    return pieces


def fits(text: str, max_tokens: int) -> bool:
    """Whether a text is at most ``max_tokens`` tokens."""
    return count_tokens(text) <= max_tokens


def cut_text(text: str, max_tokens: int) -> list[str]:
    r"""A paragraph's source as units: sentences, and words where a sentence is over budget.

    A cut is made only where it leaves no emphasis, code span or link open and where the
    next unit cannot start another kind of block (``- ``, ``1. ``, ``#``, ``>``, ...).

    >>> cut_text("One *two. Three* four. Five six.", max_tokens=100)
    ['One *two. Three* four. ', 'Five six.']
    >>> cut_text("One two three four five six seven. Eight.", max_tokens=4)
    ['One ', 'two ', 'three ', 'four ', 'five ', 'six ', 'seven. ', 'Eight.']
    """
    units = []
    for sentence in cut_at(text, SENTENCE_END):
        units += cut_at(sentence, SPACE) if count_tokens(sentence) > max_tokens else [sentence]
    return units


SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
SPACE = re.compile(r"\s+")
BLOCK_START = re.compile(r"([-+*]|\d+[.)])(\s|$)|#|>|```|~~~|\||=+\s*$|-+\s*$")


def cut_at(text: str, gap: re.Pattern) -> list[str]:
    """The text cut after each ``gap`` match that leaves no inline markup open (see cut_text)."""
    units: list[str] = []
    start = scanned = stars = ticks = brackets = 0
    for match in gap.finditer(text):
        segment = re.sub(r"\\.", "", text[scanned : match.start()])  # escaped \* is no markup
        scanned = match.start()
        stars, ticks = stars + segment.count("*"), ticks + segment.count("`")
        brackets += segment.count("[") - segment.count("]")
        balanced = stars % 2 == 0 and ticks % 2 == 0 and brackets == 0
        if balanced and match.end() < len(text) and not BLOCK_START.match(text, match.end()):
            units.append(text[start : match.end()])
            start = match.end()
    return [*units, text[start:]] if start < len(text) else units


def trim(lines: list[str], blank: str) -> list[str]:
    """The lines without the leading and trailing ones that are only ``blank`` (and spaces)."""
    kept = [i for i, line in enumerate(lines) if line.strip() not in ("", blank)]
    return lines[kept[0] : kept[-1] + 1] if kept else []


def unbreak(piece: str) -> str:
    r"""A piece without its surrounding whitespace and a hard line break (``\``) at its end.

    Cut there, the break would end the block and so be read as a literal backslash.
    """
    piece = piece.strip()
    return piece[:-1].rstrip() if piece.endswith("\\") and not piece.endswith("\\\\") else piece


def split_block(block: str, max_tokens: int) -> list[str]:
    r"""A block over the budget cut into blocks of the same kind that fit, where it can be cut.

    A fenced code block is cut at its lines (each piece fenced again), a list at its top-level
    items, a table at its rows (each piece repeats the header), a quote at its lines and a
    paragraph at its sentences (at its words, where a sentence alone is too long). A piece that
    cannot be cut further (one long line, one long item) stays over the budget; a block whose
    pieces would not parse as the same kind of block is not cut at all.

    >>> split_block("```py\nx = 1\ny = 2\n```", max_tokens=8)
    ['```py\nx = 1\n```', '```py\ny = 2\n```']
    >>> split_block("- a\n- b\n  - c", max_tokens=4)
    ['- a', '- b\n  - c']
    """
    if count_tokens(block) <= max_tokens:
        return [block]
    tokens = MD.parse(block)
    first, lines = tokens[0], block.split("\n")
    if first.type == "fence" and len(lines) > 2 and lines[-1].startswith(lines[0][:3]):
        head, tail = lines[0], lines[-1]
        pieces = pack(lines[1:-1], lambda ls: "\n".join([head, *ls, tail]), max_tokens)
    elif first.type in ("bullet_list_open", "ordered_list_open"):
        starts = [t.map[0] for t in tokens if t.type == "list_item_open" and t.level == 1]
        ends = [*starts[1:], len(lines)]
        items = ["\n".join(lines[a:b]) for a, b in zip(starts, ends, strict=True)]
        pieces = pack(items, lambda ls: "\n".join(ls).strip("\n"), max_tokens)
        pieces = pieces[:1] + [numbered_from_one(piece) for piece in pieces[1:]]
    elif first.type == "table_open":
        pieces = pack(lines[2:], lambda ls: "\n".join([*lines[:2], *ls]), max_tokens)
    elif first.type == "blockquote_open" and all(line.startswith(">") for line in lines):
        pieces = pack(lines, lambda ls: unbreak("\n".join(trim(ls, ">"))), max_tokens)
    elif first.type == "paragraph_open":
        pieces = pack(cut_text(block, max_tokens), lambda ls: unbreak("".join(ls)), max_tokens)
    else:
        return [block]
    same_kind = all(
        len(split_blocks(piece)) == 1 and MD.parse(piece)[0].type == first.type for piece in pieces
    )
    return pieces if pieces and same_kind else [block]


ITEM_NUMBER = re.compile(r"( {0,3})(\d{1,9})(?=[.)])")


def numbered_from_one(piece: str) -> str:
    r"""A piece of a cut ordered list numbered from 1, its items' other lines re-indented to
    the new markers: a chunk is read on its own, and its plain text cannot show that its
    list went on from an earlier chunk. Anything else is returned as it is.

    >>> print(numbered_from_one("9. nine\n10. ten\n    more of ten"))
    1. nine
    2. ten
       more of ten
    """
    tokens = MD.parse(piece)
    if not tokens or tokens[0].type != "ordered_list_open":
        return piece
    lines = piece.split("\n")
    items = [t.map for t in tokens if t.type == "list_item_open" and t.level == 1]
    for n, (start, end) in enumerate(items, 1):
        found = ITEM_NUMBER.match(lines[start])
        if not found:
            return piece
        shift = len(str(n)) - len(found[2])
        lines[start] = f"{found[1]}{n}{lines[start][found.end() :]}"
        for i in range(start + 1, end):
            if shift > 0 and lines[i]:
                lines[i] = " " * shift + lines[i]
            elif shift < 0 and lines[i].startswith(" " * -shift):
                lines[i] = lines[i][-shift:]
    renumbered = "\n".join(lines)
    return renumbered if same_blocks(renumbered, piece) else piece


def same_blocks(one: str, other: str) -> bool:
    """Whether two Markdown texts parse to the same blocks and text (a list's start aside)."""

    def shape(markdown: str) -> list[tuple[str, int, str]]:
        return [(t.type, t.level, t.content) for t in MD.parse(markdown)]

    return shape(one) == shape(other)


def chunk_markdown(markdown: str, max_tokens: int) -> list[str]:
    r"""Pack whole blocks into chunks of at most ``max_tokens`` tokens (:func:`pack`), each
    heading kept with the block it heads where the two fit (:func:`kept_with_next`).

    A block over the budget is first cut into pieces (:func:`split_block`); each piece but the
    last is a chunk of its own, so two pieces of one block never meet in a chunk. The headings
    just before such a block go with its first piece (:func:`cut_after`).
    """

    def packed(blocks: list[str]) -> list[str]:
        return pack(kept_with_next(blocks, is_heading, max_tokens), blank_joined, max_tokens)

    blocks: list[str] = []
    chunks: list[str] = []
    for block in split_blocks(markdown):
        blocks, pieces = cut_after(blocks, block, max_tokens)
        if len(pieces) > 1:
            chunks += [*packed(blocks), *pieces[:-1]]
            blocks = []
        blocks.append(pieces[-1])
    return chunks + packed(blocks)


def blank_joined(parts: list[str]) -> str:
    """Blocks joined as Markdown separates them, by one blank line."""
    return "\n\n".join(parts)


SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$", re.MULTILINE)


def is_heading(block: str) -> bool:
    """Whether a Markdown block is a heading (``## Why`` or a setext one).

    >>> is_heading("## Why"), is_heading("Why\\n==="), is_heading("Why - and how.")
    (True, True, False)
    """
    if "#" not in block and not SETEXT_UNDERLINE.search(block):
        return False  # neither kind of heading can be: no need to parse (chunking asks often)
    tokens = MD.parse(block)
    return bool(tokens) and tokens[0].type == "heading_open"


def kept_with_next(blocks: list[str], heads: Callable[[str], bool], max_tokens: int) -> list[str]:
    r"""The blocks as units to pack, each block that ``heads`` joined to the one after it where
    the two fit in ``max_tokens``: a heading does not end a chunk whose next one it heads.

    >>> kept_with_next(["Intro.", "## Why", "Because.", "## How"], is_heading, 100)
    ['Intro.', '## Why\n\nBecause.', '## How']
    """
    units: list[str] = []
    heading = False  # whether the last unit ends with a heading
    for block in blocks:
        if heading and count_tokens(blank_joined([units[-1], block])) <= max_tokens:
            units[-1] = blank_joined([units[-1], block])
        else:
            units.append(block)
        heading = heads(block)
    return units


def heading_line(block: str) -> bool:
    """Whether a block of plain text reads as a heading: one short line, no final punctuation."""
    return "\n" not in block and is_short(block) and unpunctuated(block)


def cut_after(blocks: list[str], block: str, max_tokens: int) -> tuple[list[str], list[str]]:
    r"""``block`` cut into pieces that fit (:func:`split_block`), with the headings that end
    ``blocks`` moved onto its first piece, cut smaller to leave them room (where that leaves
    at least half the budget): the blocks left before it, and the pieces.

    >>> cut_after(["Intro.", "## Why"], "One. Two. Three. Four. Five. Six.", max_tokens=9)
    (['Intro.'], ['## Why\n\nOne. Two. Three.', 'Four. Five. Six.'])
    """
    pieces = split_block(block, max_tokens)
    held = 0
    while held < len(blocks) and is_heading(blocks[-1 - held]):
        held += 1
    if len(pieces) == 1 or not held:
        return blocks, pieces
    heads = blank_joined(blocks[-held:])
    room = max_tokens - count_tokens(blank_joined([heads, ""]))
    first, *rest = split_block(block, room) if room >= max_tokens // 2 else [block]
    if not rest:
        return blocks, pieces
    return blocks[:-held], [blank_joined([heads, first]), *rest]


def chunk_plain(plain: str, max_tokens: int) -> list[str]:
    """Pack whole blocks of plain text (runs of lines between blank lines) into chunks of at
    most ``max_tokens`` tokens, the way the training examples were cut: as even as the blocks
    allow, a line that reads as a heading (one short line without final punctuation) kept with
    the block after it; a block over the budget is cut between its lines. Blank lines between
    blocks become one.

    >>> chunk_plain("Tools\\r\\n\\n \\n\\nhammers\\nsaws\\n", max_tokens=100)
    ['Tools\\n\\nhammers\\nsaws']
    """
    text = re.sub(r"\r\n?", "\n", plain).strip("\n")
    blocks = [block for block in re.split(r"\n(?:[ \t]*\n)+", text) if block.strip()]
    chunks = []
    for chunk in pack(kept_with_next(blocks, heading_line, max_tokens), blank_joined, max_tokens):
        over = count_tokens(chunk) > max_tokens and "\n\n" not in chunk
        chunks += pack(chunk.split("\n"), "\n".join, max_tokens) if over else [chunk]
    return chunks
