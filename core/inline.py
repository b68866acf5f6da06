"""Canonical Markdown, written: a leaf block's inline content, escaped so it reads back as
itself.

The HTML cleaner (``tasks/clean/``) turns a block's inline content into text with
private-use markers for the markup (:data:`EM` ... :data:`BR`); :func:`render_inline` then
resolves them with the whole paragraph in view, so escaping and emphasis delimiters depend
on their neighbours, and verifies the result by parsing it back with :data:`core.markdown.MD`.
The formatters (``core/rules.py``) write their text through it too, so there is one way to
escape a line.

>>> render_inline(f"Use {EM}small{EM_END} tools, 2 * 3 of them.", "para")
'Use *small* tools, 2 * 3 of them.'
>>> render_inline("# not a heading", "para")
'\\\\# not a heading'
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from markdown_it.token import Token

from core.markdown import MD

EM, EM_END, STRONG, STRONG_END, CODE, CODE_END = (chr(0xE000 + i) for i in range(6))
LINK, LINK_URL, LINK_END, IMG, IMG_SRC, IMG_END, BR = (chr(0xE006 + i) for i in range(7))
OPENERS = {EM: "em", STRONG: "strong", LINK: "link"}
CLOSERS = {EM_END: "em", STRONG_END: "strong"}
MARKED = re.compile(
    f"{CODE}(.*?){CODE_END}"
    f"|{LINK_URL}([^{LINK_END}]*){LINK_END}"
    f"|{IMG}([^{IMG_SRC}]*){IMG_SRC}([^{IMG_END}]*){IMG_END}"
    f"|([{EM}{EM_END}{STRONG}{STRONG_END}{LINK}{BR}])",
    re.S,
)
WS = re.compile(r"\s+")


@dataclass
class Span:
    """An inline container: em, strong, link (with its URL) or the block itself (root)."""

    kind: str
    children: list[Any] = field(default_factory=list)
    url: str = ""


def parse_marked(marked: str) -> Span:
    """The tree of a marked inline string; leaves are (kind, *values) tuples."""
    root = Span("root")
    stack = [root]
    pos = 0
    for match in MARKED.finditer(marked):
        if match.start() > pos:
            stack[-1].children.append(("text", marked[pos : match.start()]))
        pos = match.end()
        code, url, alt, src, mark = match.groups()
        if code is not None:
            for i, piece in enumerate(code.split(BR)):
                if i:
                    stack[-1].children.append(("br",))
                stack[-1].children.append(("code", piece))
        elif url is not None:
            if stack[-1].kind == "link":
                stack.pop().url = url
        elif alt is not None:
            stack[-1].children.append(("img", alt, src))
        elif mark in OPENERS:
            span = Span(OPENERS[mark])
            stack[-1].children.append(span)
            stack.append(span)
        elif mark in CLOSERS:
            if stack[-1].kind == CLOSERS[mark]:
                stack.pop()
        else:
            stack[-1].children.append(("br",))
    if pos < len(marked):
        stack[-1].children.append(("text", marked[pos:]))
    return root


def has_content(items: list[Any]) -> bool:
    """Any text, code or image among these items (recursively)."""
    for item in items:
        if isinstance(item, Span):
            if has_content(item.children):
                return True
        elif item[0] in ("code", "img") or (item[0] == "text" and item[1].strip()):
            return True
    return False


def tidy(span: Span, breaks: bool) -> list[Any]:
    """A span's children cleaned: whitespace collapsed, markers hugging text, empty spans gone."""
    out: list[Any] = []
    for child in span.children:
        if isinstance(child, Span):
            inner = [
                grand
                for item in tidy(child, breaks)
                for grand in (
                    item.children if isinstance(item, Span) and item.kind == child.kind else [item]
                )
            ]
            lead, inner, trail = hug(inner)
            out.extend(lead)
            if has_content(inner):
                out.append(Span(child.kind, inner, child.url))
            out.extend(trail)
        elif child[0] == "text":
            out.append(("text", WS.sub(" ", child[1])))
        elif child[0] == "code":
            code = WS.sub(" ", child[1])
            core = code.strip(" ")
            if code.startswith(" "):
                out.append(("text", " "))
            if core:
                out.append(("code", core))
            if code.endswith(" ") and core:
                out.append(("text", " "))
        elif child[0] == "br":
            out.append(("br",) if breaks else ("text", " "))
        else:
            out.append(child)
    return merge_items(out)


