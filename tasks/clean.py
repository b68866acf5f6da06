"""Clean one published article page into a (plain text -> the author's Markdown) pair.

The Markdown is what the model learns to write and the plain text is what it reads, so the
Markdown is canonical (one way to write each thing) and the plain text is derived from it
by parsing alone::

    page HTML --extract_body--> article element --body_to_markdown--> Markdown
    Markdown --markdown_to_plain (markdown-it parse, markup dropped)--> plain text

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
import copy
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, Tag
from bs4.element import ProcessingInstruction
from markdownify import MarkdownConverter
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from core.inline import (
    BR,
    CODE,
    CODE_END,
    EM,
    EM_END,
    IMG,
    IMG_END,
    IMG_SRC,
    LINK,
    LINK_END,
    LINK_URL,
    STRONG,
    STRONG_END,
    render_inline,
)
from core.markdown import MD, inline_plain, markdown_to_plain
from core.tokens import count_tokens


def word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of a text, as a set."""
    return frozenset(text.split())


# ---------------------------------------------------------------------------------------------
# HTML vocabulary

HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
CELLS = ("td", "th")
LEAVES = HEADINGS | {"p", *CELLS}  # blocks holding inline content only
TABLE_PARTS = frozenset({"table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption"})
CONTAINERS = word_set(
    """address article aside blockquote body center dd details div dl fieldset figure footer
    form header hgroup html li main nav ol section ul"""
)
BLOCKS = LEAVES | TABLE_PARTS | CONTAINERS | {"pre", "hr", "dt", "figcaption", "summary", "legend"}
JUNK = word_set(
    """audio button canvas dialog embed frame frameset head iframe input label link map math
    meta noscript object option script select source style svg template textarea title
    track video"""
)
ALWAYS_CHROME = frozenset({"nav", "aside", "footer", "form"})

# Class/id words that mark site chrome (camelCase and dashes split into words).
CHROME_WORDS = word_set(
    """share sharing social clap claps follow followers subscribe subscription newsletter
    signup related recommend recommended recommendation recommendations comment comments
    response responses byline metabar breadcrumb breadcrumbs cookie cookies promo promotion
    advert advertisement sponsored mixtape divider sidebar widget popup modal paywall
    pagination disqus toolbar"""
)
CHROME_PAIRS = frozenset(
    {
        ("post", "meta"),
        ("entry", "meta"),
        ("article", "meta"),
        ("more", "from"),
        ("author", "card"),
        ("author", "bio"),
        ("about", "author"),
        ("post", "nav"),
        ("post", "navigation"),
        ("post", "footer"),
        ("post", "actions"),
        ("site", "header"),
        ("site", "footer"),
        ("site", "nav"),
        ("sign", "up"),
        ("sign", "in"),
        ("reading", "time"),
        ("read", "next"),
    }
)
DISCUSSION_WORDS = frozenset({"comment", "comments", "response", "responses", "disqus"})

BODY_SELECTORS = (
    "section[data-field=body]",  # Medium export
    ".postArticle-content",  # Medium page
    "[itemprop=articleBody]",
    ".post-content",
    ".entry-content",
    ".article-content",
    ".article-body",
    ".post-body",
    "article",
    "main",
    "[role=main]",
)

# ---------------------------------------------------------------------------------------------
# Metadata


def extract_metadata(html: str, url: str | None = None) -> dict:
    """Title, author, published (ISO-8601) and canonical URL of an article page."""
    return page_metadata(parse_html(html), url)


def parse_html(html: str) -> BeautifulSoup:
    """Parse HTML with lxml, nested no deeper than :data:`MAX_DEPTH`."""
    soup = BeautifulSoup(html, "lxml")
    flatten_deep(soup)
    return soup


@dataclass
class Page:
    """A parsed page with its ``<meta>`` values and JSON-LD objects."""

    soup: BeautifulSoup
    meta: dict[str, str]
    ld: list[dict]


def page_metadata(soup: BeautifulSoup, url: str | None = None) -> dict:
    """:func:`extract_metadata` on a parsed page."""
    page = Page(soup, meta_values(soup), json_ld(soup))
    return {
        "title": first_text(title_candidates(page)),
        "author": first_text(author_candidates(page)),
        "published": first_text(iso_date(d) for d in date_candidates(page)),
        "canonical_url": first_text(canonical_candidates(page, url)),
    }


def first_text(candidates: Iterable[str | None]) -> str | None:
    """The first candidate that is non-empty after collapsing whitespace."""
    for candidate in candidates:
        text = collapse(candidate or "")
        if text:
            return text
    return None


