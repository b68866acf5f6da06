"""RSS and Atom feeds: each entry becomes a page (its full content when the feed carries it, as
Medium's does, else its link to fetch), with tracking parameters dropped from links.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import feedparser
from prefect import task

from core.io import write_atomic
from core.logs import run_logger
from tasks.scrape.http import TRACKING_PARAM, is_url, sha256_hex
from tasks.scrape.pages import PageRef

# --- feeds ------------------------------------------------------------------------------


def clean_link(link: str) -> str:
    """Drop tracking query parameters (utm_*, Medium's ``source=rss-...``) and fragments."""
    parts = urlsplit(link)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if not TRACKING_PARAM.match(k)]
    new_query = parts.query if len(kept) == len(query) else urlencode(kept)
    return urlunsplit(parts._replace(query=new_query, fragment=""))


def _full_content(entry: Any) -> str | None:
    """The entry's full HTML: an html/xhtml content at least as long as the summary."""
    htmls = [c.get("value") or "" for c in entry.get("content", []) if "html" in c.get("type", "")]
    best = max(htmls, key=len, default="")
    return best if best.strip() and len(best) >= len(entry.get("summary") or "") else None


def _published(entry: Any) -> str:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if parsed:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed)
    return entry.get("published") or entry.get("updated") or ""


def _feed_page(entry: Any, content: str, link: str, feed_author: str) -> str:
    """A minimal HTML page for a feed entry keeping the feed's metadata in <head>."""
    title = escape(entry.get("title") or "", quote=True)
    author = escape(entry.get("author") or feed_author, quote=True)
    head = [
        '<meta charset="utf-8">',
        f"<title>{title}</title>",
        f'<meta property="og:title" content="{title}">',
    ]
    if author:
        head.append(f'<meta name="author" content="{author}">')
    if published := _published(entry):
        head.append(f'<meta property="article:published_time" content="{escape(published)}">')
    for tag in entry.get("tags") or []:
        if tag.get("term"):
            head.append(f'<meta property="article:tag" content="{escape(tag["term"])}">')
    if link:
        head.append(f'<link rel="canonical" href="{escape(link, quote=True)}">')
    return (
        "<!DOCTYPE html>\n<html><head>\n" + "\n".join(head) + "\n</head><body>\n<article>\n"
        f"{content}\n</article>\n</body></html>\n"
    )


def parse_feed(path: str, source: str, data_dir: str) -> list[PageRef]:
    """Parse a feed file into refs: "file" for entries with full content, else "http"."""
    data = Path(path).read_bytes()
    base = source if is_url(source) else Path(path).resolve().as_uri()
    if not is_url(source):  # a local feed: its relative links resolve against its site
        site = feedparser.parse(data, resolve_relative_uris=False).feed.get("link", "")
        base = site if is_url(site) else base
    # No sanitizing: the HTML is parsed, never rendered, and the sanitizer would drop
    # attributes the cleaner needs (a code block's data-code-block-lang, class="language-x").
    parsed = feedparser.parse(
        data, response_headers={"content-location": base}, sanitize_html=False
    )
    if not parsed.get("version") and not parsed.entries:
        raise ValueError(f"{path} (from {source}) is not an RSS or Atom feed")
    feed_author = parsed.feed.get("author", "")
    refs: list[PageRef] = []
    seen: set[str] = set()
    for entry in parsed.entries:
        raw_link = entry.get("link") or (entry.get("id") if is_url(entry.get("id", "")) else "")
        link = clean_link(urljoin(base, raw_link)) if raw_link else ""
        content = _full_content(entry)
        if content is None and not is_url(link):
            run_logger(__name__).warning(
                "%s: entry %r has no http(s) link to fetch; skipped", source, link
            )
            continue
        if link and link in seen:
            continue
        seen.add(link)
        if content is None:
            refs.append(
                {"source": source, "url": link, "path": None, "sha256": None, "kind": "http"}
            )
            continue
        page = _feed_page(entry, content, link, feed_author).encode("utf-8")
        digest = sha256_hex(page)
        out = Path(data_dir) / "raw" / "feed" / f"{digest[:24]}.html"
        if not out.exists():
            write_atomic(out, page)
        url = link or out.resolve().as_uri()
        refs.append(
            {"source": source, "url": url, "path": str(out), "sha256": digest, "kind": "file"}
        )
    return refs


@task
def read_feed(path: str, source: str, data_dir: str) -> list[PageRef]:
    """Turn a fetched RSS/Atom feed file into page refs (parsing only, no network)."""
    refs = parse_feed(path, source, data_dir)
    full = sum(r["kind"] == "file" for r in refs)
    run_logger(__name__).info("%s: %d entries (%d with full content)", source, len(refs), full)
    return refs
