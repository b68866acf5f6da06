"""Faithful mode: repair a model's Markdown so that its plain text is exactly the input.

A small model asked to render plain text as Markdown may drop, repeat, change or invent text.
:func:`repair` keeps the model's markup wherever its text is right and restores the input's
text everywhere else, with the guarantee ``markdown_to_plain(repair(output, plain)) == plain``:

1. the output is cut into leaf blocks ("units": a paragraph or heading with its container
   prefix such as ``- `` or ``> ``, a whole code block, a whole table) with their plain lines;
   a fence left open is closed, and a fence around Markdown removed, if more text then matches;
2. the input lines are aligned with the output's plain lines (difflib), and each input line
   takes the style of the output line it was paired with (heading, list item, quote, code
   block, table row; a line the model dropped takes its neighbours' shared style);
3. the input is written block by block (its runs of lines; code with blank lines in it is
   one block): the output's own text where consecutive units hold exactly the block's lines,
   else each line in its own style, else all in the first line's (code if any line is code;
   in a block of several lines a heading is a paragraph), with the model's emphasis, strong
   and code spans where their text is unchanged; output lines with no counterpart are dropped;
4. every block is parsed back, then the whole result; a block that does not read right falls
   back to plainer writings (escaped paragraph, fenced code, a one-cell table with entities),
   and a result that does not falls back to no kept markup, then to plain blocks only.

An output whose plain text is already exact is returned unchanged (markup-only lines and all).
Every plain text without NUL can be represented; NUL cannot (markdown-it reads it as U+FFFD)
and raises ValueError. A carriage return is written as ``&#13;``, in a paragraph or, on a line
of only whitespace, in a one-cell table.

Limits: a line with no similar counterpart in the output (dropped, or rewritten beyond
recognition) comes back as an escaped paragraph, or as fenced code when it is blank or
indented; only emphasis, strong and code spans move to rewritten lines (links do not);
containers nested deeper than three columns are written with their innermost marker only.

>>> plain = "Intro\\n\\nUse small tools.\\n\\nOne\\nTwo"
>>> output = "## Intro\\n\\nUse *small* tools, always.\\n\\n- One\\n- One\\n- Two\\n\\n## Invented"
>>> print(repair(output, plain))
## Intro
<BLANKLINE>
Use *small* tools.
<BLANKLINE>
- One
- Two
>>> is_faithful(output, plain), is_faithful(repair(output, plain), plain)
(False, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from functools import cached_property
from textwrap import dedent

from markdown_it.common.utils import MD_TRIM_CHARS
from markdown_it.token import Token
from rapidfuzz.fuzz import ratio

from core.inline import code_span, escape_line_start, escape_text
from core.markdown import MD, content_lines, inline_plain, markdown_to_plain, plain_blocks

SIMILAR = 60  # rapidfuzz ratio from which a changed line borrows its counterpart's style
PUNCT = re.compile(r"([!-/:-@\[-`{-~])")  # ASCII punctuation: each one may be escaped
PREFIX = re.compile(r"(?:[ \t]*(?:>|(?:[-+*]|\d{1,9}[.)])(?=[ \t]|$))[ \t]?)*")  # containers
QUIET = re.compile(r"[ \t>]*")  # a separator line: blank but for quote marks
LEAVES = {"paragraph_open", "heading_open", "fence", "code_block", "html_block", "table_open"}
SENTINEL = "\n\nsentinel"  # a paragraph after a piece, which must not run into it
ENDS = [("paragraph_open", 0, ""), ("inline", 1, "sentinel"), ("paragraph_close", 0, "")]


@dataclass(frozen=True)
class Style:
    """How an output line was written: container prefix, block kind, detail."""

    prefix: str = ""  # the containers' markers before the text: "> ", "- ", "   1. " or ""
    kind: str = "para"  # para, heading, code or table
    detail: str = ""  # heading marks or fence info


@dataclass
class Unit:
    """A leaf block of the output: its source lines [start, end), plain lines and style."""

    start: int
    end: int
    lines: list[str]
    style: Style
    spans: list[tuple[str, str]] = field(default_factory=list)


def is_faithful(output: str, plain: str) -> bool:
    """Whether the Markdown's plain text is exactly the input plain text."""
    return markdown_to_plain(output) == plain