def collapse(text: str) -> str:
    """Whitespace runs -> one space, stripped."""
    return " ".join(text.split())


def meta_values(soup: BeautifulSoup) -> dict[str, str]:
    """``<meta>`` contents by ``property``, ``name`` or ``itemprop`` (the first one wins)."""
    values: dict[str, str] = {}
    for tag in soup.find_all("meta", attrs={"content": True}):
        for attr in ("property", "name", "itemprop"):
            key = tag.get(attr)
            if isinstance(key, str) and tag["content"]:
                values.setdefault(key, str(tag["content"]))
    return values


def json_ld(soup: BeautifulSoup) -> list[dict]:
    """All JSON-LD objects of the page (``@graph`` flattened); broken JSON ignored."""
    found: list[dict] = []
    for script in soup.find_all("script", attrs={"type": "application/ld+json"}):
        try:
            data = json.loads(script.get_text(), strict=False)
        except (ValueError, RecursionError):
            continue
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            elif isinstance(item, dict):
                found.append(item)
                graph = item.get("@graph")
                stack.extend(reversed(graph) if isinstance(graph, list) else [])
    return found


def medium_export_body(soup: BeautifulSoup) -> Tag | None:
    """The body section of a Medium account export page (``section[data-field=body]``)."""
    return soup.find("section", attrs={"data-field": "body"})


def first_with_class(root: Tag | None, name: str | None, css_class: str) -> Tag | None:
    """The first ``name`` tag (any tag if None) with this class."""
    if root is None:
        return None
    return root.find(name or True, class_=css_class)


def text_of(tag: Tag | None) -> str | None:
    """Collapsed text of a tag, or None."""
    return collapse(tag.get_text(" ")) if tag is not None else None


def title_candidates(page: Page) -> Iterator[str | None]:
    """Title sources, best first (a Medium export's untitled posts have none)."""
    soup = page.soup
    yield page.meta.get("og:title")
    export = medium_export_body(soup)
    if export is not None:
        title = first_with_class(export, None, "graf--title")
        if title is not None:
            yield text_of(first_with_class(soup, "h1", "p-name"))
            yield text_of(title)
        return
    yield text_of(first_with_class(soup, None, "graf--title"))
    title = soup.find("title")
    if title:
        yield strip_title_suffix(title.get_text(), site_names(page))
    yield text_of(soup.find("h1"))


def site_names(page: Page) -> set[str]:
    """Names the site may append to ``<title>``."""
    names = {page.meta.get("og:site_name"), page.meta.get("application-name")}
    for header in page.soup.find_all("header"):
        for link in header.find_all("a", href="/"):
            names.add(link.get_text(" "))
    return {collapse(n).casefold() for n in names if n and collapse(n)}


def strip_title_suffix(title: str, sites: set[str]) -> str:
    """Remove " | by X | Medium", " — Site name" and similar suffixes from ``<title>``."""
    title = collapse(title)
    title = re.sub(r"\s+\|\s+by\s+.*$", "", title, flags=re.I)
    title = re.sub(r"\s+[|–—-]\s+Medium$", "", title, flags=re.I)
    for sep in (" | ", " — ", " – ", " - ", " · ", " :: "):
        head, found, tail = title.rpartition(sep)
        if found and head and tail.casefold() in sites:
            return head
    return title.split(" | ")[0]


def author_candidates(page: Page) -> Iterator[str | None]:
    """Author sources, best first."""
    soup = page.soup
    yield page.meta.get("author")
    yield text_of(first_with_class(soup, "a", "p-author"))
    for item in page.ld:
        yield from person_names(item.get("author"))
    for selector in ('[rel~="author"]', '[itemprop="author"]', ".byline", ".author"):
        tag = soup.select_one(selector)
        if tag is not None:
            yield clean_byline(tag.get_text(" "))


def person_names(author: Any) -> Iterator[str | None]:
    """Names in a JSON-LD ``author`` (a string, a Person, or a list of them)."""
    if isinstance(author, str):
        yield author
    elif isinstance(author, dict):
        yield author.get("name") if isinstance(author.get("name"), str) else None
    elif isinstance(author, list):
        for item in author:
            yield from person_names(item)


def clean_byline(text: str) -> str:
    """'By Ada Lee · 5 min read' -> 'Ada Lee'."""
    text = re.split(r"[·•|—]| on ", collapse(text))[0]
    return re.sub(r"^by\s+", "", text.strip(), flags=re.I)


