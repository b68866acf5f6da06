"""Clean one published article page into a (plain text -> the author's Markdown) pair.

The Markdown is what the model learns to write and the plain text is what it reads, so the
Markdown is canonical (one way to write each thing) and the plain text is derived from it
by parsing alone::

    page HTML --extract_body--> article element --body_to_markdown--> Markdown
    Markdown --markdown_to_plain (markdown-it parse, markup dropped)--> plain text

One module a step: ``html`` (the vocabulary and tree helpers), ``metadata`` (title, author,
date, URL), ``body`` (the article element), ``dom`` (normalisation: inline content in leaf
blocks), ``render`` (blocks and inline content as Markdown), ``markdown_files`` (front
matter; a Markdown file as a page); this module decodes a page and makes the record.

>>> page = (
...     "<html><head><title>On Tools | by Ada Lee | Medium</title></head><body>"
...     "<nav>Sign in</nav><article><h1>On Tools</h1>"
...     "<p>Use <em>small</em> tools, <strong>2 * 3</strong> of them.</p>"
...     "<ul><li>one</li><li># two</li></ul>"
...     "<button>Follow</button></article></body></html>"
... )
>>> extract_metadata(page)["title"]
'On Tools'
>>> markdown = html_to_markdown(page)
>>> print(markdown)
# On Tools
<BLANKLINE>
Use *small* tools, **2 * 3** of them.
<BLANKLINE>
- one
- \\# two
>>> print(markdown_to_plain(markdown))
On Tools
<BLANKLINE>
Use small tools, 2 * 3 of them.
<BLANKLINE>
one
# two

Markdown conventions: ATX headings, the title as ``# Title`` on the first line; ``*em*``,
``**strong**``, backtick code spans; link text only (``[text](url)`` with keep_link_urls);
fenced code blocks with their language; ``>`` quotes; ``-`` and ``1.`` lists, tight, nested
lists indented to the parent's content column; GFM pipe tables; images dropped (unless
keep_images) but figure captions kept; ``<br>`` -> ``\\`` hard break; blocks separated by one
blank line; no trailing whitespace (also stripped from code lines); minimal escaping, and
every paragraph, heading and table cell is parsed back with markdown-it to check that it
reads as exactly the source text (else it is re-rendered without emphasis, then with every
ASCII punctuation character escaped).

Medium specifics: the export's ``section[data-field=body]`` is the body; ``graf--title`` is
the ``#`` title, body ``h3``/``h4`` become ``##``/``###``, ``graf--subtitle`` a paragraph,
``graf--pullquote`` a quote, ``graf--mixtapeEmbed`` link cards and ``graf--iframe`` embeds are
dropped (an embed's caption is kept), adjacent ``graf--pre`` blocks share one fence and
adjacent quotes one quote.

Skip rule: a Medium export names an untitled post after its first words (``h1.p-name`` is a
snippet ending in "…"). Such posts are replies to other people's posts or short notes, not
articles: about 371 of the 585 files of the ``medium-enkiv2`` export. So in an export the
title is ``h1.p-name`` only when the body has a ``graf--title``; otherwise the title is None
and :func:`clean_page` gives ``skip_reason`` "no title: a reply or note, not an article".
Files named ``draft_*`` are skipped as "draft", and articles under ``min_words`` as short.

Markdown files (:func:`markdown_to_html`) are rendered to a page first: front matter, YAML
between ``---`` lines (Jekyll, Hugo) or TOML between ``+++`` lines (Zola, Hugo), gives the
title (else the first ``#`` heading), ``author``/``authors`` and ``date`` (Zola: the
``YYYY/MM/DD`` of ``path``); reference-style links resolve like inline ones (so lose their
URLs unless keep_link_urls) and their definitions vanish; ``[^1]: ...`` footnote definitions
stay literal text, a paragraph each.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import sys
from pathlib import Path

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

import core.inline
import core.markdown
from config.settings import CleanSettings
from core.articles import Article
from core.caching import SourceOf
from core.markdown import markdown_to_plain
from core.tokens import count_tokens
from tasks.clean import body, dom, html, markdown_files, metadata, render
from tasks.clean.body import extract_body, page_body
from tasks.clean.html import parse_html
from tasks.clean.markdown_files import markdown_to_html, split_front_matter
from tasks.clean.metadata import extract_metadata, page_metadata
from tasks.clean.render import body_to_markdown, html_to_markdown

__all__ = [  # the stage's public face; the steps live in the modules named above
    "body_to_markdown",
    "clean_page",
    "clean_record",
    "decode_page",
    "extract_body",
    "extract_metadata",
    "html_to_markdown",
    "markdown_to_html",
    "parse_html",
    "read_page",
    "skip_reason",
    "split_front_matter",
]

BOMS = (  # longest first: UTF-32's marks begin with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
META_CHARSET = re.compile(  # <meta charset="x"> or <meta http-equiv=... content="...charset=x">
    rb"<meta[^>]+charset\s*=\s*[\"']?\s*([-\w.:]+)", re.IGNORECASE
)
BROWSER_LABELS = {"iso-8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252",
                  "ascii": "cp1252", "us-ascii": "cp1252"}  # fmt: skip  # WHATWG: all windows-1252


def decode_page(data: bytes, content_type: str = "", *, html: bool = True) -> str:
    """A page's bytes as text, decoded as a browser decodes them: by its byte-order mark,
    else the HTTP ``charset``, else (HTML) its ``<meta charset>`` in the first 1024 bytes,
    else UTF-8 if it is valid UTF-8, else windows-1252 (a browser's default in Western
    locales; a guess from short text picks Baltic or Central European code pages for French
    as often as not), else the encoding charset-normalizer finds; Latin-1 and ASCII labels
    read as windows-1252, as browsers read them.

    >>> decode_page("Café".encode("latin-1"), "text/html; charset=ISO-8859-1")
    'Café'
    >>> decode_page(b'<meta charset="windows-1252"><p>Caf\\xe9</p>')[-8:]
    'Café</p>'
    >>> decode_page("<p>Café</p>".encode("utf-16"))
    '<p>Café</p>'
    """
    for mark, encoding in BOMS:
        if data.startswith(mark):
            return data.decode(encoding, errors="replace")
    declared = re.search(r"charset\s*=\s*[\"']?([-\w.:]+)", content_type, re.IGNORECASE)
    found = META_CHARSET.search(data[:1024]) if html else None
    for label in (declared.group(1) if declared else None, found and found.group(1).decode()):
        encoding = _codec(label)
        if encoding:
            return data.decode(encoding, errors="replace")
    for encoding in ("utf-8", "cp1252"):  # no label: a browser's default (Western locales)
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    from charset_normalizer import from_bytes  # bytes windows-1252 leaves undefined

    best = from_bytes(data).best()
    return str(best) if best is not None else data.decode("cp1252", errors="replace")


def _codec(label: str | None) -> str | None:
    """The Python codec of a charset label, as a browser reads it; None if unknown. A page
    that says UTF-16 in ASCII is not UTF-16 (WHATWG): UTF-8."""
    if not label:
        return None
    label = label.strip().lower()
    try:
        name = codecs.lookup(BROWSER_LABELS.get(label, label)).name
    except LookupError:
        return None
    return "utf-8" if name.startswith("utf-16") else name


def read_page(path: str | Path, content_type: str = "") -> str:
    """A raw page as HTML (Markdown files rendered first), decoded as a browser would."""
    path = Path(path)
    markdown = path.suffix.lower() in (".md", ".markdown")
    text = decode_page(path.read_bytes(), content_type, html=not markdown)
    return markdown_to_html(text) if markdown else text


def skip_reason(name: str, title: str | None, words: int, min_words: int) -> str | None:
    """Why a page is not an article (None when it is one)."""
    if name.startswith("draft_"):
        return "draft"
    if not title:
        return "no title: a reply or note, not an article"
    if words < min_words:
        return f"short: {words} words < {min_words}"
    return None


def clean_record(
    path: str, sha256: str, url: str, source: str, clean: CleanSettings, content_type: str = ""
) -> Article:
    """Clean one raw page into an article record (the body of :func:`clean_page`);
    ``content_type`` is the HTTP header's, when it was fetched (its charset)."""
    soup = parse_html(read_page(path, content_type))
    meta = page_metadata(soup, url)
    markdown = body_to_markdown(
        page_body(soup),
        keep_link_urls=clean.keep_link_urls,
        keep_images=clean.keep_images,
        title=meta["title"],
    )
    plain = markdown_to_plain(markdown)
    words = len(plain.split())
    canonical = meta["canonical_url"] or url
    return {
        "id": hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16],
        "source": source,
        "url": canonical,
        "title": meta["title"],
        "author": meta["author"],
        "published": meta["published"],
        "html_sha256": sha256,
        "markdown": markdown,
        "plain": plain,
        "words": words,
        "markdown_tokens": count_tokens(markdown),
        "plain_tokens": count_tokens(plain),
        "skip_reason": skip_reason(Path(path).name, meta["title"], words, clean.min_words),
    }


STEPS = (html, metadata, body, dom, render, markdown_files, core.markdown, core.inline)
CODE = SourceOf(functions=(sys.modules[__name__], *STEPS))  # a change to any step of the
# cleaner (or to the Markdown it writes with) must not return records cached from old code


@task(cache_policy=INPUTS + TASK_SOURCE + CODE, persist_result=True)
def clean_page(
    path: str, sha256: str, url: str, source: str, clean: CleanSettings, content_type: str = ""
) -> Article:
    """Clean one raw page (HTML or Markdown file) into an article record."""
    return clean_record(path, sha256, url, source, clean, content_type)
