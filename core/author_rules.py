"""The author's rules: the general rules (``core.rules``), corrected by the author's articles.

The general rules know nothing of any one writer: every heading after a paragraph is an
``##``, every run of lines a bulleted list, a quote is never seen. A writer is consistent
where the rules are not: their sub-sections are ``###``, their steps are numbered, their runs
of lines are verses or quotes. This module learns those habits from the author's own (plain
text, Markdown) pairs, in seconds and without a GPU, as a table: for each non-blank line, a
few views of its context (the general rules' kind and where the line stands in its block, its
length and last character, the previous line's kind and last character, the last heading's
level), each with how often the author gave a line in that context each kind. Reading a
text, the views back each other off, coarsest first: each view's counts are blended with
the coarser views' probabilities (:data:`PRIOR` lines' worth), so a context the author wrote
once already speaks, and one written a hundred times speaks for itself. A beam search over
the lines (the previous kind is part of the context; the lines of a block share its first
line's kind) picks the likeliest kinds.

Tables stay where the general rules put them (only they read a row's tabs); code does not: an
author who lists API names gets a list where the rules fence them, and a line the author wrote
at least :data:`MIN_COUNT` times (a footer, a recurring section's heading) keeps the kind the
author gave it. A paragraph whose lines the author ends in hard line breaks is a ``verse``.
Every kind renders the line's own text, so the author's rules, like the general ones, never
change a word:
``markdown_to_plain(AuthorRules.fit(pairs)(plain)) == plain``. The table is a few thousand
counts in a JSON file that goes with the fine-tuned model (``finetune.scaffold: author``).

>>> pairs = [("Tools\\n\\nI use:\\n\\nhammers for nails.\\nsaws for wood.",
...           "### Tools\\n\\nI use:\\n\\n1. hammers for nails.\\n2. saws for wood.")] * 3
>>> print(AuthorRules.fit(pairs)("Gear\\n\\nI own:\\n\\nropes for climbing.\\npitons for rock."))
### Gear
<BLANKLINE>
I own:
<BLANKLINE>
1. ropes for climbing.
2. pitons for rock.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it.token import Token

from core.io import write_atomic
from core.markdown import MD, content_lines, inline_plain, plain_blocks
from core.rules import HEADINGS, classify, levelled, markdown_of, spanned

MIN_COUNT = 3  # times the author wrote a line before its own kind is kept (a footer, say)
PRIOR = 0.3  # lines' worth of the coarser views in a view's probabilities (chosen on folds)
BEAM = 4  # kind sequences kept while reading the lines (4 and 16 chose alike on the valid split)
UNSEEN = 1e-3  # probability of a block's line going on in a kind its context never showed
TABLE = "table"  # the one kind only the general rules assign: it needs a row's tabs
AUTHOR_RULES_JSON = "author_rules.json"


def line_kinds(markdown: str) -> list[tuple[str, str]]:
    """Each non-blank line of ``markdown_to_plain(markdown)`` with the kind of block the author
    put it in: para, verse (a paragraph with hard line breaks), h1..h6, bullet, ordered, quote,
    code, table or html (a list item inside a quote is an item).

    >>> line_kinds("## Tools\\n\\n> Wise words.\\n\\n1. hammers\\n\\n| a | b |\\n|---|---|\\n| 1 |")
    [('Tools', 'h2'), ('Wise words.', 'quote'), ('hammers', 'ordered'), ('a\\tb', 'table'), \
('1\\t', 'table')]
    """
    found: list[tuple[str, str]] = []
    open_blocks: list[Token] = []
    cells: list[str] = []
    for token in MD.parse(markdown):
        if token.nesting == 1:
            open_blocks.append(token)
        elif token.nesting == -1:
            open_blocks.pop()
        types = [t.type for t in open_blocks]
        if token.type in ("fence", "code_block"):
            found += [(line, "code") for line in token.content.removesuffix("\n").split("\n")]
        elif token.type == "html_block":
            found += [(line, "html") for line in content_lines(token.content)]
        elif token.type == "tr_open":
            cells = []
        elif token.type == "tr_close":
            found.append(("\t".join(cells), "table"))
        elif token.type == "inline" and "tr_open" in types:
            cells.append(inline_plain(token).replace("\n", " "))
        elif token.type == "inline":
            kind = block_kind(open_blocks)
            broken = any(child.type == "hardbreak" for child in token.children or [])
            kind = "verse" if kind == "para" and broken else kind
            found += [(line, kind) for line in content_lines(inline_plain(token))]
    return [(line, kind) for line, kind in found if line]


def block_kind(open_blocks: list[Token]) -> str:
    """The kind of the innermost block a line of text is in (its heading, list or quote)."""
    for token in reversed(open_blocks):
        if token.type == "heading_open":
            return token.tag
        if token.type == "bullet_list_open":
            return "bullet"
        if token.type == "ordered_list_open":
            return "ordered"
        if token.type == "blockquote_open":
            return "quote"
    return "para"


def read(plain: str) -> tuple[list[str], list[str], list[str]]:
    """The plain text's non-blank lines, the general rules' kind of each, and its place."""
    every = plain.split("\n") if plain else []
    rules = levelled(classify(every))
    kept = [i for i, line in enumerate(every) if line]
    return [every[i] for i in kept], [rules[i] for i in kept], places(every)


def ending(line: str | None) -> str:
    """A line's last character as a class: itself for punctuation, "a" for a letter or digit."""
    if line is None:
        return "none"
    if not line:
        return "empty"
    last = line[-1]
    return last if last in ".:?!,;)" else "a" if last.isalnum() else "other"