def date_candidates(page: Page) -> Iterator[str | None]:
    """Publication date sources, best first."""
    yield page.meta.get("article:published_time")
    tag = first_with_class(page.soup, "time", "dt-published")
    yield tag.get("datetime") if tag else None
    for item in page.ld:
        value = item.get("datePublished")
        yield value if isinstance(value, str) else None
    yield page.meta.get("datePublished")
    tag = page.soup.find("time", attrs={"datetime": True})
    yield tag.get("datetime") if tag else None


def iso_date(value: str | None) -> str | None:
    """An ISO-8601 date or datetime, normalised (UTC 'Z' when zoned), or None."""
    text = (value or "").strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return text
    try:
        moment = datetime.fromisoformat(text).replace(microsecond=0)
        if moment.tzinfo is not None:
            return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"
    except (ValueError, OverflowError):
        match = re.match(r"\d{4}-\d{2}-\d{2}", text)
        return match.group(0) if match else None
    return moment.isoformat()


def canonical_candidates(page: Page, url: str | None) -> Iterator[str | None]:
    """Canonical URL sources, best first; the fetched URL last."""
    link = page.soup.find("link", rel="canonical", href=True)
    yield link.get("href") if link else None
    anchor = first_with_class(page.soup, "a", "p-canonical")
    yield anchor.get("href") if anchor else None
    yield page.meta.get("og:url")
    yield url


# ---------------------------------------------------------------------------------------------
# Body extraction


def extract_body(html: str) -> Tag:
    """The article body element of a page, with site chrome removed."""
    return page_body(parse_html(html))


def page_body(soup: BeautifulSoup) -> Tag:
    """:func:`extract_body` on a parsed page (mutates the soup)."""
    body = choose_body(soup)
    remove_chrome(body)
    return body


def choose_body(soup: BeautifulSoup) -> Tag:
    """The most specific known article container, else the element with most paragraph text."""
    for selector in BODY_SELECTORS:
        matches = [m for m in soup.select(selector) if m.get_text(strip=True)]
        if matches:
            return max(matches, key=lambda m: len(m.get_text()))
    best = max(soup.find_all(True), key=paragraph_text_length, default=None)
    if best is not None and paragraph_text_length(best) > 0:
        return best
    return soup.body or soup.html or wrap_in_div(soup)


def wrap_in_div(soup: BeautifulSoup) -> Tag:
    """A new ``div`` holding everything in the soup."""
    div = new_tag("div")
    for child in list(soup.contents):
        div.append(child.extract())
    return div


def paragraph_text_length(tag: Tag) -> int:
    """Characters of text in the tag's direct ``<p>`` children."""
    return sum(len(p.get_text()) for p in tag.find_all("p", recursive=False))


def remove_chrome(body: Tag) -> None:
    """Remove non-article elements: junk tags, site furniture and chrome-classed blocks."""
    remove_junk(body)
    for tag in tags(body, ALWAYS_CHROME):
        if tag.parent is not None:
            tag.decompose()
    for header in tags(body, {"header"}):
        if header.parent is not None and not header.find(["h1", "h2", "h3"]):
            header.decompose()
    total = len(body.get_text())
    for tag in tags(body):
        if tag.parent is not None and is_chrome(tag) and not holds_article(tag, total):
            tag.decompose()


def remove_junk(root: Tag) -> None:
    """Remove scripts, styles, embeds, form controls, comments and other non-text nodes."""
    for tag in tags(root, JUNK):
        if tag.parent is not None:
            tag.decompose()
    for node in root.find_all(string=True):
        if isinstance(node, Comment | Declaration | Doctype | ProcessingInstruction):
            node.extract()


