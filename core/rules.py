"""A rule-based formatter: plain text -> Markdown by a few general rules, the model's baseline.

A fine-tuned model has learnt its author only if it does better than what an engineer writes
in an afternoon (issue 12), so the evaluation scores these rules as a model of their own
("rules"). They read only the cues plain text keeps (:func:`core.markdown.markdown_to_plain`
writes blocks apart, separated by a blank line, and the lines of one block together: a list's
items, a table's rows with their cells joined by tabs, a code block's lines verbatim) and know
nothing of any one corpus. Block by block (a run of non-blank lines), first match wins:

- **table**: two or more lines with the same number of tabs, one between words, become a pipe
  table, the first row its header;
- **code**: a block at least half of whose lines look like code (indented, a shell prompt, a
  comment, a keyword first, ending in a brace, a semicolon after code, mostly symbols), or a
  quarter and no sentence, or with two blank lines beside it (only code holds them), and
  then any block next to code with no line that reads as a sentence, are fenced, verbatim,
  code blocks with only blank lines between them in one fence; a language is named only when
  a line is unmistakable (``fn main() {``, ``def f():``, ``[section]``);
- **list**: any other block of two or more lines becomes ``-`` items;
- **heading**: a short line without final punctuation (or a short question) before a longer
  line, or last; ``#`` as the text's first line (the title), one level deeper right after
  another heading, else ``##``;
- every other block is a paragraph.

Blocks are separated by one blank line and lists are tight, as in the canonical Markdown;
text is escaped by the project's own escaper (:func:`core.inline.render_inline`). Each block
is parsed back and fenced as code if it does not read as its lines, so the words never change:
``markdown_to_plain(rules_markdown(plain)) == plain`` (with :func:`core.faithful.repair` as
the last resort).

>>> print(rules_markdown("On Tools\\n\\nUse small tools, *all* of them:\\n\\nhammers\\nsaws\\n\\n"
...                      "Then build:\\n\\n$ cargo build --release"))
# On Tools
<BLANKLINE>
Use small tools, \\*all\\* of them:
<BLANKLINE>
- hammers
- saws
<BLANKLINE>
Then build:
<BLANKLINE>
```
$ cargo build --release
```
"""

from __future__ import annotations

import re

from core.faithful import join, repair
from core.inline import render_inline
from core.markdown import markdown_to_plain, plain_blocks

SHORT = 80  # characters: a list item or a heading is at most this long
HEADING_WORDS = 10  # and a heading at most this many words
CODE_LINE = re.compile(
    r"\s|$"  # indented or blank
    r"|[$#>] \S"  # a shell prompt (or a shell comment)
    r"|//|/\*|\*/|#\[|#!|#include\b"  # comments, attributes, shebang
    r"|(?:fn|let|def|import|from|use|pub|impl|struct|enum|class|const|return|if|for|while)"
    r" [^.]*(?<![.,!?])$"  # a keyword first (lower case) and no sentence end
    r'|.*(?:[{}\[(]|[)\]}"][;,])$'  # ends with a brace or an opening bracket
    r"|(?:\S*|.*[=(){}<>:\[\]].*);$"  # a semicolon after one token or code punctuation
    r"|.*\s$"  # trailing whitespace
    r"|\S*[=(]\S*$"  # one token with = or (: x=1, f(x)
)
SYMBOLS = re.compile(r"[^\w\s.,;:'\"’“”!?-]")
PROSE_END = re.compile(r"[.!?:]$")
LANGUAGES = (  # a language is named only when a line says so unmistakably
    ("rust", re.compile(r"\s*(?:(?:pub )?(?:fn|struct|enum|trait|impl|mod|use) |let |#\[|\w+!\()")),
    ("python", re.compile(r"(?:def \w+\(.*\):|import \w+$|from [\w.]+ import )")),
    ("toml", re.compile(r"\[[\w.-]+\]$")),
)


def looks_like_code(line: str) -> bool:
    """A line that is code rather than prose."""
    symbols = len(SYMBOLS.findall(line)) > 0.15 * len(line.replace(" ", ""))
    return bool(CODE_LINE.match(line) or symbols) and not sentence(line, opening="[A-Z]")