def length(line: str) -> int:
    """A line's length as a class: 0 (empty), 1 (<= 40 characters), 2, 3 (<= 160), 4."""
    n = len(line)
    return 0 if n == 0 else 1 if n <= 40 else 2 if n <= 80 else 3 if n <= 160 else 4


def places(lines: list[str]) -> list[str]:
    """Where each non-blank line stands in its block: single, first, mid or last.

    >>> places(["Tools", "", "hammers", "saws", "nails"])
    ['single', 'first', 'mid', 'last']
    """
    found: list[str] = []
    for start, end in plain_blocks(lines):
        n = end - start
        found += ["single"] if n == 1 else ["first", *["mid"] * (n - 2), "last"]
    return found


def views(
    lines: list[str], rules: list[str], place: list[str], i: int, previous: str, heading: str
) -> list[str]:
    """Non-blank line ``i``'s context, coarsest view first: the rules' kind ``rules[i]`` and
    its ``place`` in its block, the line's length and ending, the ``previous`` line's kind and
    ending, the last ``heading``'s kind; most specific, the line itself (a line the author
    writes again and again, like a footer)."""
    line = lines[i]
    before = ending(lines[i - 1]) if i else "none"
    own = f"rules={rules[i]} place={place[i]}"
    shape = f"length={length(line)} end={ending(line)}"
    context = f"previous={previous} before={before}"
    return [
        own,
        f"{own} {shape}",
        f"{own} {context}",
        f"{own} {context} {shape}",
        f"{own} {context} {shape} heading={heading} first={i == 0}",
        f"line={line}",
    ]


def trusted(view: str, total: int) -> bool:
    """Whether a view seen ``total`` times is evidence: any context once, a line itself
    :data:`MIN_COUNT` times (a line written twice is a coincidence, not a habit)."""
    return total >= (MIN_COUNT if view.startswith("line=") else 1)