def class_words(tag: Tag) -> list[str]:
    """Lower-case words of the tag's classes and id (``js-followButton`` -> js, follow, button)."""
    names = tag.get("class") or []
    if isinstance(names, str):
        names = names.split()
    raw = [*names, str(tag.get("id") or "")]
    words: list[str] = []
    for name in raw:
        for part in re.split(r"[^A-Za-z0-9]+", name):
            words.extend(w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", part))
    return words


def is_chrome(tag: Tag) -> bool:
    """Whether the tag's class/id words mark it as chrome (Medium content grafs never are)."""
    words = class_words(tag)
    if not words or tag.name in ("pre", "code") or has_ancestor(tag, {"pre", "code"}):
        return False
    if "graf" in words or "markup" in words:  # Medium content, but not a link card
        return "graf--mixtapeEmbed" in (tag.get("class") or [])
    return bool(CHROME_WORDS.intersection(words)) or any(
        pair in CHROME_PAIRS for pair in itertools.pairwise(words)
    )


def holds_article(tag: Tag, total: int) -> bool:
    """A chrome-classed wrapper that holds most of the body's text is the article, not chrome."""
    if DISCUSSION_WORDS.intersection(class_words(tag)):
        return False
    return total >= 200 and len(tag.get_text()) > total / 2


# ---------------------------------------------------------------------------------------------
# Body -> Markdown


def html_to_markdown(html: str, *, keep_link_urls: bool = False, keep_images: bool = False) -> str:
    """Markdown of a page's article body, titled ``# Title`` when the title is known."""
    soup = parse_html(html)
    title = page_metadata(soup)["title"]
    return body_to_markdown(
        page_body(soup), keep_link_urls=keep_link_urls, keep_images=keep_images, title=title
    )


def body_to_markdown(
    body: Tag,
    *,
    keep_link_urls: bool = False,
    keep_images: bool = False,
    title: str | None = None,
) -> str:
    """Canonical Markdown of an article body element (see the module docstring)."""
    root = prepare(body, keep_images=keep_images, title=title)
    renderer = Renderer(InlineConverter(keep_link_urls=keep_link_urls, keep_images=keep_images))
    blocks = renderer.blocks(root)
    text = join_blocks(blocks)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def new_tag(name: str, attrs: dict | None = None) -> Tag:
    """A detached tag."""
    return Tag(name=name, attrs=attrs or {})


def tags(root: Tag, names: Iterable[str] | None = None) -> list[Tag]:
    """Descendant tags (named ``names``, if given), in document order, as a snapshot."""
    wanted = None if names is None else frozenset(names)
    return [
        node
        for node in root.descendants
        if isinstance(node, Tag) and (wanted is None or node.name in wanted)
    ]


def has_ancestor(tag: Tag, names: Iterable[str]) -> bool:
    """Whether any ancestor of the tag is named in ``names``."""
    return any(parent.name in names for parent in tag.parents)


# --- DOM normalisation: afterwards every run of inline content sits in a leaf block ----------


def prepare(body: Tag, *, keep_images: bool, title: str | None) -> Tag:
    """A normalised copy of the body inside a ``div`` (the input is not changed)."""
    root = new_tag("div")
    root.append(copy.copy(body))
    remove_junk(root)
    clean_strings(root)
    drop_dividers_and_images(root, keep_images=keep_images)
    prepare_code(root)
    prepare_figures(root)
    prepare_tables(root)
    for tag in tags(root, {"dt", "summary", "legend", "figcaption"}):
        tag.name = "p"
    flatten_leaves(root)
    unwrap_inline_wrappers(root)
    limit_nesting(root)
    fix_lists(root)
    wrap_loose_inline(root)
    merge_adjacent(root, "blockquote")
    merge_adjacent(root, "ul")
    merge_adjacent(root, "ol")
    place_title(root, title)
    return root


CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ue000-\ue01f]")
MAX_DEPTH = 100  # elements: no article nests deeper, a hostile page may; below this the text
# stays and the elements go, so the cleaning (recursive in places) stays within Python's stack
MAX_NESTING = 6  # lists and quotes inside each other: markdown-it reads 20 levels of blocks
# (two a list), so deeper ones become plain blocks (no article nests lists past 4)


def limit_nesting(root: Tag) -> None:
    """Lists and quotes inside :data:`MAX_NESTING` others become plain containers (their
    items paragraphs), so the Markdown reads back whole."""
    nested = {"ul", "ol", "blockquote"}
    for tag in tags(root, nested):
        if sum(parent.name in nested for parent in tag.parents) >= MAX_NESTING:
            for item in tag.find_all("li", recursive=False):
                item.name = "div"
            tag.name = "div"


def flatten_deep(root: Tag) -> None:
    """Each element :data:`MAX_DEPTH` levels under ``root`` replaced by its text (with all
    the elements in it), so none is left that deep.

    >>> root = BeautifulSoup("<div>" * 300 + "deep" + "</div>" * 300, "lxml").body
    >>> flatten_deep(root)
    >>> len(root.find_all(True)), root.get_text()
    (99, 'deep')
    """
    level = [root]
    for _ in range(MAX_DEPTH):
        level = [child for tag in level for child in tag.find_all(True, recursive=False)]
    for tag in level:
        tag.replace_with(NavigableString(tag.get_text()))


def clean_strings(root: Tag) -> None:
    """Drop control characters (and our private-use markers) from all text."""
    for node in root.find_all(string=True):
        if CONTROL.search(node):
            node.replace_with(type(node)(CONTROL.sub("", node)))


