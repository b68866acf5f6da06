"""The ceiling: the reference without the markup plain text keeps no trace of (emphasis, strong)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from markdown_it import MarkdownIt
from markdown_it.rules_inline import backtick, emphasis, link
from markdown_it.rules_inline.state_inline import StateInline

from core.inline import escape_line_start, escape_text


def record_backticks(state: StateInline, silent: bool) -> bool:
    """markdown-it's code span rule, noting where each code span starts and ends."""
    start, count = state.pos, len(state.tokens)
    if not backtick(state, silent):
        return False
    if len(state.tokens) > count and state.tokens[-1].type == "code_inline":
        state.env[PENDING].append((state.src, start, state.pos, state.tokens[-1], None))
    return True


def record_emphasis(state: StateInline, silent: bool) -> bool:
    """markdown-it's emphasis rule, noting where each delimiter character stands."""
    start = state.pos
    if not emphasis.tokenize(state, silent):
        return False
    run = state.pos - start  # one text token per delimiter character, the last ones pushed
    for offset, token in enumerate(state.tokens[len(state.tokens) - run :]):
        state.env[PENDING].append((state.src, start + offset, start + offset + 1, token, None))
    return True


def record_link(state: StateInline, silent: bool) -> bool:
    """markdown-it's link rule, noting the label of a link that refers to it by its label.

    ``[label]`` or ``[label][]`` finds its URL by the label's text: removing markup in the
    label would lose the link, so :func:`without_invisible` writes the old label after it.
    """
    start, count = state.pos, len(state.tokens)
    if not link(state, silent):
        return False
    if silent:
        return True
    label_end = state.md.helpers.parseLinkLabel(state, start, True)
    tail = state.src[label_end + 1 : state.pos]  # parseLinkLabel restores state.pos
    opened = next(t for t in state.tokens[count:] if t.type == "link_open")
    by_label = tail in ("", "[]")
    state.env[PENDING].append((state.src, start + 1, label_end, opened, by_label))
    return True


def resolve_invisible(state: StateInline) -> None:
    """Once emphasis is paired (before text fragments merge): the edits that drop it.

    A delimiter character became markup when its token is no longer text, or is text
    emptied by a strong pair; a code span is replaced by its content, escaped.
    """
    present = {id(token) for token in state.tokens}
    pending = []
    for src, start, end, token, by_label in state.env[PENDING]:
        if id(token) not in present:
            pending.append((src, start, end, token, by_label))
        elif token.type == "link_open":
            state.env[LABELS].setdefault(src, set()).add((start, end, by_label))
        elif token.type == "code_inline":
            state.env[EDITS].setdefault(src, set()).add((start, end, token.content))
        elif token.type != "text" or not token.content:
            state.env[EDITS].setdefault(src, set()).add((start, end, None))
    state.env[PENDING] = pending


PENDING, EDITS, LABELS = "pgpt_invisible_pending", "pgpt_invisible_edits", "pgpt_labels"
RECORDING_MD = MarkdownIt("commonmark").enable("table")  # as core.markdown.MD, recording
RECORDING_MD.inline.ruler.at("backticks", record_backticks)
RECORDING_MD.inline.ruler.at("emphasis", record_emphasis)
RECORDING_MD.inline.ruler.at("link", record_link)
RECORDING_MD.inline.ruler2.before("fragments_join", "resolve_invisible", resolve_invisible)


def content_positions(
    content: str, lines: list[str], first: int, cursor: dict[int, int]
) -> list[int]:
    """Where each character of an inline token's content stands in the document.

    The content's line k is found on document line ``first + k``, after what the previous
    inline token on that line took (``cursor``: table cells share a line); an escaped ``\\|``
    of a table cell counts for its ``|``. A newline stands at its line's end; the list has
    one more entry, the content's end. Raises ValueError if a line is not found.
    """
    positions: list[int] = []
    offset = sum(len(line) for line in lines[:first])
    for k, part in enumerate(content.split("\n")):
        number = first + k
        line = lines[number] if number < len(lines) else ""
        pattern = r"\\?\|".join(re.escape(piece) for piece in part.split("|"))
        found = re.compile(pattern).search(line, cursor.get(number, 0))
        if found is None:
            raise ValueError(f"content line {part!r} not found on line {number}")
        j = found.start()
        for char in part:
            if char == "|" and line[j] == "\\":
                j += 1
            positions.append(offset + j)
            j += 1
        cursor[number] = j
        positions.append(offset + len(line.rstrip("\n")))  # the newline, or the end
        offset += len(line)
    return positions