def repair(output: str, plain: str) -> str:
    """The output with its markup kept where its text is right and the input's text elsewhere."""
    if "\0" in plain:
        raise ValueError("plain text with NUL: markdown-it reads NUL as U+FFFD")
    if is_faithful(output, plain):
        return output
    lines = plain.split("\n") if plain else []
    source = re.sub(r"\r\n?", "\n", output).replace("\0", "\ufffd").split("\n")
    plan = best_plan(source, lines)
    ladder = (plan.pieces, lambda: plan.pieces(keep=False), lambda: plain_pieces(lines))
    for rung in ladder:  # built lazily: a rung only when the one above failed
        result = join(rung())
        if markdown_to_plain(result) == plain:
            return result
    if markdown_to_plain(fence(lines)) == plain:
        return fence(lines)
    raise ValueError(f"cannot render this plain text: {plain[:80]!r}")  # only if a rung is broken


# --- the output's units -------------------------------------------------------------------------


def parse_units(source: list[str]) -> list[Unit]:
    """The output's leaf blocks, in order."""
    tokens = MD.parse("\n".join(source))
    units: list[Unit] = []
    for i, token in enumerate(tokens):
        if token.type in LEAVES and token.map:
            start, end = token.map
            prefix = PREFIX.match(source[start]).group()  # type: ignore[union-attr]
            if len(prefix) - len(prefix.lstrip()) > 3:  # would be indented code on its own
                prefix = prefix.lstrip()
            units.append(Unit(start, end, *leaf(tokens, i, prefix)))
    return units


def leaf(tokens: list[Token], i: int, prefix: str) -> tuple:
    """Plain lines, style and spans of the leaf block opened by tokens[i]."""
    token = tokens[i]
    if token.type in ("fence", "code_block"):
        lines = token.content.removesuffix("\n").split("\n")
        return lines, Style(prefix, "code", token.info)
    if token.type == "html_block":
        return content_lines(token.content), Style(prefix)
    if token.type == "table_open":
        return table_lines(tokens, i), Style(prefix, "table")
    inline = tokens[i + 1]
    heading = "#" * int(token.tag[1:]) if token.type == "heading_open" else ""
    style = Style(prefix, "heading" if heading else "para", heading)
    return content_lines(inline_plain(inline)), style, spans(inline.children)


def table_lines(tokens: list[Token], i: int) -> list[str]:
    """The plain lines of the table opened by tokens[i]: its rows, cells joined by tabs."""
    lines: list[str] = []
    cells: list[str] = []
    for token in tokens[i:]:
        if token.type == "tr_open":
            cells = []
        elif token.type == "inline":
            cells.append(inline_plain(token).replace("\n", " "))
        elif token.type == "tr_close":
            lines.append("\t".join(cells))
        elif token.type == "table_close":
            break
    return lines


def spans(children: list[Token] | None) -> list[tuple[str, str]]:
    """(markup, text) of the outermost emphasis, strong and code spans, in order."""
    found: list[tuple[str, str]] = []
    markup, depth, parts = "", 0, []
    for child in children or []:
        if child.type in ("em_open", "strong_open"):
            markup, parts = (markup, parts) if depth else (child.markup, [])
            depth += 1
        elif child.type in ("em_close", "strong_close") and depth:
            depth -= 1
            found += [] if depth else [(markup, "".join(parts))]
        elif child.type == "code_inline" and not depth:
            found.append(("`", child.content))
        elif child.type in ("text", "code_inline", "softbreak", "hardbreak"):
            parts.append(child.content or "\n")
    return [(markup, text) for markup, text in found if text.strip() and "\n" not in text]