def drop_dividers_and_images(root: Tag, *, keep_images: bool) -> None:
    """Remove ``<hr>``, Medium section dividers and (unless kept) images."""
    for tag in tags(root, {"hr", "img", "picture"}):
        if tag.parent is None:
            continue
        if tag.name == "img" and keep_images and image_src(tag) and not is_thumbnail(tag):
            continue
        if tag.name == "picture" and keep_images:
            tag.unwrap()
            continue
        tag.decompose()
    for tag in tags(root):
        if tag.parent is not None and "section-divider" in (tag.get("class") or []):
            tag.decompose()


def image_src(img: Tag) -> str:
    """An image's URL (``src``, else lazy-loading ``data-src``)."""
    return str(img.get("src") or img.get("data-src") or "").strip()


def is_thumbnail(img: Tag) -> bool:
    """Medium's blurred placeholder copy of an image."""
    return "thumbnail" in class_words(img)


def code_language(pre: Tag) -> str:
    """Language of a code block: Medium's attribute, else a ``language-x``/``lang-x`` class."""
    lang = str(pre.get("data-code-block-lang") or "")
    if not lang:
        for tag in [pre, *pre.find_all("code")]:
            for name in tag.get("class") or []:
                match = re.match(r"(?:language|lang)-(.+)", name)
                if match:
                    lang = match.group(1)
                    break
            if lang:
                break
    return lang if re.fullmatch(r"[A-Za-z0-9_+#.-]{1,40}", lang) else ""


def prepare_code(root: Tag) -> None:
    """``<br>`` in ``<pre>`` -> newline; adjacent Medium ``graf--pre`` blocks share one fence."""
    for pre in tags(root, {"pre"}):
        if pre.parent is None:
            continue
        for br in pre.find_all("br"):
            br.replace_with("\n")
        lang = code_language(pre)
        pre.attrs = {"data-lang": lang, "class": pre.get("class") or []}
        text = pre.get_text()
        nxt = next_element_sibling(pre)
        while is_medium_pre(pre) and is_medium_pre(nxt) and code_language(nxt) == lang:
            for br in nxt.find_all("br"):
                br.replace_with("\n")
            text += "\n" + nxt.get_text()
            following = next_element_sibling(nxt)
            nxt.decompose()
            nxt = following
        pre.clear()
        pre.append(NavigableString(text))


def is_medium_pre(tag: Tag | None) -> bool:
    """A Medium code-block graf."""
    return tag is not None and tag.name == "pre" and "graf--pre" in (tag.get("class") or [])


def next_element_sibling(tag: Tag) -> Tag | None:
    """The next sibling tag, if only whitespace lies between."""
    node = tag.next_sibling
    while isinstance(node, NavigableString) and not node.strip():
        node = node.next_sibling
    return node if isinstance(node, Tag) else None


def prepare_figures(root: Tag) -> None:
    """An embed figure (Medium ``graf--iframe``) keeps only its caption."""
    for figure in tags(root, {"figure"}):
        if figure.parent is not None and "graf--iframe" in (figure.get("class") or []):
            for child in list(figure.children):
                if not (isinstance(child, Tag) and child.name == "figcaption"):
                    child.extract()


TABLE_CHILDREN = {
    "table": {"thead", "tbody", "tfoot", "tr"},
    "thead": {"tr"},
    "tbody": {"tr"},
    "tfoot": {"tr"},
    "tr": set(CELLS),
}


def prepare_tables(root: Tag) -> None:
    """Regularise tables; table parts outside any table become plain containers."""
    for part in tags(root, {"thead", "tbody", "tfoot", "tr", "caption"}):
        if not has_ancestor(part, {"table"}):
            part.name = "div"
    for table in tags(root, {"table"}):
        regularise_table(table)


def nearest_table(tag: Tag) -> Tag | None:
    """The innermost table around a tag."""
    return next((parent for parent in tag.parents if parent.name == "table"), None)


def regularise_table(table: Tag) -> None:
    """Cells outside a row get one; anything else misplaced moves before the table, in order."""
    parts = [table, *tags(table, {"thead", "tbody", "tfoot", "tr"})]
    part_ids = {id(part) for part in parts if part is table or nearest_table(part) is table}
    made_rows: set[int] = set()
    for node in list(table.descendants):
        part = node.parent
        if part is None or id(part) not in part_ids:
            continue
        name = node.name if isinstance(node, Tag) else None
        if name in TABLE_CHILDREN[part.name] or (name is None and not node.strip()):
            continue
        if name in CELLS:
            row = previous_element_sibling(node)
            if row is None or id(row) not in made_rows:
                row = new_tag("tr")
                made_rows.add(id(row))
                node.insert_before(row)
            row.append(node.extract())
        elif name in ("colgroup", "col"):
            node.decompose()
        elif name == "caption":
            node.name = "p"
            table.insert_before(node.extract())
        else:
            paragraph = new_tag("p")
            table.insert_before(paragraph)
            paragraph.append(node.extract())


