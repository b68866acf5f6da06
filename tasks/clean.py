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

import copy
import hashlib
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from bs4 import BeautifulSoup, Comment, Declaration, Doctype, NavigableString, Tag
from bs4.element import ProcessingInstruction
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markdownify import MarkdownConverter
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from core.tokens import count_tokens

MD = MarkdownIt("commonmark").enable("table")


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
    """Parse HTML with lxml."""
    return BeautifulSoup(html, "lxml")


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
    fix_lists(root)
    wrap_loose_inline(root)
    merge_adjacent(root, "blockquote")
    merge_adjacent(root, "ul")
    merge_adjacent(root, "ol")
    place_title(root, title)
    return root


CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ue000-\ue01f]")


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


# --- Inline rendering --------------------------------------------------------------------------
# markdownify turns a leaf block's inline content into text with private-use markers for the
# markup; render_inline() then resolves them with the whole paragraph in view, so escaping and
# emphasis delimiters can depend on their neighbours.

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
    alt = re.sub(r"([\\\[\]*_`<>&!|])", r"\\\1", collapse(alt))
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


# ---------------------------------------------------------------------------------------------
# Markdown -> plain


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


def read_page(path: str | Path) -> str:
    """A raw page as HTML (Markdown files rendered first); UTF-8 with replacement."""
    path = Path(path)
    text = path.read_bytes().decode("utf-8", errors="replace")
    return markdown_to_html(text) if path.suffix.lower() in (".md", ".markdown") else text


def skip_reason(name: str, title: str | None, words: int, min_words: int) -> str | None:
    """Why a page is not an article (None when it is one)."""
    if name.startswith("draft_"):
        return "draft"
    if not title:
        return "no title: a reply or note, not an article"
    if words < min_words:
        return f"short: {words} words < {min_words}"
    return None


def clean_record(path: str, sha256: str, url: str, source: str, clean: dict) -> dict:
    """Clean one raw page into an article record (the body of :func:`clean_page`)."""
    soup = parse_html(read_page(path))
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
def clean_page(path: str, sha256: str, url: str, source: str, clean: dict) -> dict:
    """Clean one raw page (HTML or Markdown file) into an article record."""
    return clean_record(path, sha256, url, source, clean)
