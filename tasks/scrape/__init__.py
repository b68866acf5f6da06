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

A source gives page refs (``pages.PageRef``): kind "http" still has to be fetched
(``fetch_url``, which returns a ``pages.RawPage``), kind "file" is on disk already.

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
>>> refs = discover_pages(str(root), ScrapeSettings(), str(root / "data"))
>>> [pathlib.Path(r["path"]).name for r in refs], refs[0]["kind"]
(['2020-01-02_Hello-world-0123456789ab.html'], 'file')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from typing_extensions import TypedDict

from config.settings import ScrapeSettings
from core.errors import BadInput
from core.io import write_atomic
from core.logs import run_logger
from tasks.scrape.feeds import read_feed
from tasks.scrape.http import (
    FEED_START,
    FEED_TYPES,
    HTML_TYPES,
    FetchError,
    TransientFetchError,
    http_get,
    is_url,
    media_type,
    sha256_hex,
    utc_now,
)
from tasks.scrape.local import ACCEPTED_SOURCES, list_local, local_path
from tasks.scrape.pages import PageRef, RawPage

__all__ = [  # the stage's public face; its parts: http (politeness), feeds, local
    "FetchError",
    "PageRef",
    "RawPage",
    "TransientFetchError",
    "checked_sources",
    "discover_pages",
    "fetch_url",
    "http_get",
    "is_feed",
    "is_url",
    "list_local",
    "read_feed",
]


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
        if local and not wrong and not is_url(source) and not local_path(source).exists():
            wrong = "is no file or folder"
        if wrong:
            raise BadInput(f"source {source!r} {wrong}: a source is {ACCEPTED_SOURCES}")
    return sources


# --- fetch_url: conditional GET against the stored copy ------------------------------------


class StoredCopy(TypedDict):
    """``DATA/raw/http/<key>.json``: what is known of the body stored beside it."""

    url: str
    final_url: str
    content_type: str
    sha256: str
    fetched_at: str
    etag: str | None
    last_modified: str | None


def _http_paths(url: str, data_dir: str) -> tuple[Path, Path]:
    stem = Path(data_dir) / "raw" / "http" / sha256_hex(url.encode())[:24]
    return stem.with_suffix(".body"), stem.with_suffix(".json")


def _stored(body_path: Path, meta_path: Path) -> StoredCopy | None:
    """The metadata of the stored copy, if it is there and its body is intact."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        intact = sha256_hex(body_path.read_bytes()) == meta["sha256"]
    except (OSError, ValueError, KeyError):
        return None
    return meta if intact else None


@task  # no task retries: http_get's own (backoff, Retry-After) are the one retry policy
def fetch_url(url: str, source: str, scrape: ScrapeSettings, data_dir: str) -> RawPage:
    """Fetch a page or feed into DATA/raw/http/ with a conditional GET on the stored copy."""
    body_path, meta_path = _http_paths(url, data_dir)
    old = _stored(body_path, meta_path) or {}
    resp = http_get(url, scrape, etag=old.get("etag"), last_modified=old.get("last_modified"))
    headers = resp["headers"]
    if resp["status"] == 304:
        if not old:
            raise FetchError(url, "answered 304 Not Modified to an unconditional request")
        meta = {**old, "fetched_at": utc_now()}
    else:
        write_atomic(body_path, resp["content"])
        meta = {
            "url": url,
            "final_url": resp["final_url"],
            "content_type": resp["content_type"],
            "sha256": sha256_hex(resp["content"]),
            "fetched_at": utc_now(),
        }
    meta["etag"] = headers.get("etag") or old.get("etag")  # a 304 may update validators
    meta["last_modified"] = headers.get("last-modified") or old.get("last_modified")
    write_atomic(meta_path, json.dumps(meta, indent=1))
    run_logger(__name__).info("%s: HTTP %d (%s)", url, resp["status"], meta["content_type"])
    status = 304 if resp["status"] == 304 else 200
    fields = ("final_url", "sha256", "content_type", "fetched_at")
    page = {"source": source, "url": url, "path": str(body_path), "kind": "file"}
    return {**page, **{k: meta[k] for k in fields}, "status": status}


def is_feed(raw: RawPage) -> bool:
    """True if a raw page is an RSS/Atom feed, by content type or by sniffing its start."""
    media = media_type(raw.get("content_type"))
    if media in FEED_TYPES:
        return True
    if media in HTML_TYPES or not raw.get("path"):
        return False
    with open(raw["path"], "rb") as fh:
        head = fh.read(2048).decode("utf-8", "replace")
    return bool(FEED_START.match(head))


def _run(task_obj: Any, *args: Any) -> Any:
    """Call a task as a task inside a flow/task run, as its plain function outside one."""
    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return task_obj.fn(*args)  # plain Python: no Prefect server needed, same result
    return task_obj(*args)


def discover_pages(source: str, scrape: ScrapeSettings, data_dir: str) -> list[PageRef]:
    """Page refs (or the one raw page) of a SOURCE: local listing, or fetch + feed parsing."""
    if not is_url(source):
        return _run(list_local, source, data_dir)
    fresh = fetch_url.with_options(cache_policy=NO_CACHE, refresh_cache=True)
    raw = _run(fresh, source, source, scrape, data_dir)
    if is_feed(raw):
        return _run(read_feed, raw["path"], source, data_dir)
    return [raw]