def previous_element_sibling(tag: Tag) -> Tag | None:
    """The previous sibling tag, if only whitespace lies between."""
    node = tag.previous_sibling
    while isinstance(node, NavigableString) and not node.strip():
        node = node.previous_sibling
    return node if isinstance(node, Tag) else None


def flatten_leaves(root: Tag) -> None:
    """Block elements inside paragraphs, headings and cells become inline (space-separated)."""
    for inner in tags(root, BLOCKS):
        if inner.parent is not None and has_ancestor(inner, LEAVES):
            inner.insert_before(" ")
            inner.insert_after(" ")
            inner.unwrap()


def unwrap_inline_wrappers(root: Tag) -> None:
    """Inline elements wrapping blocks (``<a><h2>..</h2></a>``) are unwrapped."""
    wrappers: dict[int, Tag] = {}
    for block in tags(root, BLOCKS):
        for parent in block.parents:
            if parent.name not in BLOCKS and parent is not root:
                wrappers[id(parent)] = parent
    for tag in wrappers.values():
        tag.unwrap()


def fix_lists(root: Tag) -> None:
    """Anything directly inside ``<ul>``/``<ol>`` that is not an ``<li>`` goes into one."""
    for lst in tags(root, {"ul", "ol"}):
        item: Tag | None = None
        for child in list(lst.children):
            if isinstance(child, Tag) and child.name == "li":
                item = None
            elif isinstance(child, Tag) or child.strip():
                if item is None:
                    item = new_tag("li")
                    child.insert_before(item)
                item.append(child.extract())


def is_block(node: Any) -> bool:
    """A block-level tag."""
    return isinstance(node, Tag) and node.name in BLOCKS


def wrap_loose_inline(root: Tag) -> None:
    """Runs of text and inline tags directly inside containers are wrapped in ``<p>``."""
    for container in [root, *tags(root, CONTAINERS)]:
        run: list[Any] = []
        for child in [*container.children, None]:
            if child is not None and not is_block(child):
                run.append(child)
                continue
            if run and has_inline_content(run):
                paragraph = new_tag("p")
                run[0].insert_before(paragraph)
                for node in run:
                    paragraph.append(node.extract())
            run = []


def has_inline_content(nodes: list[Any]) -> bool:
    """Whether inline nodes hold any text or image."""
    for node in nodes:
        if isinstance(node, NavigableString):
            if node.strip():
                return True
        elif node.name == "img" or node.find("img") or node.get_text().strip():
            return True
    return False


def merge_adjacent(root: Tag, name: str) -> None:
    """Adjacent sibling ``name`` elements become one (pull quotes only with pull quotes)."""
    for tag in tags(root, {name}):
        if tag.parent is None:
            continue
        nxt = next_element_sibling(tag)
        while nxt is not None and nxt.name == name and is_pullquote(nxt) == is_pullquote(tag):
            for child in list(nxt.children):
                tag.append(child.extract())
            following = next_element_sibling(nxt)
            nxt.decompose()
            nxt = following


def is_pullquote(tag: Tag) -> bool:
    """A Medium pull quote graf."""
    return "graf--pullquote" in (tag.get("class") or [])


def same_title(a: str, b: str) -> bool:
    """Titles equal up to whitespace and case."""
    return collapse(a).casefold() == collapse(b).casefold()


def place_title(root: Tag, title: str | None) -> None:
    """Make the title heading ``#`` and first; add one from ``title`` when the body has none."""
    heading = first_with_class(root, None, "graf--title")
    if heading is None and title:
        heading = next(
            (h for h in tags(root, {"h1", "h2", "h3"}) if same_title(h.get_text(), title)),
            None,
        )
    if heading is None and title:
        heading = new_tag("h1")
        heading.append(NavigableString(title))
    if heading is not None:
        heading.name = "h1"
        heading["data-md-level"] = "1"
        root.insert(0, heading.extract())


# --- Block rendering ---------------------------------------------------------------------------


@dataclass
class Block:
    """A rendered block: its kind decides how it joins its neighbours."""

    kind: str  # para, heading, code, quote, table, list, list-no-interrupt (ol not from 1)
    text: str


def join_blocks(blocks: list[Block]) -> str:
    """Blocks separated by one blank line."""
    return "\n\n".join(b.text for b in blocks if b.text)


