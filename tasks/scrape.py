"""Scrape a writer's articles from a SOURCE into raw pages on disk, politely and resumably.

A SOURCE is one string, any of:

- an http(s) article URL: fetched as one page;
- an RSS/Atom feed URL: fetched (always re-validated with a conditional GET, never served
  from a cache), then each entry becomes a page. Medium's per-author feed
  ``https://medium.com/feed/@user`` carries each post's full HTML in ``content:encoded``, so
  its entries need no further request; entries without full content point at their link;
- a Medium export: the ``.zip`` from Medium's "download your information" (posts are
  ``posts/*.html``, possibly under one top-level folder) or its unpacked folder;
- a local folder (recursive; ``.html``/``.htm``/``.md``/``.markdown``; hidden files and
  folders ignored) or a single such file; a ``file://`` URI works too;
- a local feed file (``.xml``/``.rss``/``.atom``).

Drafts and replies. In a Medium export, ``posts/draft_*.html`` are unpublished drafts and
are skipped here. The export also holds every *reply* (comment) as a post; a reply cannot
be told apart by its file name, so replies and other short posts are filtered later by the
cleaner (``clean.min_words``), not here.

Page refs and raw pages are plain dicts. A ref::

    {"source": str, "url": str, "path": str | None, "sha256": str | None,
     "kind": "http" | "file"}

kind "http" still has to be fetched (``fetch_url``); kind "file" already has its HTML or
Markdown on disk at ``path`` (``sha256`` of its bytes). A local file's ``url`` is its
resolved ``file://`` URI; a feed entry's ``url`` is the entry's link. ``fetch_url`` returns a
raw page: the ref's keys plus ``final_url``, ``status`` (200 or 304), ``content_type`` (the
full Content-Type header, charset included) and ``fetched_at`` (ISO-8601 UTC).

Files written (all atomically) under the data directory DATA::

    DATA/raw/http/<sha256(url)[:24]>.body   last body fetched from the URL
    DATA/raw/http/<sha256(url)[:24]>.json   its URL, ETag, Last-Modified, type, sha256
    DATA/raw/feed/<sha256(page)[:24]>.html  a feed entry with full content, as an HTML page
    DATA/raw/export/<sha256(zip)[:16]>/     a Medium export zip, extracted once

Politeness (``config.settings.ScrapeSettings``): robots.txt honoured per host, at most one
request per ``per_host_delay_s`` to a host, exponential backoff with jitter on 429 / 5xx /
connection errors (``Retry-After`` honoured, capped), bodies over ``max_bytes`` refused.

Worked example (a local Medium export; a feed or page URL works the same way):

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> posts = root / "medium-export" / "posts"
>>> posts.mkdir(parents=True)
>>> _ = (posts / "2020-01-02_Hello-world-0123456789ab.html").write_text("<p>Hi</p>")
>>> _ = (posts / "draft_Not-yet-ba9876543210.html").write_text("<p>WIP</p>")
>>> from config.settings import ScrapeSettings
>>> refs = discover_pages(str(root), ScrapeSettings().model_dump(), str(root / "data"))
>>> [pathlib.Path(r["path"]).name for r in refs], refs[0]["kind"]
(['2020-01-02_Hello-world-0123456789ab.html'], 'file')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
import urllib.robotparser
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html import escape
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit, urlunsplit

import feedparser
import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from core.errors import BadInput
from core.io import atomic_path, write_atomic

PAGE_SUFFIXES = (".html", ".htm", ".md", ".markdown")
FEED_SUFFIXES = (".xml", ".rss", ".atom")
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
VAGUE_TYPES = frozenset({"text/plain", "application/octet-stream", "binary/octet-stream"})
FEED_TYPES = frozenset(
    {
        "application/rss+xml",
        "application/x-rss+xml",
        "application/atom+xml",
        "application/x-atom+xml",
        "application/rdf+xml",
        "application/xml",
        "text/xml",
    }
)
ACCEPT = (
    "text/html,application/xhtml+xml;q=0.9,application/rss+xml,application/atom+xml,"
    "application/xml;q=0.8,text/xml;q=0.8"
)
ACCEPTED_SOURCES = (
    "an http(s) URL of an article or RSS/Atom feed, a folder or file of "
    ".html/.htm/.md/.markdown, a Medium export (.zip or its unpacked folder) "
    "or a feed file (.xml/.rss/.atom)"
)
ROBOTS_MAX_BYTES = 512_000  # RFC 9309: crawlers must parse at least 500 KiB
ROBOTS_TTL_S = 24 * 3600  # RFC 9309: do not use a cached robots.txt for more than 24 hours
ZIP_MAX_BYTES = 1 << 30  # a Medium export is a few MB; refuse a zip that unpacks past 1 GiB
MEDIUM_POST = re.compile(r"^(?:\d{4}-\d{2}-\d{2}_|draft_).*-[0-9a-f]{8,16}\.html$")
_FEED_START = re.compile(
    r"^\ufeff?\s*(?:(?:<\?[^>]*\?>|<!--.*?-->|<!DOCTYPE[^>]*>)\s*)*<(?:rss|feed|rdf:RDF)\b",
    re.DOTALL | re.IGNORECASE,
)
_TRACKING_PARAM = re.compile(r"^(?:utm_.*|source)$")

T = TypeVar("T")


class FetchError(Exception):
    """A URL that cannot be fetched as a page or feed, and will not be by retrying."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.url} {self.reason}"


