"""An article page's title, author, date and canonical URL: from meta tags, JSON-LD and markup."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bs4 import BeautifulSoup, Tag
from typing_extensions import TypedDict

from tasks.clean.html import collapse, parse_html


class PageMeta(TypedDict):
    """What a page says about its article (None where it says nothing)."""

    title: str | None
    author: str | None
    published: str | None  # ISO-8601: a date, or a datetime (UTC "Z" when zoned)
    canonical_url: str | None


def extract_metadata(html: str, url: str | None = None) -> PageMeta:
    """Title, author, published (ISO-8601) and canonical URL of an article page."""
    return page_metadata(parse_html(html), url)


@dataclass
class Page:
    """A parsed page with its ``<meta>`` values and JSON-LD objects."""

    soup: BeautifulSoup
    meta: dict[str, str]
    ld: list[dict[str, Any]]


def page_metadata(soup: BeautifulSoup, url: str | None = None) -> PageMeta:
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


def meta_values(soup: BeautifulSoup) -> dict[str, str]:
    """``<meta>`` contents by ``property``, ``name`` or ``itemprop`` (the first one wins)."""
    values: dict[str, str] = {}
    for tag in soup.find_all("meta", attrs={"content": True}):
        for attr in ("property", "name", "itemprop"):
            key = tag.get(attr)
            if isinstance(key, str) and tag["content"]:
                values.setdefault(key, str(tag["content"]))
    return values


def json_ld(soup: BeautifulSoup) -> list[dict[str, Any]]:
    """All JSON-LD objects of the page (``@graph`` flattened); broken JSON ignored."""
    found: list[dict[str, Any]] = []
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
