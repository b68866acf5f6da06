"""A rule-based formatter: plain text -> Markdown by a few general rules, the model's baseline.

A fine-tuned model has learnt its author only if it does better than what an engineer writes
in an afternoon (issue 12), so the evaluation scores these rules as a model of their own
("rules"). They read only the cues plain text keeps (:func:`tasks.clean.markdown_to_plain`
writes one block per line, code lines verbatim, table cells joined by tabs) and know nothing
of any one corpus. Line by line, first match wins:

- **table**: two or more lines with the same number of tabs (how table rows come out), one
  between words, become a pipe table, the first row its header;
- **code**: lines that look like code (indented, a shell prompt, a comment, a keyword first,
  ending in a brace or semicolon, mostly symbols), blank lines (plain text has them only
  inside code) and their neighbours, and then any line next to code that does not read as a
  sentence, are fenced in runs, verbatim; a language is named only when a line is
  unmistakable (``fn main() {``, ``def f():``, ``[section]``);
- **list**: the short lines after a line ending with a colon (two or more), or any three or
  more short lines without final punctuation, become ``-`` items;
- **heading**: a short line without final punctuation (or a short question) before a longer
  line, or last; ``#`` as the text's first line (the title), one level deeper right after
  another heading, else ``##``;
- every other line is a paragraph.

Blocks are separated by one blank line and lists are tight, as in the canonical Markdown;
text is escaped by the project's own escaper (:func:`tasks.clean.render_inline`). Each block
is parsed back and fenced as code if it does not read as its lines, so the words never change:
``markdown_to_plain(rules_markdown(plain)) == plain`` (with :func:`tasks.faithful.repair` as
the last resort).

>>> print(rules_markdown("On Tools\\nUse small tools, *all* of them:\\nhammers\\nsaws\\n"
...                      "Then build:\\n$ cargo build --release"))
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

from tasks.clean import markdown_to_plain, render_inline
from tasks.faithful import repair

SHORT = 80  # characters: a list item or a heading is at most this long
HEADING_WORDS = 10  # and a heading at most this many words
CODE_LINE = re.compile(
    r"\s|$"  # indented or blank
    r"|[$#>] \S"  # a shell prompt (or a shell comment)
    r"|//|/\*|\*/|#\[|#!|#include\b"  # comments, attributes, shebang
    r"|(?:fn|let|def|import|from|use|pub|impl|struct|enum|class|const|return|if|for|while)"
    r" [^.]*(?<![.,!?])$"  # a keyword first (lower case) and no sentence end
    r'|.*(?:[{};\[(]|[)\]}"][;,])$'  # ends with a brace, semicolon or opening bracket
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
    sentence = line[:1].isupper() and (PROSE_END.search(line) or len(line.split()) >= 6)
    return bool(CODE_LINE.match(line) or symbols) and not sentence


def is_short(line: str) -> bool:
    """Short enough to be a list item or a heading."""
    return 0 < len(line) <= SHORT


def unpunctuated(line: str) -> bool:
    """No final punctuation: a heading's or a terse item's ending."""
    return not re.search(r"[.,;:!]$", line)


def classify(lines: list[str]) -> list[str]:
    """Each line's block kind: table, code, item, heading or para."""
    kinds = ["para"] * len(lines)
    for start, end, tabs in runs([line.count("\t") for line in lines]):  # rows of one width
        if tabs and end - start >= 2 and any(re.search(r"[^\t]\t", x) for x in lines[start:end]):
            kinds[start:end] = ["table"] * (end - start)
    code = [k == "para" and looks_like_code(line) for k, line in zip(kinds, lines, strict=True)]
    for i, line in enumerate(lines):  # a blank line is only ever inside a code block
        if not line:
            code[max(0, i - 1) : i + 2] = [True] * len(code[max(0, i - 1) : i + 2])
    changed = True
    while changed:  # next to code, a line that does not read as a sentence is code too
        changed = False
        for i, line in enumerate(lines):
            near = True in code[max(0, i - 1) : i] + code[i + 1 : i + 2]
            between = code[max(0, i - 1) : i] == code[i + 1 : i + 2] == [True]
            capital = re.match(r"[\W_]*[A-Z0-9]", line)  # between code, it must also end as one
            sentence = capital and (PROSE_END.search(line) or not between)
            if kinds[i] == "para" and not code[i] and near and not sentence:
                code[i] = changed = True
    kinds = ["code" if c else k for c, k in zip(code, kinds, strict=True)]
    short = [k == "para" and is_short(line) for k, line in zip(kinds, lines, strict=True)]
    for i, line in enumerate(lines):  # after a colon: the short lines up to the next colon
        end = next(
            (j for j in range(i + 1, len(lines)) if not short[j] or lines[j][-1] == ":"), len(lines)
        )
        if line.endswith(":") and end - i > 2:
            kinds[i + 1 : end] = ["item"] * (end - i - 1)
    terse = [
        k == "para" and is_short(x) and unpunctuated(x) for k, x in zip(kinds, lines, strict=True)
    ]
    for start, end, is_run in runs(terse):  # anywhere: three or more terse lines
        if is_run and end - start >= 3:
            kinds[start:end] = ["item"] * (end - start)
    for i, line in enumerate(lines):  # a terse line (or question) before a longer one, or last
        longer = i + 1 == len(lines) or len(lines[i + 1]) > len(line)
        titled = terse[i] or (is_short(line) and line.endswith("?"))
        if kinds[i] == "para" and titled and longer and len(line.split()) <= HEADING_WORDS:
            kinds[i] = "heading"
    return kinds


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
        block = "\n>\n".join("> " + render_inline(line, "para") for line in lines)
    elif kind in HEADINGS:
        level = int(kind[1])
        block = "#" * level + " " + render_inline(lines[0], "heading", level)
    else:
        block = render_inline(lines[0], "para")
    return block if markdown_to_plain(block) == "\n".join(lines) else fence(lines)