class TransientFetchError(FetchError):
    """429 / 5xx / connection error / timeout that outlasted the in-function retries."""


class _Retryable(Exception):
    """One attempt failed in a way worth retrying (internal to ``_with_retries``)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow or task run, else this module's logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def is_url(source: str) -> bool:
    """True for an absolute http(s) URL with a host."""
    parts = urlsplit(source.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def checked_sources(sources: list[str], *, local: bool = False) -> list[str]:
    """The sources, if each one can mean something: not empty (an unset ``$DIR`` would read
    the current folder) and, with ``local``, a path that is not a URL exists. Else BadInput
    naming the source and what a source is.

    >>> checked_sources(["https://example.com/feed", "  "])
    Traceback (most recent call last):
    core.errors.BadInput: source '  ' is empty: a source is an http(s) URL of an article or \
RSS/Atom feed, a folder or file of .html/.htm/.md/.markdown, a Medium export (.zip or its \
unpacked folder) or a feed file (.xml/.rss/.atom)
    """
    for source in sources:
        wrong = "is empty" if not source.strip() else None
        if local and not wrong and not is_url(source) and not _local_path(source).exists():
            wrong = "is no file or folder"
        if wrong:
            raise BadInput(f"source {source!r} {wrong}: a source is {ACCEPTED_SOURCES}")
    return sources


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


# --- politeness: per-host spacing and robots.txt (module-level, shared by all threads) ----

_lock = threading.Lock()
_last_request: dict[str, float] = {}  # host -> monotonic start time of its last request
_robots: dict[str, tuple[urllib.robotparser.RobotFileParser, float]] = {}
_robots_locks: dict[str, threading.Lock] = {}


def reset_host_state() -> None:
    """Forget per-host request times and cached robots.txt files (tests, long runs)."""
    with _lock:
        _last_request.clear()
        _robots.clear()
        _robots_locks.clear()


def _wait_turn(url: str, delay_s: float) -> None:
    """Sleep until ``delay_s`` has passed since the last request to this URL's host."""
    host = (urlsplit(url).hostname or "").lower()
    with _lock:
        now = time.monotonic()
        start = max(now, _last_request.get(host, float("-inf")) + delay_s)
        _last_request[host] = start  # reserve the slot, so concurrent threads queue up
    if start > now:
        time.sleep(start - now)


def _answered(url: str) -> None:
    """Count the delay from the answer, not the request: a slow host gets more room."""
    host = (urlsplit(url).hostname or "").lower()
    with _lock:
        _last_request[host] = max(_last_request.get(host, float("-inf")), time.monotonic())


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _backoff_s(attempt: int, retry_after: float | None, scrape: dict) -> float:
    """base * 2**attempt plus up to 50 % jitter, at least Retry-After, at most backoff_max_s."""
    delay = scrape["backoff_base_s"] * 2**attempt
    delay += random.uniform(0, delay / 2)
    return min(max(delay, retry_after or 0.0), scrape["backoff_max_s"])


