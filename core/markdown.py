"""Canonical Markdown, read: the one parser every module uses, and the plain text a reader sees.

The project's Markdown is CommonMark with tables (:data:`MD`); the plain text is derived
from it by parsing alone (:func:`markdown_to_plain`), so a (plain text, Markdown) pair
always corresponds exactly. The model reads the plain text and writes the Markdown; the
formatters, the repair pass and the evaluation read both through this module.

>>> print(markdown_to_plain("# On Tools\\n\\nUse *small* tools:\\n\\n- one\\n- two"))
On Tools
<BLANKLINE>
Use small tools:
<BLANKLINE>
one
two
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.token import Token

MD = MarkdownIt("commonmark").enable("table")


LISTS = ("bullet_list_open", "ordered_list_open")


def markdown_to_plain(markdown: str) -> str:
    """The text of the Markdown as a browser shows it, every bit of markup removed: blocks
    separated by one blank line; the lines of one block on consecutive lines: a paragraph's
    line breaks, a tight list's items (nested lists too), a table's rows (cells joined by
    tabs), a code block's lines (verbatim, blank ones too).

    Plain text keeps what a reader sees, as a writer's draft or a copied page has it: a list
    is a run of lines, paragraphs and headings stand apart (:func:`plain_blocks` reads them).

    >>> markdown_to_plain("# Tools\\n\\nI use:\\n\\n- hammers\\n- saws\\n\\nA line\\\\\\nbreak.")
    'Tools\\n\\nI use:\\n\\nhammers\\nsaws\\n\\nA line\\nbreak.'
    """
    blocks: list[list[str]] = []
    listed: list[bool] = []  # per block: whether a tight list's next item may join it
    cells: list[str] = []
    in_row = False
    depth = 0  # lists open
    for token in MD.parse(markdown):
        kind = token.type
        if kind in LISTS:
            if not depth:
                blocks.append([])
                listed.append(True)
            depth += 1
        elif kind.endswith("_list_close"):
            depth -= 1
        elif kind == "paragraph_open" and token.hidden:  # a tight list item's text
            if not (listed and listed[-1]):
                blocks.append([])
                listed.append(True)
        elif kind in ("paragraph_open", "heading_open", "table_open", "fence", "code_block"):
            blocks.append([])
            listed.append(False)
        elif kind == "html_block":
            blocks.append(content_lines(token.content))
            listed.append(False)
        if kind in ("fence", "code_block"):
            blocks[-1].extend(token.content.removesuffix("\n").split("\n"))
        elif kind == "tr_open":
            in_row, cells = True, []
        elif kind == "tr_close":
            in_row = False
            blocks[-1].append("\t".join(cells))
        elif kind == "inline" and in_row:
            cells.append(inline_plain(token).replace("\n", " "))
        elif kind == "inline":
            blocks[-1].extend(content_lines(inline_plain(token)))
    return "\n\n".join("\n".join(block) for block in blocks if block)


def plain_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """The ``(start, end)`` ranges of the plain text's blocks in its lines: the runs of
    non-blank lines (a code block with blank lines in it is several runs).

    >>> plain_blocks("Tools\\n\\nhammers\\nsaws\\n\\n\\nx = 1".split("\\n"))
    [(0, 1), (2, 4), (6, 7)]
    """
    found: list[tuple[int, int]] = []
    start = None
    for i, line in enumerate([*lines, ""]):
        if line and start is None:
            start = i
        elif not line and start is not None:
            found.append((start, i))
            start = None
    return found


def content_lines(text: str) -> list[str]:
    """Non-blank lines of a text."""
    return [line for line in text.split("\n") if line.strip()]


def inline_plain(token: Token) -> str:
    """Text of an inline token: markup dropped, breaks as newlines, image alt dropped."""
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline", "html_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
    return "".join(parts)