def is_short(line: str) -> bool:
    """Short enough to be a list item or a heading."""
    return 0 < len(line) <= SHORT


def unpunctuated(line: str) -> bool:
    """No final punctuation: a heading's or a terse item's ending."""
    return not re.search(r"[.,;:!]$", line)


def classify(lines: list[str]) -> list[str]:
    """Each line's block kind: table, code, item, heading, para, or blank (a separator). The
    lines of one block (:func:`core.markdown.plain_blocks`) share its kind."""
    blocks = plain_blocks(lines)
    kinds = ["para"] * len(blocks)
    for b, (start, end) in enumerate(blocks):
        rows = lines[start:end]
        widths = {row.count("\t") for row in rows}
        if end - start >= 2 and len(widths) == 1 and any(re.search(r"[^\t]\t", x) for x in rows):
            kinds[b] = "table"
        elif coded(rows) or wide_gap(lines, blocks, b):
            kinds[b] = "code"
    changed = True
    while changed:  # next to code, a block with no line that reads as a sentence is code too
        changed = False
        for b, (start, end) in enumerate(blocks):
            near = "code" in kinds[max(0, b - 1) : b] + kinds[b + 1 : b + 2]
            if kinds[b] == "para" and near and not any(map(sentence, lines[start:end])):
                kinds[b] = "code"
                changed = True
    for b, (start, end) in enumerate(blocks):
        line, after = lines[start], blocks[b + 1][0] if b + 1 < len(blocks) else None
        longer = after is None or len(lines[after]) > len(line)
        titled = unpunctuated(line) or line.endswith("?")
        if kinds[b] == "para" and end - start >= 2:  # a run of lines: a list's items
            kinds[b] = "item"
        elif kinds[b] == "para" and is_short(line) and titled and longer:
            kinds[b] = "heading" if len(line.split()) <= HEADING_WORDS else "para"
    out = ["blank"] * len(lines)
    for (start, end), kind in zip(blocks, kinds, strict=True):
        out[start:end] = [kind] * (end - start)
    return spanned(out)


def coded(rows: list[str]) -> bool:
    """Whether a block is code: half its lines look like code, or a quarter do and none reads
    as a sentence (one odd line in a run of words is not code)."""
    code = sum(map(looks_like_code, rows))
    return 2 * code >= len(rows) or (4 * code >= len(rows) and not any(map(sentence, rows)))


def sentence(line: str, opening: str = r"[\W_]*[A-Z0-9]") -> bool:
    """Whether a line reads as prose: its ``opening`` (a capital or a digit, after any
    punctuation) and a sentence's end (or six words). A line that looks like code is prose
    only if a capital letter is its very first character (``# Note.`` and ``1 + 2;`` stay
    code).

    >>> sentence("(1) Open it."), sentence("(1) Open it.", opening="[A-Z]")
    (True, False)
    """
    return bool(re.match(opening, line) and (PROSE_END.search(line) or len(line.split()) >= 6))


def wide_gap(lines: list[str], blocks: list[tuple[int, int]], b: int) -> bool:
    """Whether block ``b`` has two or more blank lines beside it, or one at the text's edge:
    only code holds such blank lines."""
    start, end = blocks[b]
    before = start - (blocks[b - 1][1] if b else 0)
    after = (blocks[b + 1][0] if b + 1 < len(blocks) else len(lines)) - end
    return before >= 2 or after >= 2 or (b == 0 and before) or (b + 1 == len(blocks) and after)


def spanned(kinds: list[str]) -> list[str]:
    """The kinds with each run of blank lines between two code blocks made code (one fence
    holds them), and a single blank line between two quotes made quote (one quote)."""
    out = list(kinds)
    for start, end, kind in runs(kinds):
        if kind != "blank":
            continue
        before = kinds[start - 1] if start else "code"
        after = kinds[end] if end < len(kinds) else "code"
        if before == after == "code" and (start or end < len(kinds)):
            out[start:end] = ["code"] * (end - start)
        elif before == after == "quote" and end - start == 1:
            out[start] = "quote"
    return out