HEADINGS = tuple(f"h{level}" for level in range(1, 7))
GROUPED = ("code", "bullet", "ordered", "quote", "table")  # kinds whose neighbours share a block


def markdown_of(lines: list[str], kinds: list[str]) -> str:
    """The lines as Markdown, each of its kind: para, h1..h6, bullet, ordered, quote, code or
    table; neighbours of a grouped kind share one block (a table's rows of one width), blocks
    are separated by a blank line, and ``markdown_to_plain`` of the result is the lines.

    >>> kinds = ["h3", "ordered", "ordered", "code"]
    >>> print(markdown_of(["Tools", "hammers", "saws", "x = 1"], kinds))
    ### Tools
    <BLANKLINE>
    1. hammers
    2. saws
    <BLANKLINE>
    ```
    x = 1
    ```
    """
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        j = i + 1
        while j < len(lines) and kinds[j] == kinds[i] in GROUPED:
            if kinds[i] == "table" and lines[j].count("\t") != lines[i].count("\t"):
                break  # a table of another width
            j += 1
        blocks.append(render(kinds[i], lines[i:j]))
        i = j
    markdown = "\n\n".join(blocks)
    plain = "\n".join(lines)
    return markdown if markdown_to_plain(markdown) == plain else repair(markdown, plain)


def levelled(kinds: list[str]) -> list[str]:
    """The rules' kinds as :func:`markdown_of` reads them: a heading ``h1`` as the text's first
    line, one level deeper right after another heading, else ``h2``; an item a bullet."""
    out: list[str] = []
    for i, kind in enumerate(kinds):
        if kind == "heading":
            after = out[-1] if i and out[-1] in HEADINGS else None
            kind = "h1" if i == 0 else f"h{min(6, int(after[1]) + 1)}" if after else "h2"
        out.append("bullet" if kind == "item" else kind)
    return out


def rules_markdown(plain: str) -> str:
    """The plain text as Markdown by the rules above; ``markdown_to_plain`` of it is ``plain``."""
    lines = plain.split("\n") if plain else []
    return markdown_of(lines, levelled(classify(lines)))