def _with_retries(url: str, scrape: dict, attempt: Callable[[], T]) -> T:
    """Call ``attempt`` up to ``retries + 1`` times, backing off while it raises _Retryable."""
    tries = scrape["retries"] + 1
    for n in range(tries):
        try:
            return attempt()
        except _Retryable as exc:
            if n + 1 == tries:
                raise TransientFetchError(
                    url, f"failed: {exc.reason} (gave up after {tries} attempts)"
                ) from exc
            wait = _backoff_s(n, exc.retry_after, scrape)
            _logger().warning(
                "%s: %s; retry %d/%d in %.2fs", url, exc.reason, n + 1, tries - 1, wait
            )
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _read_capped(resp: httpx.Response, url: str, max_bytes: int, timeout_s: float) -> bytes:
    """The (decoded) body, refused as soon as it passes ``max_bytes`` or ``timeout_s``."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(url, f"is {int(declared)} bytes, over the {max_bytes}-byte size cap")
    chunks: list[bytes] = []
    size, deadline = 0, time.monotonic() + timeout_s
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(url, f"is over the {max_bytes}-byte size cap (max_bytes)")
        if time.monotonic() > deadline:
            raise _Retryable(f"body not read within {timeout_s}s")
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_errors(url: str, exc: Exception) -> Exception:
    """Map an httpx exception to _Retryable (transient) or FetchError (permanent)."""
    if isinstance(exc, httpx.TimeoutException):
        return _Retryable(f"timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):  # refused, or no such host: waiting will not help
        return FetchError(url, f"cannot be reached ({exc}): is the host up and the URL right?")
    if isinstance(exc, httpx.NetworkError | httpx.ProtocolError | httpx.ProxyError):
        return _Retryable(f"connection error ({type(exc).__name__}: {exc})")
    return FetchError(url, f"cannot be fetched ({type(exc).__name__}: {exc})")


def _fetch_robots(origin: str, scrape: dict) -> urllib.robotparser.RobotFileParser:
    """Fetch and parse ``origin/robots.txt``: 4xx allows all; 5xx/unreachable is transient."""
    url = f"{origin}/robots.txt"
    parser = urllib.robotparser.RobotFileParser(url)
    delay_s, timeout_s = scrape["per_host_delay_s"], scrape["timeout_s"]

    def attempt() -> urllib.robotparser.RobotFileParser:
        headers = {"User-Agent": scrape["user_agent"]}
        hooks = {
            "request": [lambda request: _wait_turn(str(request.url), delay_s)],
            "response": [lambda response: _answered(str(response.request.url))],
        }
        try:
            with (
                httpx.Client(follow_redirects=True, timeout=timeout_s, event_hooks=hooks) as client,
                client.stream("GET", url, headers=headers) as resp,
            ):
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise _Retryable(f"robots.txt HTTP {resp.status_code}")
                if resp.status_code >= 400:
                    parser.allow_all = True
                    return parser
                body = b""
                for chunk in resp.iter_bytes():  # RFC 9309: parse the first 500 KiB only
                    body += chunk
                    if len(body) >= ROBOTS_MAX_BYTES:
                        break
        except httpx.HTTPError as exc:
            raise _transport_errors(url, exc) from exc
        parser.parse(body.decode("utf-8", "replace").splitlines())
        return parser

    return _with_retries(url, scrape, attempt)


def _check_robots(url: str, scrape: dict) -> None:
    """Raise FetchError if the host's robots.txt (fetched once per host) disallows ``url``."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    with _lock:
        origin_lock = _robots_locks.setdefault(origin, threading.Lock())
    with origin_lock:
        cached = _robots.get(origin)
        if cached is None or time.monotonic() - cached[1] > ROBOTS_TTL_S:
            cached = (_fetch_robots(origin, scrape), time.monotonic())
            _robots[origin] = cached
    agent = scrape["user_agent"].split("/", 1)[0]
    if not cached[0].can_fetch(scrape["user_agent"], url):
        raise FetchError(url, f"is disallowed by {origin}/robots.txt for user agent {agent!r}")