def best_plan(source: list[str], lines: list[str]) -> Plan:
    """The plan matching most input lines, fences the model got wrong closed or removed.

    A fence left open is closed at one of its blank lines; a closed fence whose text is not
    kept is tried without its fence lines (the model fenced Markdown that was not code).
    """
    plans = [plan(source, lines)]
    kept = {plans[0].units[u].start for u in plans[0].kept}
    fences = [t for t in MD.parse("\n".join(source)) if t.type == "fence" and t.map]
    for token in [t for t in fences if t.map[0] not in kept][:5]:  # type: ignore[index]
        start, end = token.map  # type: ignore[misc]
        closing = rf"[ \t>]*{re.escape(token.markup[0])}{{{len(token.markup)},}}[ \t]*"
        if end - 1 > start and re.fullmatch(closing, source[end - 1]):
            plans.append(plan(source[:start] + source[start + 1 : end - 1] + source[end:], lines))
            continue
        opener = source[start][: source[start].index(token.markup)]
        closer = re.sub(r"[^>\s]", " ", opener) + token.markup
        blanks = [k for k in range(start + 1, end) if QUIET.fullmatch(source[k])][:10]
        plans += [plan([*source[:k], closer, *source[k:]], lines) for k in blanks]
    return max(plans, key=lambda p: (p.matched, sum(len(p.units[u].lines) for u in p.kept)))


# --- alignment ----------------------------------------------------------------------------------