class Renderer:
    """Renders a normalised body tree into Markdown blocks."""

    def __init__(self, inline: InlineConverter) -> None:
        """Render inline content with ``inline``."""
        self.inline = inline

    def blocks(self, container: Tag) -> list[Block]:
        """Blocks of a container's children, in order."""
        out: list[Block] = []
        for child in container.children:
            if isinstance(child, Tag):
                out.extend(b for b in self.block(child) if b.text)
        return out

    def block(self, tag: Tag) -> list[Block]:
        """Blocks for one child tag (containers are transparent)."""
        name = tag.name
        if name in HEADINGS:
            return [self.heading(tag)]
        if name in ("p", "td", "th"):
            return [Block("para", self.inline.render(tag, "para"))]
        if name == "pre":
            return [Block("code", code_block(tag))]
        if name in ("ul", "ol"):
            return [self.list(tag)]
        if name == "blockquote":
            return [Block("quote", quote(join_blocks(self.blocks(tag))))]
        if name == "table":
            return [Block("table", self.table(tag))]
        if name in BLOCKS:
            return self.blocks(tag)
        return []

    def heading(self, tag: Tag) -> Block:
        """A heading, or a paragraph for Medium's subtitle."""
        level = heading_level(tag)
        if level is None:
            return Block("para", self.inline.render(tag, "para"))
        text = self.inline.render(tag, "heading", level=level)
        return Block("heading", f"{'#' * level} {text}" if text else "")

    def list(self, tag: Tag) -> Block:
        """A tight list; ``start`` respected for ordered lists."""
        ordered = tag.name == "ol"
        start = list_start(tag) if ordered else 1
        items: list[str] = []
        for li in tag.find_all("li", recursive=False):
            content = self.list_item(li)
            if content:
                marker = f"{start + len(items)}. " if ordered else "- "
                items.append(marker + indent(content, len(marker)))
        kind = "list" if not ordered or start == 1 else "list-no-interrupt"
        return Block(kind, "\n".join(items))

    def list_item(self, li: Tag) -> str:
        """An item's blocks; a nested list follows its paragraph on the next line."""
        parts: list[str] = []
        previous: Block | None = None
        for block in self.blocks(li):
            tight = previous is not None and previous.kind == "para" and block.kind == "list"
            if parts:
                parts.append("\n" if tight else "\n\n")
            parts.append(block.text)
            previous = block
        return "".join(parts)

    def table(self, table: Tag) -> str:
        """A GFM pipe table; the first row is the header."""
        rows = [
            [self.inline.render(cell, "cell") for cell in tr.find_all(CELLS, recursive=False)]
            for tr in table.find_all("tr")
            if tr.find_parent("table") is table
        ]
        rows = [row for row in rows if row]
        if not any(any(cell for cell in row) for row in rows):
            return ""
        width = max(len(row) for row in rows)
        rows = [row + [""] * (width - len(row)) for row in rows]
        lines = [table_row(row) for row in rows]
        lines.insert(1, table_row(["---"] * width))
        return "\n".join(lines)


def table_row(cells: list[str]) -> str:
    """``| a | b |``."""
    return "| " + " | ".join(cells) + " |"


def heading_level(tag: Tag) -> int | None:
    """Markdown level of a heading; None for Medium's subtitle (a paragraph)."""
    if tag.get("data-md-level"):
        return int(tag["data-md-level"])
    classes = tag.get("class") or []
    if "graf--subtitle" in classes:
        return None
    level = int(tag.name[1])
    if "graf" in classes:  # Medium: h3 is the large heading, h4 the small one
        for name in classes:
            match = re.fullmatch(r"graf--h(\d)", name)
            if match:
                level = int(match.group(1))
        return min(6, max(2, level - 1))
    return level


def list_start(tag: Tag) -> int:
    """An ordered list's ``start`` (1 when absent or invalid)."""
    try:
        return min(max(int(str(tag.get("start", "1")).strip()), 0), 999_999_999)
    except ValueError:
        return 1


def indent(text: str, width: int) -> str:
    """Indent all lines but the first by ``width`` spaces (blank lines stay empty)."""
    pad = " " * width
    lines = text.split("\n")
    return "\n".join([lines[0], *[pad + line if line else "" for line in lines[1:]]])


def quote(text: str) -> str:
    """Prefix every line with ``> `` (``>`` on blank lines)."""
    if not text:
        return ""
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def code_block(pre: Tag) -> str:
    """A fenced code block: content verbatim (trailing spaces and edge blank lines dropped)."""
    text = pre.get_text().replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return ""
    body = "\n".join(lines)
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{pre.get('data-lang') or ''}\n{body}\n{fence}"