def runs(keys: list) -> list[tuple[int, int, object]]:
    """(start, end, key) of each maximal run of equal keys."""
    found, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            found.append((start, i, keys[start]))
            start = i
    return found


def fence(lines: list[str]) -> str:
    """A fenced code block, fence longer than any backtick run, language guessed."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    marks = "`" * max(3, longest + 1)
    language = next((name for name, cue in LANGUAGES if any(map(cue.match, lines))), "")
    return "\n".join([marks + language, *lines, marks])


def render(kind: str, lines: list[str]) -> str:
    """One block of lines of one kind (see :func:`markdown_of`) as Markdown, fenced if it
    would not read back as its lines."""
    if kind == "code":
        return fence(lines)
    if kind == "table":
        rows = [[render_inline(cell, "cell") for cell in line.split("\t")] for line in lines]
        rows.insert(1, ["---"] * len(rows[0]))
        block = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    elif kind == "bullet":
        block = "\n".join("- " + render_inline(line, "para") for line in lines)
    elif kind == "ordered":
        block = "\n".join(f"{n}. " + render_inline(line, "para") for n, line in enumerate(lines, 1))
    elif kind == "quote":
        block = "\n".join("> " + render_inline(line, "para") if line else ">" for line in lines)
    elif kind in HEADINGS and len(lines) == 1:
        level = int(kind[1])
        block = "#" * level + " " + render_inline(lines[0], "heading", level)
    elif kind == "verse":  # a paragraph whose lines end in hard line breaks (a poem, an address)
        block = "\\\n".join(render_inline(line, "para") for line in lines)
    else:  # a paragraph; its lines joined by line breaks
        block = "\n".join(render_inline(line, "para") for line in lines)
    return block if markdown_to_plain(block) == "\n".join(lines) else fence(lines)


HEADINGS = tuple(f"h{level}" for level in range(1, 7))


def markdown_of(lines: list[str], kinds: list[str]) -> str:
    """The lines as Markdown, each of its kind: para, verse (lines ending in hard breaks),
    h1..h6, bullet, ordered, quote, code, table, or blank (a separator); a run of lines of
    one kind is one block (a paragraph's lines joined by line breaks, a list's items, a code
    block's lines and the blank lines :func:`spanned` gave it), blocks are separated by a
    blank line, and ``markdown_to_plain`` of the result is the lines.

    >>> kinds = ["h3", "blank", "ordered", "ordered", "blank", "code"]
    >>> print(markdown_of(["Tools", "", "hammers", "saws", "", "x = 1"], kinds))
    ### Tools
    <BLANKLINE>
    1. hammers
    2. saws
    <BLANKLINE>
    ```
    x = 1
    ```
    """
    blocks = [render(kind, lines[start:end]) for start, end, kind in runs(kinds) if kind != "blank"]
    markdown = join(blocks)  # lists of one kind in a row alternate markers
    plain = "\n".join(lines)
    return markdown if markdown_to_plain(markdown) == plain else repair(markdown, plain)


def levelled(kinds: list[str]) -> list[str]:
    """The rules' kinds as :func:`markdown_of` reads them: a heading ``h1`` as the text's first
    line, one level deeper right after another heading, else ``h2``; an item a bullet."""
    out: list[str] = []
    previous = None  # the last block's kind
    for i, kind in enumerate(kinds):
        if kind == "heading":
            after = previous if previous in HEADINGS else None
            kind = "h1" if i == 0 else f"h{min(6, int(after[1]) + 1)}" if after else "h2"
        out.append("bullet" if kind == "item" else kind)
        previous = out[-1] if kind != "blank" else previous
    return out


def rules_markdown(plain: str) -> str:
    """The plain text as Markdown by the rules above; ``markdown_to_plain`` of it is ``plain``."""
    lines = plain.split("\n") if plain else []
    return markdown_of(lines, levelled(classify(lines)))