def _sniffable(media: str) -> bool:
    """Whether a content type may hide a page or a feed (servers that do not know what they
    serve, or an XML type of their own): the body decides."""
    return media in VAGUE_TYPES or media.endswith(("+xml", "/xml"))


def _sniff_type(content: bytes) -> str | None:
    """A content type for a body served without one: a feed, an HTML page, or None."""
    head = content[:2048].decode("utf-8", "replace")
    if _FEED_START.match(head):
        return "application/xml"
    if re.search(r"<(?:!doctype html|html|head|body|article|p)\b", head, re.IGNORECASE):
        return "text/html"
    return None


def _page_attempt(client: httpx.Client, url: str, headers: dict, scrape: dict) -> dict:
    """One GET: the response dict, or _Retryable / FetchError."""
    try:
        with client.stream("GET", url, headers=headers) as resp:
            status = resp.status_code
            if status == 429 or status >= 500:
                retry_after = _retry_after(resp.headers.get("retry-after"))
                raise _Retryable(f"HTTP {status} {resp.reason_phrase}", retry_after)
            if status != 304 and not 200 <= status < 300:
                raise FetchError(url, f"returned HTTP {status} {resp.reason_phrase}")
            content_type = resp.headers.get("content-type", "")
            media = _media_type(content_type)
            known = media in HTML_TYPES | FEED_TYPES
            if status != 304 and media and not known and not _sniffable(media):
                raise FetchError(url, f"is {media}, not an HTML page or a feed")
            content = (
                b""
                if status == 304
                else _read_capped(resp, url, scrape["max_bytes"], scrape["timeout_s"])
            )
            if status != 304 and not known:  # no type, or a vague one: what does it hold?
                content_type = _sniff_type(content) or ""
                if not content_type:
                    served = f"is {media}" if media else "has no Content-Type"
                    raise FetchError(url, f"{served} and does not look like HTML or a feed")
            return {
                "status": status,
                "url": url,
                "final_url": str(resp.url),
                "headers": {k.lower(): v for k, v in resp.headers.items()},
                "content": content,
                "content_type": content_type,
            }
    except httpx.HTTPError as exc:
        raise _transport_errors(url, exc) from exc


