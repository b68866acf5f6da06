"""Markdown files as pages: front matter (YAML or TOML), reference links, footnotes, then HTML."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import yaml

from core.markdown import MD, inline_plain
from tasks.clean.html import collapse
from tasks.clean.metadata import person_names

FRONT_MATTER = re.compile(
    r"\A\ufeff?(?:---[ \t]*\r?\n(?P<yaml>.*?)\r?\n(?:---|\.\.\.)"  # YAML (Jekyll, Hugo)
    r"|\+\+\+[ \t]*\r?\n(?P<toml>.*?)\r?\n\+\+\+)"  # TOML (Zola, Hugo)
    r"[ \t]*(?:\r?\n|\Z)",
    re.S,
)
PATH_DATE = re.compile(r"(?:\A|/)(\d{4})/(\d{2})/(\d{2})(?:/|\Z)")  # Zola's "2014/12/12/slug"
FrontMatter = dict[str, Any]  # whatever a file's YAML or TOML holds: no fixed keys


def split_front_matter(markdown: str) -> tuple[FrontMatter, str]:
    """(front matter fields, the rest) of a Markdown file: YAML between ``---`` lines or TOML
    between ``+++`` lines; a front matter that does not parse gives its ``key: value`` or
    ``key = "value"`` lines.

    >>> split_front_matter('+++\\ntitle = "On Tools"\\nauthors = ["Ada"]\\n+++\\n\\nBody.')
    ({'title': 'On Tools', 'authors': ['Ada']}, '\\nBody.')
    >>> split_front_matter("---\\ntitle: On Tools\\n---\\nBody.")
    ({'title': 'On Tools'}, 'Body.')
    """
    match = FRONT_MATTER.match(markdown)
    if not match:
        return {}, markdown
    if match.group("toml") is not None:
        fields = parse_toml(match.group("toml"))
    else:
        try:
            fields = yaml.safe_load(match.group("yaml"))
        except yaml.YAMLError:
            fields = dict(re.findall(r"^(\w+):\s*(.*?)\s*$", match.group("yaml"), re.M))
    return (fields if isinstance(fields, dict) else {}), markdown[match.end() :]


def parse_toml(text: str) -> FrontMatter:
    """TOML front matter; when broken, its top-level ``key = value`` lines (quotes dropped).

    >>> parse_toml('title = "A"\\ndate = 2024-02-01')
    {'title': 'A', 'date': datetime.date(2024, 2, 1)}
    >>> parse_toml('title = "A "quoted" title"\\n[extra]\\nteam = "B"')
    {'title': 'A "quoted" title'}
    """
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        top = re.split(r"^\s*\[", text, maxsplit=1, flags=re.M)[0]  # before the first [table]
        pairs = re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", top, re.M)
        return {key: re.sub(r"\A([\"'])(.*)\1\Z", r"\2", value) for key, value in pairs}


def front_matter_author(fields: FrontMatter) -> str | None:
    """``author`` or ``authors``: a name, a ``{name: ...}`` or a list of them, joined by ", ".

    >>> front_matter_author({"authors": ["Aaron Turon", "Niko Matsakis"]})
    'Aaron Turon, Niko Matsakis'
    >>> front_matter_author({"author": {"name": "Ada Lee"}})
    'Ada Lee'
    >>> front_matter_author({"authors": []}) is None
    True
    """
    for key in ("author", "authors"):
        names = [collapse(str(name)) for name in person_names(fields.get(key)) if name]
        if names := [name for name in names if name]:
            return ", ".join(names)
    return None


def front_matter_date(fields: FrontMatter) -> str | None:
    """``date`` (or ``published``), else the ``YYYY/MM/DD`` in a Zola ``path``, ISO-8601.

    >>> from datetime import date
    >>> front_matter_date({"date": date(2024, 2, 1)})
    '2024-02-01'
    >>> front_matter_date({"path": "inside-rust/2020/07/27/1.45.1-prerelease"})
    '2020-07-27'
    >>> front_matter_date({"path": "2020/13/45/not-a-date"}) is None
    True
    """
    for key in ("date", "published"):
        value = fields.get(key)
        if hasattr(value, "isoformat"):  # a date or datetime parsed by YAML or TOML
            return value.isoformat()
        if value:
            return str(value)
    match = PATH_DATE.search(str(fields.get("path") or ""))
    try:
        return datetime(*map(int, match.groups())).date().isoformat() if match else None
    except ValueError:  # not a calendar date
        return None


FOOTNOTE_DEFINITION = re.compile(r"\A {0,3}\[(?=\^[^\]\s]+\]:)")  # "[^1]: text", up to the "["


def separate_footnotes(markdown: str) -> str:
    """Footnote definitions (``[^1]: text``, an extension CommonMark lacks) as paragraphs of
    their own that start with the literal marker: none is read as a link reference definition
    (its text lost) or run into the line before it. Code and HTML blocks are left as they are.

    >>> print(separate_footnotes("Text.[^1]\\n\\n[^1]: One.\\n[^2]: https://two.example"))
    Text.[^1]
    <BLANKLINE>
    \\[^1]: One.
    <BLANKLINE>
    \\[^2]: https://two.example
    """
    verbatim = verbatim_lines(markdown)
    lines = markdown.split("\n")
    for number, line in enumerate(lines):
        if number not in verbatim and FOOTNOTE_DEFINITION.match(line):
            blank = "" if number == 0 or not lines[number - 1].strip() else "\n"
            lines[number] = blank + FOOTNOTE_DEFINITION.sub(r"\\[", line, count=1)
    return "\n".join(lines)


def verbatim_lines(markdown: str) -> set[int]:
    """Numbers (from 0) of the lines in code blocks and HTML blocks.

    >>> sorted(verbatim_lines("Text.\\n\\n```\\n[^1]: code\\n```"))
    [2, 3, 4]
    """
    return {
        number
        for token in MD.parse(markdown)
        if token.type in ("fence", "code_block", "html_block") and token.map
        for number in range(*token.map)
    }


def markdown_to_html(markdown: str) -> str:
    """An HTML page for a Markdown article (front matter -> title, author, date, canonical)."""
    fields, body = split_front_matter(markdown)
    body = separate_footnotes(body)
    title = fields.get("title") or first_heading(body)
    head = [f"<title>{escape_html(str(title))}</title>"] if title else []
    author, date = front_matter_author(fields), front_matter_date(fields)
    for name, value in (("author", author), ("article:published_time", date)):
        if value:
            head.append(f'<meta name="{name}" content="{escape_html(value)}">')
    canonical = fields.get("canonical_url") or fields.get("canonical") or fields.get("url")
    if canonical:
        head.append(f'<link rel="canonical" href="{escape_html(str(canonical))}">')
    return (
        f"<!DOCTYPE html><html><head>{''.join(head)}</head>"
        f"<body><article>{MD.render(body)}</article></body></html>"
    )


def first_heading(markdown: str) -> str | None:
    """Text of the first ``# `` heading."""
    tokens = MD.parse(markdown)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h1":
            return collapse(inline_plain(tokens[i + 1])) or None
    return None


def escape_html(text: str) -> str:
    """Escape for an HTML attribute or text."""
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
        text = text.replace(char, entity)
    return text