@dataclass
class AuthorRules:
    """Counts of the author's kinds per context view; call it on plain text for Markdown."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    name = "author"  # the scaffold this is (backends.local.scaffold)

    @classmethod
    def fit(cls, pairs: Iterable[tuple[str, str]]) -> AuthorRules:
        """Counted from (plain text, the author's Markdown) pairs; a pair whose Markdown does
        not read as its plain text line for line (an edited chunk) is skipped."""
        counts: dict[str, Counter[str]] = {}
        for plain, markdown in pairs:
            found = line_kinds(markdown)
            lines, rules, place = read(plain)
            if not plain or [line for line, _ in found] != lines:
                continue
            kinds = [("para" if kind == "html" else kind) for _, kind in found]
            heading = "none"
            for i, kind in enumerate(kinds):
                previous = kinds[i - 1] if i else "start"
                for view in views(lines, rules, place, i, previous, heading):
                    counts.setdefault(view, Counter())[kind] += 1
                heading = kind if kind in HEADINGS else heading
        kept = {view: kinds for view, kinds in counts.items() if trusted(view, kinds.total())}
        return cls({view: dict(kinds) for view, kinds in kept.items()})  # only views ever used

    def probabilities(self, found: list[str], fallback: str) -> dict[str, float]:
        """The kinds' probabilities: the general rules' ``fallback`` kind, corrected by each
        view in ``found`` in turn, coarsest first, as ``(n_kind + PRIOR * p_kind) / (n +
        PRIOR)`` where ``p`` is what the coarser views gave.

        >>> author = AuthorRules({"rules=para": {"para": 9, "quote": 1}, "exact": {"quote": 1}})
        >>> def rounded(p): return {kind: round(x, 3) for kind, x in p.items()}
        >>> rounded(author.probabilities(["rules=para"], "para"))
        {'para': 0.903, 'quote': 0.097}
        >>> rounded(author.probabilities(["rules=para", "exact"], "para"))
        {'para': 0.208, 'quote': 0.792}
        """
        p = {fallback: 1.0}
        for view in found:
            seen = self.counts.get(view, {})
            total = sum(seen.values())
            if trusted(view, total):
                blend = {kind: PRIOR * q for kind, q in p.items()}
                for kind, n in seen.items():
                    blend[kind] = blend.get(kind, 0.0) + n
                p = {kind: x / (total + PRIOR) for kind, x in blend.items()}
        return p

    def kinds(self, plain: str) -> list[str]:
        """The likeliest kind of each line of ``plain`` (beam search over the non-blank lines,
        the lines of a block of one kind; code and tables as the rules say)."""
        lines, rules, place = read(plain)
        beams: list[tuple[float, list[str], str]] = [(0.0, [], "none")]
        for i, rule in enumerate(rules):
            grown = []
            for score, kinds, heading in beams:
                previous = kinds[-1] if kinds else "start"
                found = views(lines, rules, place, i, previous, heading)
                options = self.probabilities(found, rule)
                if rule == TABLE:  # a table is where the tabs say, and nowhere else
                    options = {TABLE: 1.0}
                options = {k: p for k, p in options.items() if k != TABLE or rule == TABLE}
                options = options or {rule: 1.0}
                if place[i] in ("mid", "last"):  # a block is of one kind: its first line's
                    options = {previous: options.get(previous, UNSEEN)}
                for kind, p in options.items():
                    after = kind if kind in HEADINGS else heading
                    grown.append((score + math.log(p), [*kinds, kind], after))
            beams = sorted(grown, key=lambda beam: -beam[0])[:BEAM]
        chosen = iter(beams[0][1])
        return spanned([next(chosen) if line else "blank" for line in plain.split("\n")])

    def __call__(self, plain: str) -> str:
        """``plain`` as Markdown the author's way; ``markdown_to_plain`` of it is ``plain``."""
        return markdown_of(plain.split("\n"), self.kinds(plain)) if plain else ""

    def save(self, folder: Path) -> None:
        """Written atomically as ``folder``/:data:`AUTHOR_RULES_JSON` (next to an adapter)."""
        write_atomic(Path(folder) / AUTHOR_RULES_JSON, json.dumps({"counts": self.counts}))

    @classmethod
    def load(cls, folder: Path) -> AuthorRules:
        """As :meth:`save` wrote them in ``folder``."""
        text = (Path(folder) / AUTHOR_RULES_JSON).read_text(encoding="utf-8")
        return cls(json.loads(text)["counts"])
