"""A real HTTP test server on 127.0.0.1 (free port, background thread) for scraping tests.

It serves a mutable table of routes (path -> one or a sequence of ``Response``) and any
number of mounted directories, and records every request it receives, so a test can
assert exactly what was fetched, with which headers and when.

Use the pytest fixture ``site``: import ``site_fixture`` into the test module (or list
``"sitefixture"`` in ``pytest_plugins`` of the root conftest.py) and ask for ``site``::

    from sitefixture import Response, Site, site_fixture  # noqa: F401  (fixture "site")

    def test_page(site: Site):
        site.add("/a.html", "<html><body><p>Hi</p></body></html>", etag='"v1"')
        site.add_sequence("/busy", Response(429, headers={"Retry-After": "1"}), Response(200))
        site.robots("User-agent: *\\nDisallow: /private/\\n")
        site.serve_dir("data/sample")                # /posts/x.html, /feed.xml, ...
        ...fetch site.url_for("/a.html")...
        assert site.count("/a.html") == 1
        assert site.requests_for("/a.html")[0].headers["user-agent"] == "..."

or the context manager, anywhere (a script, a session-scoped fixture)::

    with serve(directory="data/sample", rewrite={"https://blog.example.com": None}) as s:
        print(s.url_for("/feed.xml"))

Behaviour:

- a route answers ``Response``s in order, one per request, repeating the last one (so
  ``add_sequence(p, Response(500), Response(500), Response(200))`` fails twice then works);
- a response with ``etag`` and/or ``last_modified`` answers 304 (no body) when the request's
  If-None-Match matches (``*``, lists and ``W/`` accepted) or, without If-None-Match, when
  If-Modified-Since is not older than ``last_modified``;
- ``delay_s`` sleeps before the status line (a slow server; clients time out waiting for
  headers); ``body_delay_s`` sleeps after the headers (a slow body);
- ``size=N`` streams N bytes of filler (an oversized body without holding it in memory);
  ``send_length=False`` omits Content-Length so the client must stream to find the size;
- mounted directories are looked up at request time (files added later are served) and get
  an ETag (sha256 of the bytes) and Last-Modified (mtime) with the same 304 handling; a
  ``rewrite`` mapping replaces strings in text files as served (``None`` as a value means
  this server's base URL, e.g. to point a sample feed's absolute links at the server);
- routes win over directories; anything else is a 404 (so a missing robots.txt is a 404).

Every request is recorded as a ``Request`` (method, path with query, lower-cased headers,
``time.monotonic()`` at arrival) in ``site.requests``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

HTML = "text/html; charset=utf-8"
TEXT_SUFFIXES = {".html", ".htm", ".xml", ".rss", ".atom", ".md", ".markdown", ".txt", ".json"}
CONTENT_TYPES = {
    ".html": HTML,
    ".htm": HTML,
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".markdown": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass
class Response:
    """One canned answer. ``body`` str is sent as UTF-8."""

    status: int = 200
    body: bytes | str = b""
    content_type: str | None = HTML  # None: send no Content-Type header
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None  # sent as ETag; enables If-None-Match -> 304
    last_modified: str | None = None  # HTTP-date; enables If-Modified-Since -> 304
    delay_s: float = 0.0  # sleep before answering at all
    body_delay_s: float = 0.0  # sleep between the headers and the body
    size: int | None = None  # stream this many filler bytes instead of ``body``
    send_length: bool = True  # send Content-Length

    def data(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body


@dataclass
class Request:
    """A request the server received."""

    method: str
    path: str  # path with query string, as sent
    headers: dict[str, str]  # lower-cased names
    time: float  # time.monotonic() on arrival


def _not_modified(resp: Response, headers: dict[str, str]) -> bool:
    """RFC 9110 conditional GET: If-None-Match wins over If-Modified-Since."""
    if "if-none-match" in headers:
        if not resp.etag:
            return False
        wanted = [t.strip() for t in headers["if-none-match"].split(",")]
        bare = resp.etag.removeprefix("W/")
        return "*" in wanted or any(t.removeprefix("W/") == bare for t in wanted)
    if "if-modified-since" in headers and resp.last_modified:
        try:
            since = parsedate_to_datetime(headers["if-modified-since"])
            return parsedate_to_datetime(resp.last_modified) <= since
        except (TypeError, ValueError):
            return False
    return False


def _feed_type(data: bytes) -> str:
    head = data[:1024].decode("utf-8", "replace")
    if re.search(r"<rss\b|<rdf:RDF\b", head):
        return "application/rss+xml; charset=utf-8"
    if re.search(r"<feed\b", head):
        return "application/atom+xml; charset=utf-8"
    return "application/xml; charset=utf-8"


class Site:
    """The server's state: routes, mounted directories, recorded requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, list[Response]] = {}
        self._served: dict[str, int] = {}  # path -> requests answered (sequence position)
        self._mounts: list[tuple[str, Path, dict[str, str | None]]] = []
        self.requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---
    def start(self) -> Site:
        site = self

        class Handler(_Handler):
            owner = site

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Site:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url_for(self, path: str) -> str:
        return self.url + (path if path.startswith("/") else "/" + path)

    # --- routes ---
    def add(self, path: str, body: bytes | str = b"", **options: object) -> None:
        """Serve one response at ``path`` (options: the fields of ``Response``)."""
        self.add_sequence(path, Response(body=body, **options))  # type: ignore[arg-type]

    def add_sequence(self, path: str, *responses: Response) -> None:
        """Answer successive requests with ``responses`` in order; the last one repeats."""
        assert responses, "give at least one Response"
        with self._lock:
            self._routes[path] = list(responses)
            self._served[path] = 0

    def add_file(self, path: str, file: str | Path, content_type: str | None = None) -> None:
        """Serve a file's current bytes at ``path`` (type guessed from its suffix)."""
        data = Path(file).read_bytes()
        self.add(path, data, content_type=content_type or _guess_type(Path(file), data))

    def robots(self, text: str) -> None:
        """Serve ``text`` as /robots.txt."""
        self.add("/robots.txt", text, content_type="text/plain; charset=utf-8")

    def remove(self, path: str) -> None:
        with self._lock:
            self._routes.pop(path, None)

    def serve_dir(
        self, directory: str | Path, prefix: str = "/", rewrite: dict[str, str | None] | None = None
    ) -> None:
        """Serve the files under ``directory`` at ``prefix`` (read at request time)."""
        prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        with self._lock:
            self._mounts.append((prefix, Path(directory).resolve(), dict(rewrite or {})))

    # --- recorded requests ---
    def requests_for(self, path: str) -> list[Request]:
        """Requests whose path (query string ignored) equals ``path``."""
        with self._lock:
            return [r for r in self.requests if urlsplit(r.path).path == path]

    def count(self, path: str) -> int:
        return len(self.requests_for(path))

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- used by the handler ---
    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _lookup(self, path: str) -> Response | None:
        with self._lock:
            if path in self._routes:
                seq = self._routes[path]
                n = self._served[path]
                self._served[path] = n + 1
                return seq[min(n, len(seq) - 1)]
            mounts = list(self._mounts)
        for prefix, root, rewrite in mounts:
            if path.startswith(prefix):
                resp = self._file_response(root, unquote(path[len(prefix) :]), rewrite)
                if resp is not None:
                    return resp
        return None

    def _file_response(
        self, root: Path, rel: str, rewrite: dict[str, str | None]
    ) -> Response | None:
        target = (root / rel).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(root) or not target.is_file():
            return None
        data = target.read_bytes()
        if target.suffix.lower() in TEXT_SUFFIXES and rewrite:
            text = data.decode("utf-8")
            for old, new in rewrite.items():
                text = text.replace(old, self.url if new is None else new)
            data = text.encode("utf-8")
        return Response(
            body=data,
            content_type=_guess_type(target, data),
            etag='"' + hashlib.sha256(data).hexdigest()[:16] + '"',
            last_modified=formatdate(target.stat().st_mtime, usegmt=True),
        )