def http_get(
    url: str, scrape: dict, *, etag: str | None = None, last_modified: str | None = None
) -> dict:
    """Politely GET an HTML page or feed: robots.txt, per-host delay, retries, size cap."""
    if not is_url(url):
        raise FetchError(url, "is not a valid http(s) URL")
    headers = {"User-Agent": scrape["user_agent"], "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified

    def before_each_request(request: httpx.Request) -> None:  # also runs for each redirect hop
        if scrape["respect_robots"]:
            _check_robots(str(request.url), scrape)
        _wait_turn(str(request.url), scrape["per_host_delay_s"])

    def attempt() -> dict:
        hooks = {
            "request": [before_each_request],
            "response": [lambda response: _answered(str(response.request.url))],
        }
        try:
            with httpx.Client(
                follow_redirects=True, timeout=scrape["timeout_s"], event_hooks=hooks
            ) as client:
                return _page_attempt(client, url, headers, scrape)
        except httpx.InvalidURL as exc:
            raise FetchError(url, f"is not a valid URL ({exc})") from exc

    return _with_retries(url, scrape, attempt)


# --- fetch_url: conditional GET against the stored copy ------------------------------------


def _http_paths(url: str, data_dir: str) -> tuple[Path, Path]:
    stem = Path(data_dir) / "raw" / "http" / _sha256(url.encode())[:24]
    return stem.with_suffix(".body"), stem.with_suffix(".json")


def _stored(body_path: Path, meta_path: Path) -> dict | None:
    """The metadata of the stored copy, if it is there and its body is intact."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        intact = _sha256(body_path.read_bytes()) == meta["sha256"]
    except (OSError, ValueError, KeyError):
        return None
    return meta if intact else None


@task  # no task retries: http_get's own (backoff, Retry-After) are the one retry policy
def fetch_url(url: str, source: str, scrape: dict, data_dir: str) -> dict:
    """Fetch a page or feed into DATA/raw/http/ with a conditional GET on the stored copy."""
    body_path, meta_path = _http_paths(url, data_dir)
    old = _stored(body_path, meta_path) or {}
    resp = http_get(url, scrape, etag=old.get("etag"), last_modified=old.get("last_modified"))
    headers = resp["headers"]
    if resp["status"] == 304:
        if not old:
            raise FetchError(url, "answered 304 Not Modified to an unconditional request")
        meta = {**old, "fetched_at": _now()}
    else:
        write_atomic(body_path, resp["content"])
        meta = {
            "url": url,
            "final_url": resp["final_url"],
            "content_type": resp["content_type"],
            "sha256": _sha256(resp["content"]),
            "fetched_at": _now(),
        }
    meta["etag"] = headers.get("etag") or old.get("etag")  # a 304 may update validators
    meta["last_modified"] = headers.get("last-modified") or old.get("last_modified")
    write_atomic(meta_path, json.dumps(meta, indent=1))
    _logger().info("%s: HTTP %d (%s)", url, resp["status"], meta["content_type"])
    status = 304 if resp["status"] == 304 else 200
    fields = ("final_url", "sha256", "content_type", "fetched_at")
    page = {"source": source, "url": url, "path": str(body_path), "kind": "file"}
    return {**page, **{k: meta[k] for k in fields}, "status": status}


def is_feed(raw: dict) -> bool:
    """True if a raw page is an RSS/Atom feed, by content type or by sniffing its start."""
    media = _media_type(raw.get("content_type"))
    if media in FEED_TYPES:
        return True
    if media in HTML_TYPES or not raw.get("path"):
        return False
    with open(raw["path"], "rb") as fh:
        head = fh.read(2048).decode("utf-8", "replace")
    return bool(_FEED_START.match(head))


# --- feeds ------------------------------------------------------------------------------


def _clean_link(link: str) -> str:
    """Drop tracking query parameters (utm_*, Medium's ``source=rss-...``) and fragments."""
    parts = urlsplit(link)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if not _TRACKING_PARAM.match(k)]
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


def _parse_feed(path: str, source: str, data_dir: str) -> list[dict]:
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
    refs: list[dict] = []
    seen: set[str] = set()
    for entry in parsed.entries:
        raw_link = entry.get("link") or (entry.get("id") if is_url(entry.get("id", "")) else "")
        link = _clean_link(urljoin(base, raw_link)) if raw_link else ""
        content = _full_content(entry)
        if content is None and not is_url(link):
            _logger().warning("%s: entry %r has no http(s) link to fetch; skipped", source, link)
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
        digest = _sha256(page)
        out = Path(data_dir) / "raw" / "feed" / f"{digest[:24]}.html"
        if not out.exists():
            write_atomic(out, page)
        url = link or out.resolve().as_uri()
        refs.append(
            {"source": source, "url": url, "path": str(out), "sha256": digest, "kind": "file"}
        )
    return refs


@task
def read_feed(path: str, source: str, data_dir: str) -> list[dict]:
    """Turn a fetched RSS/Atom feed file into page refs (parsing only, no network)."""
    refs = _parse_feed(path, source, data_dir)
    full = sum(r["kind"] == "file" for r in refs)
    _logger().info("%s: %d entries (%d with full content)", source, len(refs), full)
    return refs


# --- local sources ----------------------------------------------------------------------


def _file_ref(path: Path, source: str) -> dict:
    resolved = path.resolve()
    digest = _sha256(resolved.read_bytes())
    return {
        "source": source,
        "url": resolved.as_uri(),
        "path": str(resolved),
        "sha256": digest,
        "kind": "file",
    }


def _is_medium_export(folder: Path) -> bool:
    """A folder with ``posts/`` holding Medium-named posts (or a ``profile/`` beside it)."""
    posts = folder / "posts"
    if not posts.is_dir():
        return False
    return (folder / "profile").is_dir() or any(
        MEDIUM_POST.match(p.name) for p in posts.glob("*.html")
    )


def _medium_roots(folder: Path) -> list[Path]:
    """The Medium export(s) in ``folder``: itself, or its top-level export subfolder(s)."""
    if _is_medium_export(folder):
        return [folder]
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in subdirs if _is_medium_export(p)]