def plan(source: list[str], lines: list[str]) -> Plan:
    """Align the input lines with the output's plain lines: what to keep, how to write the rest."""
    units = parse_units(source)
    owner = [u for u, unit in enumerate(units) for _ in unit.lines]
    outs = [line for unit in units for line in unit.lines]
    same: dict[int, int] = {}  # output line -> equal input line
    pair: list[int | None] = [None] * len(lines)  # input line -> its output counterpart
    matcher = SequenceMatcher(None, lines, outs, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for i in range(i1, i2):
            if tag == "equal":
                same[j1 + i - i1] = i
                pair[i] = j1 + i - i1
            elif tag == "replace":
                guess = j1 + (i - i1) * (j2 - j1) // (i2 - i1)
                pair[i] = similar(lines[i], outs, range(max(j1, guess - 2), min(j2, guess + 3)))
    kept: dict[int, int] = {}
    j = 0
    for u, unit in enumerate(units):
        first, run = same.get(j), range(len(unit.lines))
        if unit.lines and first is not None and all(same.get(j + k) == first + k for k in run):
            kept[u] = first
        j += len(unit.lines)
    styles = fill(lines, [None if j is None else units[owner[j]].style for j in pair])
    found = [
        [] if j is None else [s for s in units[owner[j]].spans if s[1] in outs[j]] for j in pair
    ]
    matched = sum(1 for i in same.values() if lines[i].strip())
    return Plan(lines, source, units, kept, styles, found, matched)


def similar(line: str, outs: list[str], window: range) -> int | None:
    """The output line in the window most like the input line, if similar enough."""
    best = max(((ratio(line, outs[j]), -abs(j - window.start), j) for j in window), default=None)
    return best[2] if best and best[0] >= SIMILAR else None


def fill(lines: list[str], styles: list[Style | None]) -> list[Style]:
    """Styles for unpaired lines (their neighbours' shared style), indented lines as code."""
    after: list[Style | None] = [None] * len(styles)
    for i in range(len(styles) - 1, 0, -1):
        after[i - 1] = styles[i] if styles[i] is not None else after[i]
    done: list[Style] = []
    for i, style in enumerate(styles):
        before, nxt = done[-1] if done else None, after[i]
        if style is None:
            shared = before and nxt and nxt.kind != "heading" and akin(before, nxt)
            style = nxt if shared else Style()
        if not lines[i][:1].strip() and style.kind in ("para", "heading"):
            codes = [s for s in (before, nxt) if s and s.kind == "code"]
            style = codes[0] if codes else Style(kind="code")
        done.append(style)
    return done


def akin(a: Style, b: Style) -> bool:
    """Whether two styles are the same but for list item numbers."""
    return a.kind == b.kind and re.sub(r"\d+", "1", a.prefix) == re.sub(r"\d+", "1", b.prefix)


@dataclass
class Plan:
    """The alignment: kept units (unit -> first input line), each input line's style, spans."""

    lines: list[str]
    source: list[str]
    units: list[Unit]
    kept: dict[int, int]
    styles: list[Style]
    spans: list[list]
    matched: int  # non-blank input lines equal to an output line

    def pieces(self, keep: bool = True) -> list[str]:
        """The result's blocks in input order: the output's own text where its units write a
        block exactly (kept blocks next to each other in the output stay together, with its
        separator: a quote's paragraphs stay one quote), else the block's lines written in the
        style of its first line."""
        coded = [style.kind == "code" for style in self.styles]
        pieces: list[str] = []
        last: tuple[list[int], int] | None = None  # the last piece's kept units, first line
        for start, end in blocks_of(self.lines, coded):
            run = self.kept_run(start, end) if keep else None
            if run and last and last[0][-1] + 1 == run[0] and self.quiet(last[0][-1]):
                together = self.text(last[0] + run, last[1], end)
                if together is not None:
                    pieces[-1], last = together, (last[0] + run, last[1])
                    continue
            text = self.text(run, start, end) if run else None
            last = (run, start) if run and text is not None else None
            styles = self.block_styles(start, end)
            pieces.append(text or written(self.lines[start:end], styles, self.spans[start:end]))
        return pieces

    @cached_property
    def starts(self) -> dict[int, int]:
        """Each kept unit by its first input line."""
        return {first: u for u, first in self.kept.items()}

    def kept_run(self, start: int, end: int) -> list[int] | None:
        """Consecutive kept units holding exactly input lines [start, end), if any."""
        starts = self.starts
        run, i = [], start
        while i < end and i in starts and (not run or starts[i] == run[-1] + 1):
            run.append(starts[i])
            i += len(self.units[run[-1]].lines)
        return run if run and i == end else None

    def text(self, run: list[int], start: int, end: int) -> str | None:
        """The output's text of a run of units, if it reads as input lines [start, end)."""
        text = "\n".join(self.source[self.units[run[0]].start : self.units[run[-1]].end])
        return next((t for t in (text, dedent(text)) if reads(t, self.lines[start:end])), None)

    def quiet(self, u: int) -> bool:
        """Whether only blank (or quote-mark) lines separate unit u from the next one."""
        end, start = self.units[u].end, self.units[u + 1].start
        return end <= start and all(QUIET.fullmatch(line) for line in self.source[end:start])

    def block_styles(self, start: int, end: int) -> list[Style]:
        """The styles of a block's lines: all one code style if any line is code (or a blank
        line is in the block), else their own, with a heading written as a paragraph in a
        block of several lines."""
        styles = self.styles[start:end]
        codes = [style for style in styles if style.kind == "code"]
        if codes or "" in self.lines[start:end]:
            return [codes[0] if codes else Style(kind="code")] * (end - start)
        if end - start > 1:
            return [Style(s.prefix) if s.kind == "heading" else s for s in styles]
        return styles


# --- writing the input's lines ------------------------------------------------------------------


def join(pieces: list[str]) -> str:
    """Pieces separated by a blank line; a list right after a list of its kind takes the other
    marker (``*`` for ``-``, ``)`` for ``.``), which ``-`` would join into one loose list.

    >>> print(join(["- a\\n- b", "- c", "1. d"]))
    - a
    - b
    <BLANKLINE>
    * c
    <BLANKLINE>
    1. d
    """
    out: list[str] = []
    for piece in pieces:
        if out and (kind := top_marker(piece)) and kind == top_marker(out[-1]):
            piece = re.sub(r"(?m)^(\d{1,9})?([-*.)])(?=[ \t]|$)", other_marker, piece)
        out.append(piece)
    return "\n\n".join(out)


def top_marker(piece: str) -> str | None:
    """The marker kind of a piece that is a list (its bullet, or an ordered item's
    delimiter), from its first line."""
    found = re.match(r"(?:\d{1,9})?([-+*.)])(?=[ \t]|$)", piece)
    return found[1] if found and (found[0][:1].isdigit() or found[1] in "-+*") else None


def other_marker(found: re.Match) -> str:
    """The other marker of a top-level item: ``-`` and ``*``, ``.`` and ``)`` swapped."""
    number, mark = found[1] or "", found[2]
    if number:
        return number + {".": ")", ")": "."}.get(mark, mark)
    return {"-": "*", "*": "-"}.get(mark, mark)


def blocks_of(lines: list[str], coded: list[bool]) -> list[tuple[int, int]]:
    """The plain text's blocks (:func:`core.markdown.plain_blocks`) as the result writes them:
    blocks that are code on both sides of blank lines, or with more than one blank line
    between them, are one code block holding those lines, and so are blank lines at an edge.

    >>> blocks_of(["a", "", "b", "", "", "c"], [False] * 6)
    [(0, 1), (2, 6)]
    """
    found: list[tuple[int, int]] = []
    for start, end in plain_blocks(lines):
        if found and (start - found[-1][1] > 1 or (coded[found[-1][1] - 1] and coded[start])):
            found[-1] = (found[-1][0], end)
        else:
            found.append((start, end))
    if not found:
        return [(0, len(lines))] if lines else []
    found[0] = (0, found[0][1])
    found[-1] = (found[-1][0], len(lines))
    return found


def reads(piece: str, lines: list[str]) -> bool:
    """Whether the piece reads as exactly these lines and ends before a paragraph after it."""
    tokens = MD.parse(piece + SENTINEL)
    ends = [(t.type, t.level, t.content) for t in tokens[-3:]] == ENDS
    return ends and markdown_to_plain(piece + SENTINEL) == "\n".join(lines) + SENTINEL


def written(block: list[str], styles: list[Style], spans: list[list]) -> str:
    """A block's lines in their borrowed styles, verified: code and tables whole, other lines
    each in its own style, else all in the first line's (a list's items numbered on), else as
    :func:`plain_block` writes them."""
    style = styles[0]
    if style.kind in ("code", "table"):
        writings = (render(block, style, spans, level) for level in (0, 1, 2))
        return next((p for p in writings if p is not None and reads(p, block)), plain_block(block))
    own = [replace(style, prefix=numbered(style.prefix, k)) for k in range(len(block))]
    for chosen in (styles, own):
        lines = []
        for line, line_style, found in zip(block, chosen, spans, strict=True):
            writings = (render([line], line_style, [found], level) for level in (0, 1, 2))
            lines.append(next((p for p in writings if p is not None and reads(p, [line])), None))
        if None not in lines and reads(piece := "\n".join(lines), block):  # type: ignore[arg-type]
            return piece
    return plain_block(block)


def numbered(prefix: str, k: int) -> str:
    """A list item's prefix for the block's line ``k``: an ordered item's number ``k`` on.

    >>> numbered("3. ", 2), numbered("> - ", 2)
    ('5. ', '> - ')
    """
    found = list(re.finditer(r"(\d{1,9})(?=[.)](?:[ \t]|$))", prefix))
    if not found:
        return prefix
    last = found[-1]
    return prefix[: last.start()] + str(int(last[1]) + k) + prefix[last.end() :]


def plain_block(block: list[str]) -> str:
    """A block's lines as one escaped paragraph, or fenced code if a line is indented or
    blank; a line with a carriage return (which code cannot hold) with its edge spaces as
    entities, or alone as a one-cell table."""
    carriage = any("\r" in line for line in block)
    if carriage or all(line[:1].strip() for line in block):
        for level in (1, 2):
            lines = [inline(line, [], level) for line in block]
            if None not in lines and reads(piece := "\n".join(lines), block):  # type: ignore[arg-type]
                return piece
    return cell_table(block[0]) if carriage and len(block) == 1 else fence(block)


def plain_pieces(lines: list[str]) -> list[str]:
    """Every block of the plain text as :func:`plain_block` writes it."""
    return [plain_block(lines[a:b]) for a, b in blocks_of(lines, [False] * len(lines))]


def render(lines: list[str], style: Style, spans: list[list], level: int) -> str | None:
    """The lines as one block in the style, or None when the style cannot hold them."""
    if style.kind == "code":
        if level or any("\r" in line for line in lines):
            return None
        block = fence(lines, style.detail)
    elif style.kind == "table":
        rows = [[inline(cell, [], level, cell=True) for cell in line.split("\t")] for line in lines]
        if not level or len({len(row) for row in rows}) != 1 or any(None in row for row in rows):
            return None
        rows.insert(1, ["---"] * len(rows[0]))
        block = "\n".join("| " + " | ".join(row) + " |" for row in rows)  # type: ignore[arg-type]
    else:
        block = inline(lines[0], spans[0], level)
        if block is not None and style.kind == "heading":
            if block.endswith("#") and not block.endswith("\\#"):
                block = block[:-1] + "\\#"  # not a closing sequence
            block = f"{style.detail} {block}"
    if block is None:
        return None
    pad = re.sub(r"[^>\s]", " ", style.prefix)  # continuation lines: quote marks stay
    first, *rest = block.split("\n")
    return "\n".join(
        [style.prefix + first, *(pad + line if line else pad.rstrip() for line in rest)]
    )


def fence(lines: list[str], info: str = "") -> str:
    """Lines verbatim in a fenced code block, its fence longer than any backtick run."""
    longest = max((len(run) for line in lines for run in re.findall("`+", line)), default=0)
    marks = "`" * max(3, longest + 1)
    return "\n".join([marks + ("" if "`" in info else info), *lines, marks])


def cell_table(line: str) -> str:
    """The line as a one-cell table, all escaped, empty images guarding its edges."""
    text = PUNCT.sub(r"\\\1", line).replace("\r", "&#13;")
    return f"| ![](){text}![]() |\n| --- |"


def inline(line: str, spans: list, level: int, cell: bool = False) -> str | None:
    """The line as inline text: 0 with the model's spans, 1 minimally escaped, 2 all escaped."""
    body = line.strip(MD_TRIM_CHARS)
    lead = line[: len(line) - len(line.lstrip(MD_TRIM_CHARS))]
    trail = line[len(lead) + len(body) :]
    if "\v" in lead[:1] + trail[-1:] or not (body or cell):
        return None
    if not body:
        return "".join(map(entity, line))
    if level == 0:
        text = marked(body, spans, cell)
        if text is None or lead or trail:
            return None
    elif level == 1:
        text = escape_text(body, None, None, in_link=False, cell=cell)
        text = text if lead else escape_line_start(text, body)
    else:
        text = PUNCT.sub(r"\\\1", body)
    text = entity(lead[:1]) + lead[1:] + text + trail[:-1] + entity(trail[-1:])
    return text.replace("\r", "&#13;")


def entity(char: str) -> str:
    """A numeric character reference for the character ("" for none)."""
    return f"&#{ord(char)};" if char else ""


def marked(line: str, spans: list, cell: bool) -> str | None:
    """The line with the model's spans around their text, in order, where it stands as whole
    words (None if no span fits)."""
    chosen: list[tuple[int, int, str]] = []
    for markup, text in spans:
        edges = (r"(?<!\w)" if text[0].isalnum() else "", r"(?!\w)" if text[-1].isalnum() else "")
        found = re.compile(re.escape(text).join(edges)).search(line, chosen[-1][1] if chosen else 0)
        chosen += [(found.start(), found.end(), markup)] if found else []
    if not chosen:
        return None
    out: list[str] = []
    pos, prev = 0, None
    for start, end, markup in chosen:
        out.append(escape_text(line[pos:start], prev, markup[0], in_link=False, cell=cell))
        if markup == "`":
            out.append(code_span(line[start:end], "cell" if cell else "para"))
        else:
            inner = escape_text(line[start:end], markup[-1], markup[0], in_link=False, cell=cell)
            out.append(markup + inner + markup)
        pos, prev = end, markup[-1]
    out.append(escape_text(line[pos:], prev, None, in_link=False, cell=cell))
    text = "".join(out)
    return escape_line_start(text, line) if chosen[0][0] else text
