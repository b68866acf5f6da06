"""HTTP, politely: one request per host per ``per_host_delay_s``, robots.txt honoured (RFC 9309),
backoff with jitter on 429 / 5xx / connection errors (``Retry-After`` honoured, capped), capped
bodies, and content types told apart (sniffed where the server is vague).
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
import urllib.robotparser
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from typing_extensions import TypedDict

from config.settings import ScrapeSettings
from core.logs import run_logger

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
ROBOTS_MAX_BYTES = 512_000  # RFC 9309: crawlers must parse at least 500 KiB
ROBOTS_TTL_S = 24 * 3600  # RFC 9309: do not use a cached robots.txt for more than 24 hours
FEED_START = re.compile(
    r"^\ufeff?\s*(?:(?:<\?[^>]*\?>|<!--.*?-->|<!DOCTYPE[^>]*>)\s*)*<(?:rss|feed|rdf:RDF)\b",
    re.DOTALL | re.IGNORECASE,
)
TRACKING_PARAM = re.compile(r"^(?:utm_.*|source)$")

T = TypeVar("T")


class Fetched(TypedDict):
    """One GET's answer (:func:`http_get`): an HTML page or a feed, or 304 Not Modified."""

    status: int
    url: str  # as asked
    final_url: str  # after redirects
    headers: dict[str, str]  # names lowercased
    content: bytes  # empty for a 304
    content_type: str  # the header's, or the sniffed type of a vague one


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


def is_url(source: str) -> bool:
    """True for an absolute http(s) URL with a host."""
    parts = urlsplit(source.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def media_type(content_type: str | None) -> str:
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


def _backoff_s(attempt: int, retry_after: float | None, scrape: ScrapeSettings) -> float:
    """base * 2**attempt plus up to 50 % jitter, at least Retry-After, at most backoff_max_s."""
    delay = scrape.backoff_base_s * 2**attempt
    delay += random.uniform(0, delay / 2)
    return min(max(delay, retry_after or 0.0), scrape.backoff_max_s)


def _with_retries(url: str, scrape: ScrapeSettings, attempt: Callable[[], T]) -> T:
    """Call ``attempt`` up to ``retries + 1`` times, backing off while it raises _Retryable."""
    tries = scrape.retries + 1
    for n in range(tries):
        try:
            return attempt()
        except _Retryable as exc:
            if n + 1 == tries:
                raise TransientFetchError(
                    url, f"failed: {exc.reason} (gave up after {tries} attempts)"
                ) from exc
            wait = _backoff_s(n, exc.retry_after, scrape)
            run_logger(__name__).warning(
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


def _fetch_robots(origin: str, scrape: ScrapeSettings) -> urllib.robotparser.RobotFileParser:
    """Fetch and parse ``origin/robots.txt``: 4xx allows all; 5xx/unreachable is transient."""
    url = f"{origin}/robots.txt"
    parser = urllib.robotparser.RobotFileParser(url)
    delay_s, timeout_s = scrape.per_host_delay_s, scrape.timeout_s

    def attempt() -> urllib.robotparser.RobotFileParser:
        headers = {"User-Agent": scrape.user_agent}
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


def _check_robots(url: str, scrape: ScrapeSettings) -> None:
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
    agent = scrape.user_agent.split("/", 1)[0]
    if not cached[0].can_fetch(scrape.user_agent, url):
        raise FetchError(url, f"is disallowed by {origin}/robots.txt for user agent {agent!r}")


def _sniffable(media: str) -> bool:
    """Whether a content type may hide a page or a feed (servers that do not know what they
    serve, or an XML type of their own): the body decides."""
    return media in VAGUE_TYPES or media.endswith(("+xml", "/xml"))


def _sniff_type(content: bytes) -> str | None:
    """A content type for a body served without one: a feed, an HTML page, or None."""
    head = content[:2048].decode("utf-8", "replace")
    if FEED_START.match(head):
        return "application/xml"
    if re.search(r"<(?:!doctype html|html|head|body|article|p)\b", head, re.IGNORECASE):
        return "text/html"
    return None


def _page_attempt(
    client: httpx.Client, url: str, headers: dict[str, str], scrape: ScrapeSettings
) -> Fetched:
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
            media = media_type(content_type)
            known = media in HTML_TYPES | FEED_TYPES
            if status != 304 and media and not known and not _sniffable(media):
                raise FetchError(url, f"is {media}, not an HTML page or a feed")
            content = (
                b""
                if status == 304
                else _read_capped(resp, url, scrape.max_bytes, scrape.timeout_s)
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
    url: str, scrape: ScrapeSettings, *, etag: str | None = None, last_modified: str | None = None
) -> Fetched:
    """Politely GET an HTML page or feed: robots.txt, per-host delay, retries, size cap."""
    if not is_url(url):
        raise FetchError(url, "is not a valid http(s) URL")
    headers = {"User-Agent": scrape.user_agent, "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified

    def before_each_request(request: httpx.Request) -> None:  # also runs for each redirect hop
        if scrape.respect_robots:
            _check_robots(str(request.url), scrape)
        _wait_turn(str(request.url), scrape.per_host_delay_s)

    def attempt() -> Fetched:
        hooks = {
            "request": [before_each_request],
            "response": [lambda response: _answered(str(response.request.url))],
        }
        try:
            with httpx.Client(
                follow_redirects=True, timeout=scrape.timeout_s, event_hooks=hooks
            ) as client:
                return _page_attempt(client, url, headers, scrape)
        except httpx.InvalidURL as exc:
            raise FetchError(url, f"is not a valid URL ({exc})") from exc

    return _with_retries(url, scrape, attempt)