def apply_edits(text: str, edits: Iterable[tuple[int, int, str]], lo: int, hi: int) -> str:
    """``text[lo:hi]`` with the (start, end, replacement) edits inside it applied."""
    out, done = [], lo
    for first, last, replacement in sorted(edits):
        out += [text[done:first], replacement]
        done = last
    out.append(text[done:hi])
    return "".join(out)


def without_invisible(markdown: str) -> str:
    r"""The Markdown with its invisible markup removed: what a perfect model could write.

    Emphasis and strong lose their delimiters; a code span becomes its content, escaped where
    it would otherwise read as markup. Everything else is kept character for character. It
    works on markdown-it's parse (the delimiters markdown-it pairs, at the positions it read
    them), so escaped characters, unpaired ``*`` and code spans holding ``*`` stay as they
    are; its plain text (:func:`core.markdown.markdown_to_plain`) is the reference's.

    >>> print(without_invisible(r"A **bold** and *light* word, ***both***, \*not\*."))
    A bold and light word, both, \*not\*.
    >>> print(without_invisible("Run `rm *.txt` or `a*b*c` in *2 * 3* `#` s"))
    Run rm \*.txt or a\*b\*c in 2 * 3 # s
    """
    markdown = markdown.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
    env: dict = {PENDING: [], EDITS: {}, LABELS: {}}
    tokens = RECORDING_MD.parse(markdown, env)
    if not env[EDITS]:
        return markdown
    lines = markdown.splitlines(keepends=True)
    cursor: dict[int, int] = {}
    edits: list[tuple[int, int, str]] = []
    in_table = 0
    for i, token in enumerate(tokens):
        in_table += {"table_open": 1, "table_close": -1}.get(token.type, 0)
        if token.type != "inline" or token.map is None:
            continue
        if i and tokens[i - 1].type == "heading_open" and tokens[i - 1].markup.startswith("#"):
            line = lines[token.map[0]]
            cursor[token.map[0]] = len(line) - len(line.lstrip()) + len(tokens[i - 1].markup)
        try:
            positions = content_positions(token.content, lines, token.map[0], cursor)
        except ValueError:  # not where it should be (tabs expanded): its markup stays
            continue
        spans = env[EDITS].get(token.content, set())
        labels = env[LABELS].get(token.content, set())
        for start, end, by_label in labels:  # the old label keeps the link
            if by_label and any(start <= edit < end for edit, _, _ in spans):
                label = token.content[start:end].replace("|", "\\|" if in_table else "|")
                tail = positions[end] + 1
                bracketed = markdown[tail : tail + 2] == "[]"
                edits.append((tail, tail + 2 if bracketed else tail, f"[{label}]"))
        mine = []
        for start, end, code in spans:
            first, last = positions[start], positions[end - 1] + 1
            text = ""
            if code is not None:
                before, after = markdown[first - 1 : first], markdown[last : last + 1]
                # brackets could close a label, or open a link to a defined reference
                in_link = bool(env.get("references")) or any(a <= start < b for a, b, _ in labels)
                text = escape_text(
                    code, before or None, after or None, in_link=in_link, cell=bool(in_table)
                )
            mine.append((first, last, text))
        if tokens[i - 1].type == "paragraph_open":
            mine = line_starts_escaped(markdown, mine, token.content, positions)
        edits += mine
    return apply_edits(markdown, edits, 0, len(markdown))


def line_starts_escaped(
    markdown: str, edits: list[tuple[int, int, str]], content: str, positions: list[int]
) -> list[tuple[int, int, str]]:
    """A paragraph's edits, those of a line whose start they change (``*1.* x`` -> ``1. x``,
    which would start a list) made one edit of the whole line with its start escaped."""
    offset = 0
    for part in content.split("\n"):
        lo, hi = positions[offset], positions[offset + len(part)]
        offset += len(part) + 1
        inside = [edit for edit in edits if lo <= edit[0] < hi]
        if not any(first == lo for first, _, _ in inside):
            continue
        line = apply_edits(markdown, inside, lo, hi)
        escaped = escape_line_start(line, line)
        if escaped != line:
            edits = [edit for edit in edits if edit not in inside] + [(lo, hi, escaped)]
    return edits
