"""The article element of a page: the likeliest body, without navigation, share bars, comments."""

from __future__ import annotations

import itertools
import re

from bs4 import BeautifulSoup, Comment, Declaration, Doctype, Tag
from bs4.element import ProcessingInstruction

from tasks.clean.html import (
    ALWAYS_CHROME,
    BODY_SELECTORS,
    CHROME_PAIRS,
    CHROME_WORDS,
    DISCUSSION_WORDS,
    JUNK,
    has_ancestor,
    new_tag,
    parse_html,
    tags,
)


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