def _guess_type(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return _feed_type(data)
    return (
        CONTENT_TYPES.get(suffix)
        or mimetypes.guess_type(path.name)[0]
        or "application/octet-stream"
    )


class _Handler(BaseHTTPRequestHandler):
    owner: Site
    protocol_version = "HTTP/1.0"  # one request per connection; bodies may be close-delimited

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.owner._record(Request(self.command, self.path, headers, time.monotonic()))
        resp = self.owner._lookup(urlsplit(self.path).path)
        if resp is None:
            resp = Response(404, "<html><body><h1>Not found</h1></body></html>")
        with suppress(BrokenPipeError, ConnectionResetError):
            time.sleep(resp.delay_s)
            if 200 <= resp.status < 300 and _not_modified(resp, headers):
                self.send_response(304)
                self._validators(resp)
                self.end_headers()
                return
            data = b"" if resp.size is not None else resp.data()
            self.send_response(resp.status)
            if resp.content_type:
                self.send_header("Content-Type", resp.content_type)
            if resp.send_length:
                self.send_header("Content-Length", str(resp.size or len(data)))
            self._validators(resp)
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.flush()
            time.sleep(resp.body_delay_s)
            if send_body:
                self._body(resp, data)

    def _validators(self, resp: Response) -> None:
        if resp.etag:
            self.send_header("ETag", resp.etag)
        if resp.last_modified:
            self.send_header("Last-Modified", resp.last_modified)

    def _body(self, resp: Response, data: bytes) -> None:
        if resp.size is None:
            self.wfile.write(data)
            return
        chunk, left = b"x" * 65536, resp.size
        while left > 0:
            self.wfile.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)


@contextmanager
def serve(
    directory: str | Path | None = None, rewrite: dict[str, str | None] | None = None
) -> Iterator[Site]:
    """Run a Site for the ``with`` block, optionally serving ``directory`` at ``/``."""
    with Site() as s:
        if directory is not None:
            s.serve_dir(directory, rewrite=rewrite)
        yield s


@pytest.fixture(name="site")
def site_fixture() -> Iterator[Site]:
    """A fresh running Site per test (empty: add routes or ``serve_dir``)."""
    with serve() as s:
        yield s