# --- Inline content ----------------------------------------------------------------------------
# markdownify turns a leaf block's inline content into text with core.inline's private-use
# markers for the markup; render_inline() resolves them with the whole paragraph in view.


class InlineConverter(MarkdownConverter):
    """markdownify for inline content, emitting markers instead of Markdown syntax."""

    def __init__(self, *, keep_link_urls: bool, keep_images: bool) -> None:
        """Convert only inline tags; everything else passes its text through."""
        super().__init__(
            wrap=True,
            wrap_width=None,
            escape_asterisks=False,
            escape_underscores=False,
            escape_misc=False,
            convert=["a", "b", "strong", "i", "em", "code", "kbd", "samp", "tt", "br", "img"],
        )
        self.keep_link_urls = keep_link_urls
        self.keep_images = keep_images

    def escape(self, text: str, parent_tags: set[str]) -> str:
        """No escaping here: :func:`render_inline` escapes with the paragraph in view."""
        return text

    def render(self, leaf: Tag, context: str, level: int = 0) -> str:
        """Markdown of a leaf block's inline content (``context``: para, heading or cell)."""
        return render_inline(self.process_tag(leaf, parent_tags=set()), context, level)

    def _wrap(self, start: str, end: str, text: str, parent_tags: set[str]) -> str:
        """Text between markers, unless inside code."""
        return text if "_noformat" in parent_tags else f"{start}{text}{end}"

    def convert_em(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """``*em*``."""
        return self._wrap(EM, EM_END, text, parent_tags)

    def convert_strong(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """``**strong**``."""
        return self._wrap(STRONG, STRONG_END, text, parent_tags)

    def convert_code(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """A code span."""
        return self._wrap(CODE, CODE_END, text, parent_tags)

    convert_i = convert_em
    convert_b = convert_strong
    convert_kbd = convert_samp = convert_tt = convert_code

    def convert_a(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """Link text, or a link when keeping URLs."""
        href = str(el.get("href") or "").strip()
        usable = href and not href.lower().startswith("javascript:")
        nested = "_noformat" in parent_tags or "a" in parent_tags
        if not self.keep_link_urls or not usable or nested:
            return text
        return f"{LINK}{text}{LINK_URL}{CONTROL.sub('', href)}{LINK_END}"

    def convert_img(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """An image when keeping images, else nothing."""
        src = image_src(el)
        if not self.keep_images or not src or "_noformat" in parent_tags:
            return ""
        alt = CONTROL.sub("", str(el.get("alt") or ""))
        return f"{IMG}{alt}{IMG_SRC}{CONTROL.sub('', src)}{IMG_END}"

    def convert_br(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """A hard break."""
        return BR


# ---------------------------------------------------------------------------------------------
# Markdown files

FRONT_MATTER = re.compile(
    r"\A\ufeff?(?:---[ \t]*\r?\n(?P<yaml>.*?)\r?\n(?:---|\.\.\.)"  # YAML (Jekyll, Hugo)
    r"|\+\+\+[ \t]*\r?\n(?P<toml>.*?)\r?\n\+\+\+)"  # TOML (Zola, Hugo)
    r"[ \t]*(?:\r?\n|\Z)",
    re.S,
)
PATH_DATE = re.compile(r"(?:\A|/)(\d{4})/(\d{2})/(\d{2})(?:/|\Z)")  # Zola's "2014/12/12/slug"


def split_front_matter(markdown: str) -> tuple[dict, str]:
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


def parse_toml(text: str) -> dict:
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


def front_matter_author(fields: dict) -> str | None:
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


def front_matter_date(fields: dict) -> str | None:
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


# ---------------------------------------------------------------------------------------------
# One page -> one record


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
    path: str, sha256: str, url: str, source: str, clean: dict, content_type: str = ""
) -> dict:
    """Clean one raw page into an article record (the body of :func:`clean_page`);
    ``content_type`` is the HTTP header's, when it was fetched (its charset)."""
    soup = parse_html(read_page(path, content_type))
    meta = page_metadata(soup, url)
    markdown = body_to_markdown(
        page_body(soup),
        keep_link_urls=bool(clean.get("keep_link_urls", False)),
        keep_images=bool(clean.get("keep_images", False)),
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
        "skip_reason": skip_reason(
            Path(path).name, meta["title"], words, int(clean.get("min_words", 0))
        ),
    }


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def clean_page(
    path: str, sha256: str, url: str, source: str, clean: dict, content_type: str = ""
) -> dict:
    """Clean one raw page (HTML or Markdown file) into an article record."""
    return clean_record(path, sha256, url, source, clean, content_type)