def _list_folder(folder: Path, source: str) -> list[dict]:
    """Refs for a Medium export's published posts, or every page file in a plain folder."""
    if roots := _medium_roots(folder):
        files = [
            p
            for root in roots
            for p in sorted((root / "posts").glob("*.html"))
            if not p.name.startswith(("draft_", "."))
        ]
    else:
        files = sorted(
            (p for p in folder.rglob("*") if p.suffix.lower() in PAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(folder).as_posix(),
        )
        files = [
            p for p in files if not any(s.startswith(".") for s in p.relative_to(folder).parts)
        ]
    return [_file_ref(p, source) for p in files]


def _safe_members(zf: zipfile.ZipFile, source: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """Zip members as (info, relative path); refuse absolute or ``..`` names (zip-slip)."""
    members, total = [], 0
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise ValueError(
                f"{source}: refusing unsafe zip member {info.filename!r} "
                "(absolute path or '..' would write outside the extraction folder)"
            )
        total += info.file_size
        if total > ZIP_MAX_BYTES:
            raise ValueError(f"{source}: unpacks to more than {ZIP_MAX_BYTES} bytes; refused")
        if not info.is_dir():
            members.append((info, "/".join(parts)))
    return members


def _extract_zip(zip_path: Path, source: str, data_dir: str) -> Path:
    """Extract a zip once into DATA/raw/export/<sha256(zip)[:16]>/ (atomically) and return it."""
    dest = Path(data_dir) / "raw" / "export" / _sha256(zip_path.read_bytes())[:16]
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info, rel in _safe_members(zf, source):
                with atomic_path(tmp / rel) as out, zf.open(info) as src, out.open("wb") as fh:
                    shutil.copyfileobj(src, fh)
        os.rename(tmp, dest)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{source} is not a readable .zip archive ({exc})") from exc
    except OSError:
        if not dest.is_dir():  # lost a race with another extraction of the same zip: fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _local_path(source: str) -> Path:
    """The local path a SOURCE names (a plain path or a ``file://`` URI)."""
    if source.startswith("file://"):
        return Path(unquote(urlsplit(source).path))
    return Path(source).expanduser()


@task
def list_local(source: str, data_dir: str) -> list[dict]:
    """Page refs for a local folder, file, Medium export (folder or .zip) or feed file."""
    path = _local_path(source)
    if not path.exists():
        raise ValueError(f"{source!r}: no such file or folder; a source is {ACCEPTED_SOURCES}")
    suffix = path.suffix.lower()
    if path.is_dir():
        refs = _list_folder(path, source)
    elif suffix == ".zip":
        refs = _list_folder(_extract_zip(path, source, data_dir), source)
    elif suffix in FEED_SUFFIXES:
        refs = _parse_feed(str(path), source, data_dir)
    elif suffix in PAGE_SUFFIXES:
        refs = [_file_ref(path, source)]
    else:
        raise ValueError(
            f"{source!r}: unsupported file type {suffix!r}; a source is {ACCEPTED_SOURCES}"
        )
    if not refs:
        _logger().warning("%s: no pages found", source)
    return refs


def _run(task_obj: Any, *args: Any) -> Any:
    """Call a task as a task inside a flow/task run, as its plain function outside one."""
    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return task_obj.fn(*args)  # plain Python: no Prefect server needed, same result
    return task_obj(*args)


def discover_pages(source: str, scrape: dict, data_dir: str) -> list[dict]:
    """Page refs (or the one raw page) of a SOURCE: local listing, or fetch + feed parsing."""
    if not is_url(source):
        return _run(list_local, source, data_dir)
    fresh = fetch_url.with_options(cache_policy=NO_CACHE, refresh_cache=True)
    raw = _run(fresh, source, source, scrape, data_dir)
    if is_feed(raw):
        return _run(read_feed, raw["path"], source, data_dir)
    return [raw]