def hug(items: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """Split leading and trailing spaces/breaks off a span's content."""
    items = list(items)
    lead: list[Any] = []
    trail: list[Any] = []
    while items and is_blank(items[0]):
        lead.append(items.pop(0))
    while items and is_blank(items[-1]):
        trail.insert(0, items.pop())
    if items and not isinstance(items[0], Span) and items[0][0] == "text":
        text = items[0][1]
        if text != text.lstrip(" "):
            lead.append(("text", " "))
            items[0] = ("text", text.lstrip(" "))
    if items and not isinstance(items[-1], Span) and items[-1][0] == "text":
        text = items[-1][1]
        if text != text.rstrip(" "):
            trail.insert(0, ("text", " "))
            items[-1] = ("text", text.rstrip(" "))
    return lead, items, trail


def is_blank(item: Any) -> bool:
    """A break or whitespace-only text."""
    return not isinstance(item, Span) and (
        item[0] == "br" or (item[0] == "text" and not item[1].strip())
    )


def merge_items(items: list[Any]) -> list[Any]:
    """Join adjacent text, code or same-kind em/strong; drop spaces around breaks, extra breaks."""
    out: list[Any] = []
    for item in items:
        previous = out[-1] if out else None
        kind = "span" if isinstance(item, Span) else item[0]
        before = None if previous is None else "span" if isinstance(previous, Span) else previous[0]
        if kind == "span" and before == "span" and previous.kind == item.kind != "link":
            previous.children = merge_items(previous.children + item.children)
        elif kind == "text" and before == "text":
            out[-1] = ("text", re.sub(" {2,}", " ", previous[1] + item[1]))
        elif kind == "text" and before == "br":
            if item[1].lstrip(" "):
                out.append(("text", item[1].lstrip(" ")))
        elif kind == "code" and before == "code":
            out[-1] = ("code", previous[1] + item[1])
        elif kind == "br" and before == "text":
            text = previous[1].rstrip(" ")
            out.pop()
            if text:
                out.append(("text", text))
            if not out or isinstance(out[-1], Span) or out[-1][0] != "br":
                out.append(item)
        elif not (kind == "br" and before == "br") and not (kind == "text" and not item[1]):
            out.append(item)
    return out


def trim(items: list[Any]) -> list[Any]:
    """Drop leading/trailing spaces and breaks of a whole block."""
    items = hug(items)[1]
    while items and is_blank(items[0]):
        items.pop(0)
    while items and is_blank(items[-1]):
        items.pop()
    return items


# Atoms: ("text", s, in_link) | ("delim", marker, pair_id, is_open) | ("raw", s) | ("br",)


def to_atoms(items: list[Any], context: str) -> list[tuple]:
    """Flatten the tidy tree into atoms; emphasis pairs are numbered."""
    atoms: list[tuple] = []
    counter = [0]

    def walk(nodes: list[Any], link: bool) -> None:
        for node in nodes:
            if isinstance(node, Span) and node.kind in ("em", "strong"):
                counter[0] += 1
                pair, marker = counter[0], "*" if node.kind == "em" else "**"
                atoms.append(("delim", marker, pair, True))
                walk(node.children, link)
                atoms.append(("delim", marker, pair, False))
            elif isinstance(node, Span):
                atoms.append(("link", "[", 0, True))
                walk(node.children, True)
                atoms.append(("link", f"]({destination(node.url, context)})", 0, False))
            elif node[0] == "text":
                atoms.append(("text", node[1], link))
            elif node[0] == "code":
                atoms.append(("raw", code_span(node[1], context)))
            elif node[0] == "img":
                atoms.append(("raw", image(node[1], node[2], context)))
            else:
                atoms.append(("br",))

    walk(items, False)
    return atoms


def code_span(code: str, context: str) -> str:
    """A code span with a fence longer than any backtick run inside."""
    if context == "cell":
        code = code.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * (longest + 1)
    if longest or (code.startswith(" ") and code.endswith(" ")):
        code = f" {code} "
    return f"{fence}{code}{fence}"


def destination(url: str, context: str) -> str:
    """A link destination: spaces and brackets percent-encoded, ``<...>`` if it has parens."""
    url = WS.sub("%20", url.strip())
    for char, code in (("\\", "%5C"), ("<", "%3C"), (">", "%3E"), ("|", "%7C")):
        if char != "|" or context == "cell":
            url = url.replace(char, code)
    return f"<{url}>" if "(" in url or ")" in url else url


def image(alt: str, src: str, context: str) -> str:
    """``![alt](src)``."""
    alt = re.sub(r"([\\\[\]*_`<>&!|])", r"\\\1", " ".join(alt.split()))
    return f"![{alt}]({destination(src, context)})"


ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def is_punct(char: str) -> bool:
    """CommonMark punctuation (ASCII punctuation, Unicode P* and S*)."""
    return char in ASCII_PUNCT or unicodedata.category(char)[0] in "PS"


def is_space(char: str | None) -> bool:
    """Whitespace, or a line edge (None)."""
    return char is None or char.isspace()


SPECIAL = re.compile(r"[\\*_`<&\[\]!|]")


def escape_text(text: str, prev: str | None, nxt: str | None, *, in_link: bool, cell: bool) -> str:
    """Backslash-escape the characters of ``text`` that its neighbours would make markup."""

    def fix(match: re.Match) -> str:
        i, char = match.start(), match.group()
        before = text[i - 1] if i else prev
        after = text[i + 1] if i + 1 < len(text) else nxt
        rest = text[i + 1 : i + 40] if char == "&" else ""
        escape = needs_escape(char, before, after, rest, in_link=in_link, cell=cell)
        return "\\" + char if escape else char

    return SPECIAL.sub(fix, text)


def needs_escape(
    char: str, before: str | None, after: str | None, rest: str, *, in_link: bool, cell: bool
) -> bool:
    """Whether one literal character could be read as markup where it stands."""
    if char == "\\":
        return after is None or after in ASCII_PUNCT
    if char == "*":
        return not (is_space(before) and is_space(after))
    if char == "_":
        both_space = is_space(before) and is_space(after)
        both_word = not (is_space(before) or is_space(after) or is_punct(before) or is_punct(after))
        return not (both_space or both_word)
    if char == "`":
        return True
    if char == "<":
        return after is not None and (after in "/!?" or (after.isascii() and after.isalpha()))
    if char == "&":
        return re.match(r"#?[A-Za-z0-9]+;", rest) is not None
    if char in "[]":
        return in_link or (char == "]" and after is not None and after in "(:")
    if char == "!":
        return after == "["
    if char == "|":
        return cell
    return False


ORDERED_ITEM = re.compile(r"\d{1,9}(?=[.)](?: |$))")  # escape the . or ) after the number
BLOCK_START = re.compile(
    r"#{1,6}(?: |$)"  # ATX heading
    r"|>"  # quote
    r"|[-+*](?: |$)"  # bullet
    r"|(?:[-*_] *){3,}$"  # thematic break
    r"|(?:=+|-+) *$"  # setext underline
    r"|~~~"  # fence
    r"|[|:\- ]*-[|:\- ]*$"  # table delimiter row
)


def escape_line_start(escaped: str, raw: str) -> str:
    """Escape a paragraph line's start that would open a block (``# x``, ``> x``, ``1. x``)."""
    if escaped.startswith("\\"):
        return escaped
    number = ORDERED_ITEM.match(raw)
    if number:
        return escaped[: number.end()] + "\\" + escaped[number.end() :]
    return "\\" + escaped if BLOCK_START.match(raw) else escaped


def render_atoms(atoms: list[tuple], context: str, dropped: set[int], escape_all: bool) -> str:
    """The Markdown string of the atoms, emphasis pairs in ``dropped`` left out."""
    shown = [("raw", "") if a[0] == "delim" and a[2] in dropped else a for a in atoms]
    strings = [atom_text(a) for a in shown]
    prevs, nexts = edge_chars(strings)
    out: list[str] = []
    line_start = True
    for i, atom in enumerate(shown):
        if atom[0] != "text":
            out.append(strings[i])
            line_start = atom[0] == "br" or (line_start and not strings[i])
            continue
        prev, nxt = prevs[i], nexts[i]
        text = atom[1]
        if escape_all:
            escaped = "".join("\\" + c if c in ASCII_PUNCT else c for c in text)
        else:
            escaped = escape_text(text, prev, nxt, in_link=atom[2], cell=context == "cell")
            if line_start and context == "para":
                escaped = escape_line_start(escaped, text)
        out.append(escaped)
        line_start = False
    rendered = "".join(out)
    if context == "heading":
        rendered = re.sub(r"(^|\s)(#+)$", r"\1\\\2", rendered)
    return rendered


def edge_chars(strings: list[str]) -> tuple[list[str | None], list[str | None]]:
    """For each string, the last character before it and the first after it (None at edges)."""
    prevs: list[str | None] = []
    last: str | None = None
    for string in strings:
        prevs.append(last)
        last = string[-1] if string else last
    nexts: list[str | None] = []
    first: str | None = None
    for string in reversed(strings):
        nexts.append(first)
        first = string[0] if string else first
    return prevs, nexts[::-1]


def atom_text(atom: tuple) -> str:
    """An atom's own characters (text unescaped)."""
    if atom[0] in ("delim", "link"):
        return atom[1]
    if atom[0] == "br":
        return "\\\n"
    return atom[1]


def bad_pairs(atoms: list[tuple], dropped: set[int]) -> set[int]:
    """Emphasis pairs whose delimiters would not open/close where they stand."""
    strings = [atom_text(a) if not (a[0] == "delim" and a[2] in dropped) else "" for a in atoms]
    prevs, nexts = edge_chars(strings)
    bad: set[int] = set()
    i = 0
    while i < len(atoms):
        if atoms[i][0] != "delim" or atoms[i][2] in dropped:
            i += 1
            continue
        run = []
        j = i
        while j < len(atoms) and (not strings[j] or atoms[j][0] == "delim"):
            if strings[j]:
                run.append(atoms[j])
            j += 1
        prev = prevs[i] or " "
        nxt = nexts[j - 1] or " "
        left = not (is_space(nxt) or (is_punct(nxt) and not (is_space(prev) or is_punct(prev))))
        right = not (is_space(prev) or (is_punct(prev) and not (is_space(nxt) or is_punct(nxt))))
        opens = [a[2] for a in run if a[3]]
        closes = [a[2] for a in run if not a[3]]
        if opens and (closes or not left):
            bad.update(opens)
        if closes and not right:
            bad.update(closes)
        i = j
    return bad


def expected_signature(atoms: list[tuple], dropped: set[int], context: str) -> str:
    """What markdown-it should read back from the atoms (see :func:`token_signature`)."""
    parts: list[str] = []
    for atom in atoms:
        if atom[0] == "text":
            parts.append(atom[1])
        elif atom[0] == "br":
            parts.append("\n")
        elif atom[0] == "delim" and atom[2] not in dropped:
            parts.append(SIGNS[("em" if atom[1] == "*" else "strong", atom[3])])
        elif atom[0] == "link":
            parts.append(SIGNS[("link", atom[3])])
        elif atom[0] == "raw" and atom[1].startswith("!["):
            parts.append(SIGNS[("image", True)])
        elif atom[0] == "raw" and atom[1]:
            content = code_content(atom[1])
            if context == "cell":
                content = content.replace("\\|", "|")
            parts.append(SIGNS[("code", True)] + content + SIGNS[("code", False)])
    return canonical_signature("".join(parts))


SIGNS = {
    ("em", True): "\ue101",
    ("strong", True): "\ue102",
    ("link", True): "\ue103",
    ("em", False): "\ue111",
    ("strong", False): "\ue112",
    ("link", False): "\ue113",
    ("code", True): "\ue121",
    ("code", False): "\ue122",
    ("image", True): "\ue123",
}


def code_content(span: str) -> str:
    """The content markdown-it reads from a rendered code span."""
    fence = len(span) - len(span.lstrip("`"))
    inner = span[fence:-fence]
    if inner.startswith(" ") and inner.endswith(" ") and inner.strip(" "):
        inner = inner[1:-1]
    return inner


def canonical_signature(sig: str) -> str:
    """Sort runs of consecutive openers (and closers): ``***x***`` nests either way."""
    sig = re.sub("[\ue101-\ue103]{2,}", lambda m: "".join(sorted(m.group(0))), sig)
    return re.sub("[\ue111-\ue113]{2,}", lambda m: "".join(sorted(m.group(0))), sig)


def token_signature(children: list[Token]) -> str:
    """The inline tokens markdown-it parsed, as a signature string."""
    parts: list[str] = []
    for token in children:
        kind = token.type
        if kind == "text":
            parts.append(token.content)
        elif kind in ("hardbreak", "softbreak"):
            parts.append("\n" if kind == "hardbreak" else "\ue1ff")
        elif kind == "code_inline":
            parts.append(SIGNS[("code", True)] + token.content + SIGNS[("code", False)])
        elif kind == "image":
            parts.append(SIGNS[("image", True)])
        elif kind.endswith(("_open", "_close")) and kind.split("_")[0] in ("em", "strong", "link"):
            parts.append(SIGNS[(kind.split("_")[0], kind.endswith("_open"))])
        else:
            parts.append("\ue1fe" + token.content)
    return canonical_signature("".join(parts))


def parsed_inline(rendered: str, context: str, level: int) -> list[Token] | None:
    """markdown-it's inline children of the rendered block, or None if it is not that block."""
    if context == "heading":
        tokens = MD.parse(f"{'#' * level} {rendered}")
        shape = ["heading_open", "inline", "heading_close"]
    elif context == "cell":
        tokens = MD.parse(f"| {rendered} |\n| --- |")
        shape = ["table_open", "thead_open", "tr_open", "th_open", "inline"]
        shape += ["th_close", "tr_close", "thead_close", "table_close"]
    else:
        tokens = MD.parse(rendered)
        shape = ["paragraph_open", "inline", "paragraph_close"]
    if [t.type for t in tokens] != shape:
        return None
    if context == "heading" and tokens[0].tag != f"h{level}":
        return None
    return next(t.children or [] for t in tokens if t.type == "inline")


def render_inline(marked: str, context: str, level: int = 0) -> str:
    """Markdown for a marked inline string, verified by parsing it back with markdown-it."""
    items = trim(tidy(parse_marked(marked), breaks=context == "para"))
    if not has_content(items):
        return ""
    atoms = to_atoms(items, context)
    pairs = {a[2] for a in atoms if a[0] == "delim"}
    attempts = [
        (atoms, False, False),  # as rendered
        (atoms, True, False),  # without emphasis
        (to_atoms(unlink(items), context), True, True),  # no links, all punctuation escaped
    ]
    rendered = ""
    for candidate, no_emphasis, escape_all in attempts:
        dropped = set(pairs) if no_emphasis else settle_pairs(candidate)
        rendered = render_atoms(candidate, context, dropped, escape_all)
        children = parsed_inline(rendered, context, level)
        if children is not None and token_signature(children) == (
            expected_signature(candidate, dropped, context)
        ):
            return rendered
    return rendered


def unlink(items: list[Any]) -> list[Any]:
    """The items with links replaced by their text (last-resort rendering)."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, Span) and item.kind == "link":
            out.extend(unlink(item.children))
        elif isinstance(item, Span):
            out.append(Span(item.kind, unlink(item.children), item.url))
        else:
            out.append(item)
    return merge_items(out)


def settle_pairs(atoms: list[tuple]) -> set[int]:
    """Drop emphasis pairs that cannot be delimited where they stand, until none is left."""
    dropped: set[int] = set()
    while True:
        bad = bad_pairs(atoms, dropped) - dropped
        if not bad:
            return dropped
        dropped |= bad
