"""Tests for tasks/scrape/ against a real HTTP server on 127.0.0.1 (tests/sitefixture.py)."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
from bs4 import BeautifulSoup

from config.settings import ScrapeSettings
from tasks.scrape import (
    FetchError,
    TransientFetchError,
    discover_pages,
    fetch_url,
    http_get,
    is_feed,
    is_url,
    list_local,
    read_feed,
)
from tasks.scrape import http as scrape_http

from sitefixture import Response, Site, serve, site_fixture  # noqa: F401  (the "site" fixture)

FIXTURES = Path(__file__).parent / "fixtures" / "scrape"
SAMPLE_POSTS = Path(__file__).resolve().parents[1] / "data" / "sample" / "posts"
MEDIUM_CORPUS = Path(__file__).resolve().parents[2] / "shared/corpora/medium-enkiv2"
PAGE = "<!DOCTYPE html><html><head><title>T</title></head><body><p>Hello.</p></body></html>"


def settings(**overrides: object) -> ScrapeSettings:
    """Fast scrape settings: no per-host delay, tiny backoff and timeouts."""
    base = {
        "per_host_delay_s": 0.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "retries": 2,
        "timeout_s": 2.0,
    }
    return ScrapeSettings(**{**base, **overrides})


@pytest.fixture(autouse=True)
def _fresh_hosts():
    """Each test starts with no remembered robots.txt or per-host request times."""
    scrape_http.reset_host_state()
    yield
    scrape_http.reset_host_state()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- http_get: status handling and retries -------------------------------------------------


def test_is_url():
    assert is_url("https://medium.com/feed/@user")
    assert is_url("http://127.0.0.1:8000/a.html")
    assert not is_url("posts/a.html")
    assert not is_url("file:///tmp/a.html")
    assert not is_url("ftp://example.com/a")
    assert not is_url("https://")


def test_404_is_permanent_and_not_retried(site: Site):
    with pytest.raises(FetchError, match="404") as info:
        http_get(site.url_for("/gone"), settings())
    assert not isinstance(info.value, TransientFetchError)
    assert site.url_for("/gone") in str(info.value)
    assert site.count("/gone") == 1


def test_other_4xx_is_permanent(site: Site):
    site.add("/secret", "no", status=403)
    with pytest.raises(FetchError, match="403"):
        http_get(site.url_for("/secret"), settings())
    assert site.count("/secret") == 1


def test_5xx_then_success_after_retries(site: Site):
    site.add_sequence("/flaky", Response(500), Response(502), Response(200, PAGE))
    resp = http_get(site.url_for("/flaky"), settings())
    assert resp["status"] == 200
    assert resp["content"] == PAGE.encode()
    assert site.count("/flaky") == 3


def test_429_waits_for_retry_after(site: Site):
    site.add_sequence("/busy", Response(429, headers={"Retry-After": "1"}), Response(200, PAGE))
    resp = http_get(site.url_for("/busy"), settings(backoff_max_s=2.0))
    assert resp["status"] == 200
    first, second = site.requests_for("/busy")
    assert second.time - first.time >= 1.0


def test_retry_after_is_capped_by_backoff_max(site: Site):
    site.add_sequence("/busy", Response(429, headers={"Retry-After": "3600"}), Response(200, PAGE))
    started = time.monotonic()
    assert http_get(site.url_for("/busy"), settings(backoff_max_s=0.2))["status"] == 200
    assert time.monotonic() - started < 2.0
    first, second = site.requests_for("/busy")
    assert second.time - first.time >= 0.2


def test_persistent_503_is_transient_after_all_attempts(site: Site):
    site.add("/down", "busy", status=503)
    with pytest.raises(TransientFetchError, match="503") as info:
        http_get(site.url_for("/down"), settings(retries=3))
    assert "4 attempts" in str(info.value)
    assert site.count("/down") == 4


def test_slow_response_times_out_then_is_transient(site: Site):
    site.add("/slow", PAGE, delay_s=1.5)
    started = time.monotonic()
    with pytest.raises(TransientFetchError, match="timed out"):
        http_get(site.url_for("/slow"), settings(timeout_s=0.2, retries=1))
    assert site.count("/slow") == 2
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("respect_robots", [True, False], ids=["robots.txt", "page"])
def test_connection_refused_is_one_fast_clear_failure(respect_robots):
    """Issue 15: a closed port took 108 s (5 attempts, each inside 3 task runs)."""
    with Site() as gone:
        url = gone.url_for("/a")
    with pytest.raises(FetchError, match=r"cannot be reached \(.*\): is the host up") as info:
        http_get(url, settings(retries=4, respect_robots=respect_robots))
    assert not isinstance(info.value, TransientFetchError)  # not retried: no "gave up after"
    assert "attempts" not in str(info.value)


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "streamed"])
def test_oversized_body_is_refused(site: Site, send_length: bool):
    site.add("/huge", size=3_000_000, send_length=send_length)
    started = time.monotonic()
    with pytest.raises(FetchError, match="100000-byte size cap") as info:
        http_get(site.url_for("/huge"), settings(max_bytes=100_000))
    assert not isinstance(info.value, TransientFetchError)
    assert site.count("/huge") == 1
    assert time.monotonic() - started < 2.0


def test_non_html_content_type_is_refused(site: Site):
    site.add("/a.pdf", b"%PDF-1.4", content_type="application/pdf")
    with pytest.raises(FetchError) as info:
        http_get(site.url_for("/a.pdf"), settings())
    assert (
        str(info.value)
        == f"{site.url_for('/a.pdf')} is application/pdf, not an HTML page or a feed"
    )
    assert site.count("/a.pdf") == 1


def test_missing_content_type_is_sniffed(site: Site):
    site.add("/bare", PAGE, content_type=None)
    site.add("/blob", b"\x00\x01binary", content_type=None)
    assert http_get(site.url_for("/bare"), settings())["content_type"] == "text/html"
    with pytest.raises(FetchError, match="does not look like HTML"):
        http_get(site.url_for("/blob"), settings())


@pytest.mark.parametrize(
    "content_type",
    ["application/x-rss+xml", "application/rss+xml", "text/plain", "application/vnd.feed+xml"],
)
def test_a_feed_is_known_by_its_type_or_by_its_content(site: Site, content_type):
    site.add("/feed", FEED.encode(), content_type=content_type)
    site.add("/blob", b"%PDF-1.4 not a feed", content_type="application/octet-stream")
    got = http_get(site.url_for("/feed"), settings())
    assert is_feed({"content_type": got["content_type"], "path": None})
    with pytest.raises(FetchError, match="is application/octet-stream and does not look like"):
        http_get(site.url_for("/blob"), settings())


def test_invalid_url_is_refused():
    with pytest.raises(FetchError, match="not a valid http"):
        http_get("notaurl/a.html", settings())


def test_redirect_is_followed(site: Site):
    site.add("/old", "", status=301, headers={"Location": "/new"})
    site.add("/new", PAGE)
    resp = http_get(site.url_for("/old"), settings())
    assert resp["final_url"] == site.url_for("/new")
    assert resp["url"] == site.url_for("/old")


# --- politeness --------------------------------------------------------------------------


def test_robots_disallow_is_honoured(site: Site):
    site.robots("User-agent: *\nDisallow: /private/\n")
    site.add("/private/x", PAGE)
    site.add("/public", PAGE)
    with pytest.raises(FetchError, match=r"robots\.txt"):
        http_get(site.url_for("/private/x"), settings())
    assert http_get(site.url_for("/public"), settings())["status"] == 200
    assert site.count("/private/x") == 0
    assert site.count("/robots.txt") == 1  # fetched once per host


def test_robots_rule_for_our_user_agent(site: Site):
    site.robots("User-agent: personal-gpt\nDisallow: /\n\nUser-agent: *\nAllow: /\n")
    site.add("/a", PAGE)
    with pytest.raises(FetchError, match="personal-gpt"):
        http_get(site.url_for("/a"), settings())
    assert site.count("/a") == 0
    assert http_get(site.url_for("/a"), settings(respect_robots=False))["status"] == 200


def test_robots_also_checked_on_redirect_target(site: Site):
    site.robots("User-agent: *\nDisallow: /private/\n")
    site.add("/go", "", status=302, headers={"Location": "/private/x"})
    site.add("/private/x", PAGE)
    with pytest.raises(FetchError, match=r"robots\.txt"):
        http_get(site.url_for("/go"), settings())
    assert site.count("/private/x") == 0


def test_user_agent_and_accept_headers(site: Site):
    site.add("/a", PAGE)
    ua = "test-agent/9.9 (+https://example.org/bot)"
    http_get(site.url_for("/a"), settings(user_agent=ua))
    (request,) = site.requests_for("/a")
    assert request.headers["user-agent"] == ua
    assert "text/html" in request.headers["accept"]
    assert "application/rss+xml" in request.headers["accept"]
    assert site.requests_for("/robots.txt")[0].headers["user-agent"] == ua


def test_per_host_delay_spaces_requests(site: Site):
    site.add("/a", PAGE)
    site.add("/b", PAGE)
    polite = settings(per_host_delay_s=0.3)
    http_get(site.url_for("/a"), polite)
    http_get(site.url_for("/b"), polite)
    times = [r.time for r in site.requests]  # robots.txt, /a, /b
    assert [r.path for r in site.requests] == ["/robots.txt", "/a", "/b"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.29


def test_per_host_delay_holds_across_threads(site: Site):
    for name in "abc":
        site.add(f"/{name}", PAGE)
    polite = settings(per_host_delay_s=0.25, respect_robots=False)
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda p: http_get(site.url_for(p), polite), ["/a", "/b", "/c"]))
    times = sorted(r.time for r in site.requests)
    assert len(times) == 3
    # slots are reserved client-side; arrival times at the server jitter by a few ms under load
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.2


def test_retry_after_http_date_and_backoff_bounds():
    later = formatdate(time.time() + 30, usegmt=True)
    assert 25 <= scrape_http._retry_after(later) <= 31
    assert scrape_http._retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert scrape_http._retry_after("soon") is None
    cfg = settings(backoff_base_s=1.0, backoff_max_s=60.0)
    for attempt in range(4):
        assert 2**attempt <= scrape_http._backoff_s(attempt, None, cfg) <= 1.5 * 2**attempt
    assert scrape_http._backoff_s(0, 30.0, cfg) == 30.0
    assert scrape_http._backoff_s(10, 3600.0, cfg) == 60.0


# --- fetch_url: storage and conditional GET ------------------------------------------------


def test_conditional_get_with_etag(site: Site, tmp_path: Path):
    site.add("/post", PAGE, etag='"v1"')
    url, data = site.url_for("/post"), str(tmp_path)
    first = fetch_url.fn(url, "src", settings(), data)
    assert first["status"] == 200 and first["kind"] == "file"
    assert Path(first["path"]).read_bytes() == PAGE.encode()
    assert first["sha256"] == sha(PAGE.encode())
    assert first["path"].startswith(str(tmp_path / "raw" / "http"))
    assert first["content_type"].startswith("text/html")

    second = fetch_url.fn(url, "src", settings(), data)
    assert site.requests_for("/post")[1].headers["if-none-match"] == '"v1"'
    assert second["status"] == 304
    assert (second["path"], second["sha256"]) == (first["path"], first["sha256"])

    changed = PAGE.replace("Hello.", "Hello again, edited.")
    site.add("/post", changed, etag='"v2"')
    third = fetch_url.fn(url, "src", settings(), data)
    assert site.requests_for("/post")[2].headers["if-none-match"] == '"v1"'
    assert third["status"] == 200
    assert third["sha256"] == sha(changed.encode()) != first["sha256"]
    assert Path(third["path"]).read_text() == changed


def test_conditional_get_with_last_modified(site: Site, tmp_path: Path):
    stamp = "Mon, 01 Jan 2024 10:00:00 GMT"
    site.add("/post", PAGE, last_modified=stamp)
    fetch_url.fn(site.url_for("/post"), "src", settings(), str(tmp_path))
    again = fetch_url.fn(site.url_for("/post"), "src", settings(), str(tmp_path))
    assert site.requests_for("/post")[1].headers["if-modified-since"] == stamp
    assert "if-none-match" not in site.requests_for("/post")[1].headers
    assert again["status"] == 304


def test_damaged_stored_copy_is_fetched_unconditionally(site: Site, tmp_path: Path):
    site.add("/post", PAGE, etag='"v1"')
    first = fetch_url.fn(site.url_for("/post"), "src", settings(), str(tmp_path))
    Path(first["path"]).write_text("truncated")
    again = fetch_url.fn(site.url_for("/post"), "src", settings(), str(tmp_path))
    assert "if-none-match" not in site.requests_for("/post")[1].headers
    assert again["status"] == 200
    assert Path(again["path"]).read_text() == PAGE


def test_fetch_url_has_one_retry_policy_the_scrapers():
    assert fetch_url.retries == 0 and fetch_url.retry_condition_fn is None


# --- feeds -------------------------------------------------------------------------------


def test_is_feed_by_type_and_by_sniffing(tmp_path: Path):
    feed = tmp_path / "f.body"
    feed.write_bytes((FIXTURES / "atom_summary.xml").read_bytes())
    page = tmp_path / "p.body"
    page.write_text(PAGE)
    assert is_feed({"content_type": "application/rss+xml; charset=utf-8", "path": str(page)})
    assert is_feed({"content_type": "text/xml", "path": str(page)})
    assert not is_feed({"content_type": "text/html", "path": str(feed)})
    assert is_feed({"content_type": "", "path": str(feed)})
    assert not is_feed({"content_type": "", "path": str(page)})


def test_medium_feed_with_full_content_becomes_file_refs(tmp_path: Path):
    source = "https://medium.com/feed/@adawriter"
    refs = read_feed.fn(str(FIXTURES / "medium_feed.xml"), source, str(tmp_path))
    assert [r["url"] for r in refs] == [
        "https://medium.com/@adawriter/why-plain-text-wins-1a2b3c4d5e6f",
        "https://medium.com/@adawriter/a-second-post-6f5e4d3c2b1a",
    ]
    for ref in refs:
        assert ref["kind"] == "file" and ref["source"] == source
        path = Path(ref["path"])
        assert path.parent == tmp_path / "raw" / "feed"
        assert path.name == ref["sha256"][:24] + ".html"
        assert sha(path.read_bytes()) == ref["sha256"]

    soup = BeautifulSoup(Path(refs[0]["path"]).read_text(), "lxml")
    title = "Why plain text wins & why Markdown helps"
    assert soup.title.string == title
    assert soup.find("meta", property="og:title")["content"] == title
    assert soup.find("meta", attrs={"name": "author"})["content"] == "Ada Writer"
    published = soup.find("meta", property="article:published_time")["content"]
    assert published == "2024-01-01T10:30:00Z"
    assert soup.find("link", rel="canonical")["href"] == refs[0]["url"]
    assert [t["content"] for t in soup.find_all("meta", property="article:tag")] == [
        "writing",
        "markdown",
    ]
    article = soup.find("article")
    assert article.find("figcaption").get_text() == "A caption under the figure."
    assert article.find("pre").get_text() == 'print("hello")'
    assert article.find("strong").get_text() == "format"
    # a relative link in the content is resolved against the feed's URL
    assert article.find("a")["href"] == "https://medium.com/@adawriter/another-post-6f5e4d3c2b1a"


def test_atom_feed_without_content_gives_absolute_http_refs(tmp_path: Path):
    source = "http://blog.example.org/feeds/atom.xml"
    refs = read_feed.fn(str(FIXTURES / "atom_summary.xml"), source, str(tmp_path))
    assert refs == [
        {
            "source": source,
            "url": "http://blog.example.org/posts/first.html",
            "path": None,
            "sha256": None,
            "kind": "http",
        },
        {
            "source": source,
            "url": "http://blog.example.org/feeds/posts/second.html?id=2",
            "path": None,
            "sha256": None,
            "kind": "http",
        },
    ]
    assert not (tmp_path / "raw" / "feed").exists()


def test_rss_excerpt_feed_gives_http_refs(tmp_path: Path):
    source = "https://blog.example.com/feed/"
    refs = read_feed.fn(str(FIXTURES / "rss_summary.xml"), source, str(tmp_path))
    assert [(r["kind"], r["url"]) for r in refs] == [
        ("http", "https://blog.example.com/2024/excerpted-post/"),
        ("http", "https://blog.example.com/2024/relative/"),
    ]


def test_not_a_feed_is_a_value_error(tmp_path: Path):
    page = tmp_path / "page.xml"
    page.write_text(PAGE)
    with pytest.raises(ValueError, match="not an RSS or Atom feed"):
        read_feed.fn(str(page), str(page), str(tmp_path))


# --- local sources -----------------------------------------------------------------------

MEDIUM_POST = (
    '<!DOCTYPE html><html><head><meta http-equiv="Content-Type" content="text/html; '
    'charset=utf-8"><title>{title}</title></head><body><article class="h-entry">'
    '<header><h1 class="p-name">{title}</h1></header><section data-field="body" '
    'class="e-content"><p>{body}</p></section><footer><p><a href="https://medium.com/@ada/'
    '{slug}" class="p-canonical">Canonical link</a></p></footer></article></body></html>'
)


def make_medium_zip(path: Path, extra: dict[str, str] | None = None) -> Path:
    """A small Medium export: posts (one a draft) and a profile, under a top-level folder."""
    posts = {
        "2020-01-02_Hello-world-0123456789ab.html": ("Hello world", "A published post."),
        "2021-05-06_Second-thoughts-abcdef012345.html": ("Second thoughts", "Another one."),
        "2021-06-07_Short-reply-to-a-comment-1122334455aa.html": ("", "Agreed!"),
        "draft_Not-finished-yet-ffeeddccbbaa.html": ("Not finished yet", "WIP"),
    }
    with zipfile.ZipFile(path, "w") as zf:
        for name, (title, body) in posts.items():
            html = MEDIUM_POST.format(title=title, body=body, slug=name[:-5])
            zf.writestr(f"medium-export-42/posts/{name}", html)
        zf.writestr("medium-export-42/profile/profile.html", "<html><body>me</body></html>")
        zf.writestr("medium-export-42/README.html", "<html><body>about</body></html>")
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    return path


def test_medium_export_zip_lists_published_posts_only(tmp_path: Path):
    archive = make_medium_zip(tmp_path / "medium-export.zip")
    data = tmp_path / "data"
    refs = list_local.fn(str(archive), str(data))
    names = [Path(r["path"]).name for r in refs]
    assert names == [
        "2020-01-02_Hello-world-0123456789ab.html",
        "2021-05-06_Second-thoughts-abcdef012345.html",
        "2021-06-07_Short-reply-to-a-comment-1122334455aa.html",  # replies: the cleaner's job
    ]
    root = data / "raw" / "export" / sha(archive.read_bytes())[:16]
    for ref in refs:
        path = Path(ref["path"])
        assert path.is_relative_to(root.resolve())
        assert ref["kind"] == "file" and ref["source"] == str(archive)
        assert ref["url"] == path.as_uri()
        assert ref["sha256"] == sha(path.read_bytes())
    assert [p.name for p in (data / "raw" / "export").iterdir()] == [root.name]  # no temp left

    stamp = Path(refs[0]["path"]).stat().st_mtime_ns
    assert list_local.fn(str(archive), str(data)) == refs  # extracted once, then reused
    assert Path(refs[0]["path"]).stat().st_mtime_ns == stamp


def test_unpacked_medium_export_folder(tmp_path: Path):
    archive = make_medium_zip(tmp_path / "export.zip")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unpacked")
    for folder in (tmp_path / "unpacked", tmp_path / "unpacked" / "medium-export-42"):
        refs = list_local.fn(str(folder), str(tmp_path / "data"))
        assert len(refs) == 3
        assert not any("draft_" in r["path"] or "profile" in r["path"] for r in refs)


@pytest.mark.parametrize("member", ["../evil.html", "/tmp/evil-abs.html", "a/../../evil.html"])
def test_zip_slip_member_is_refused(tmp_path: Path, member: str):
    archive = make_medium_zip(tmp_path / "bad.zip", extra={member: "<p>pwned</p>"})
    data = tmp_path / "deep" / "data"
    with pytest.raises(ValueError, match="unsafe zip member"):
        list_local.fn(str(archive), str(data))
    assert not (tmp_path / "evil.html").exists()
    assert not (data / "raw" / "export").exists() or not any((data / "raw" / "export").iterdir())


def test_corrupt_zip_is_a_value_error(tmp_path: Path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"not a readable \.zip"):
        list_local.fn(str(bad), str(tmp_path / "data"))


def test_local_folder_of_html_and_markdown(tmp_path: Path):
    blog = tmp_path / "blog"
    (blog / "2024" / "notes").mkdir(parents=True)
    (blog / ".git").mkdir()
    files = {
        "b.html": PAGE,
        "a.md": "# A\n\nText.",
        "2024/c.HTM": PAGE,
        "2024/notes/d.markdown": "# D",
        ".hidden.html": PAGE,
        ".git/e.html": PAGE,
        "notes.txt": "not a page",
        "feed.xml": (FIXTURES / "rss_summary.xml").read_text(),
    }
    for name, text in files.items():
        (blog / name).write_text(text)
    refs = list_local.fn(str(blog), str(tmp_path / "data"))
    rel = [Path(r["path"]).relative_to(blog.resolve()).as_posix() for r in refs]
    assert rel == ["2024/c.HTM", "2024/notes/d.markdown", "a.md", "b.html"]
    assert refs[2] == {
        "source": str(blog),
        "url": (blog / "a.md").resolve().as_uri(),
        "path": str((blog / "a.md").resolve()),
        "sha256": sha(b"# A\n\nText."),
        "kind": "file",
    }


def test_single_file_and_file_uri(tmp_path: Path):
    post = tmp_path / "post.html"
    post.write_text(PAGE)
    (ref,) = list_local.fn(str(post), str(tmp_path / "data"))
    assert ref["path"] == str(post.resolve()) and ref["kind"] == "file"
    (same,) = list_local.fn(post.resolve().as_uri(), str(tmp_path / "data"))
    assert same["path"] == ref["path"]


def test_local_feed_file_is_parsed(tmp_path: Path):
    feed = tmp_path / "feed.rss"
    shutil.copy(FIXTURES / "medium_feed.xml", feed)
    refs = list_local.fn(str(feed), str(tmp_path / "data"))
    assert [r["kind"] for r in refs] == ["file", "file"]
    assert refs[0]["url"] == "https://medium.com/@adawriter/why-plain-text-wins-1a2b3c4d5e6f"
    # relative entry links of a local feed resolve against the feed's site link
    refs = list_local.fn(str(FIXTURES / "rss_summary.xml"), str(tmp_path / "data"))
    assert refs[1]["url"] == "https://blog.example.com/2024/relative/"


def test_missing_path_is_a_value_error(tmp_path: Path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ValueError, match="no-such-folder") as info:
        list_local.fn(str(missing), str(tmp_path / "data"))
    assert "no such file or folder" in str(info.value)
    assert ".markdown" in str(info.value)  # says what is accepted


def test_unsupported_file_type_is_a_value_error(tmp_path: Path):
    doc = tmp_path / "essay.docx"
    doc.write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"essay\.docx.*unsupported file type '\.docx'"):
        list_local.fn(str(doc), str(tmp_path / "data"))


@pytest.mark.skipif(not (MEDIUM_CORPUS / "posts").is_dir(), reason="shared corpus not present")
def test_real_medium_export_folder(tmp_path: Path):
    refs = list_local.fn(str(MEDIUM_CORPUS), str(tmp_path / "data"))
    posts = sorted((MEDIUM_CORPUS / "posts").glob("*.html"))
    drafts = [p for p in posts if p.name.startswith("draft_")]
    assert drafts and len(refs) == len(posts) - len(drafts)
    assert not any(Path(r["path"]).name.startswith("draft_") for r in refs)


# --- the test server itself (shared with other test files) ------------------------------


def test_sitefixture_serves_a_directory_with_validators(tmp_path: Path):
    blog = tmp_path / "blog"
    (blog / "posts").mkdir(parents=True)
    (blog / "posts" / "a.html").write_text('<a href="https://blog.example.com/posts/b.html">b</a>')
    (blog / "feed.xml").write_text((FIXTURES / "medium_feed.xml").read_text())
    with serve(blog, rewrite={"https://blog.example.com": None}) as s:
        page = httpx.get(s.url_for("/posts/a.html"))
        assert page.headers["content-type"].startswith("text/html")
        assert page.text == f'<a href="{s.url}/posts/b.html">b</a>'  # rewritten to the server
        assert (
            httpx.get(s.url_for("/feed.xml"))
            .headers["content-type"]
            .startswith("application/rss+xml")
        )
        etag = {"If-None-Match": page.headers["etag"]}
        again = httpx.get(s.url_for("/posts/a.html"), headers=etag)
        assert again.status_code == 304 and again.content == b""
        since = {"If-Modified-Since": page.headers["last-modified"]}
        assert httpx.get(s.url_for("/posts/a.html"), headers=since).status_code == 304
        assert httpx.get(s.url_for("/posts/b.html")).status_code == 404
        (blog / "posts" / "b.html").write_text("<p>new</p>")  # added at runtime
        assert httpx.get(s.url_for("/posts/b.html")).text == "<p>new</p>"
        s.add("/posts/b.html", "<p>route wins</p>")
        assert httpx.get(s.url_for("/posts/b.html")).text == "<p>route wins</p>"
        assert httpx.get(s.url_for("/../etc/passwd")).status_code == 404
        assert [r.path for r in s.requests][:2] == ["/posts/a.html", "/feed.xml"]


@pytest.mark.skipif(not SAMPLE_POSTS.is_dir(), reason="sample blog not present")
def test_sitefixture_serves_the_sample_blog(tmp_path: Path):
    with serve(SAMPLE_POSTS.parent) as s:
        for post in sorted(SAMPLE_POSTS.glob("*.html"))[:2]:
            raw = fetch_url.fn(s.url_for(f"/posts/{post.name}"), s.url, settings(), str(tmp_path))
            assert Path(raw["path"]).read_bytes() == post.read_bytes()


# --- discover_pages ----------------------------------------------------------------------


def test_discover_pages_outside_a_flow(site: Site, tmp_path: Path):
    site.add("/article", PAGE)
    (raw,) = discover_pages(site.url_for("/article"), settings(), str(tmp_path))
    assert raw["kind"] == "file" and raw["status"] == 200
    assert raw["source"] == raw["url"] == site.url_for("/article")
    assert Path(raw["path"]).read_text() == PAGE
    local = discover_pages(str(FIXTURES / "rss_summary.xml"), settings(), str(tmp_path))
    assert [r["kind"] for r in local] == ["http", "http"]
    # a local feed with relative links and no site link: nothing to fetch them from
    assert discover_pages(str(FIXTURES / "atom_summary.xml"), settings(), str(tmp_path)) == []
    with pytest.raises(FetchError, match="application/pdf"):
        site.add("/a.pdf", b"%PDF", content_type="application/pdf")
        discover_pages(site.url_for("/a.pdf"), settings(), str(tmp_path))


@pytest.fixture(scope="session")
def prefect_harness(request: pytest.FixtureRequest):
    """A temporary Prefect server: conftest's ``prefect_server`` if defined, else our own."""
    try:
        yield request.getfixturevalue("prefect_server")
        return
    except pytest.FixtureLookupError:
        pass
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>Blog</title>
<item><title>Full</title><link>/posts/full.html</link><dc:creator>Ada</dc:creator>
<content:encoded><![CDATA[<p>The whole post, with <em>emphasis</em>.</p>]]></content:encoded>
</item>
<item><title>Teaser</title><link>/posts/teaser.html</link><description>Read more</description>
</item></channel></rss>"""


@pytest.mark.slow
def test_discover_pages_in_a_flow_refetches_the_feed(prefect_harness, site: Site, tmp_path):
    from prefect import flow

    site.add("/feed.xml", FEED, content_type="application/rss+xml", etag='"f1"')
    site.add("/posts/teaser.html", PAGE)
    feed_url, data = site.url_for("/feed.xml"), str(tmp_path)

    @flow
    def ingest() -> list[dict]:
        refs = discover_pages(feed_url, settings(), data)
        pages = [r for r in refs if r["kind"] == "file"]
        pages += [
            fetch_url(r["url"], r["source"], settings(), data) for r in refs if r["kind"] == "http"
        ]
        return pages

    first = ingest()
    assert [p["url"] for p in first] == [
        site.url_for("/posts/full.html"),
        site.url_for("/posts/teaser.html"),
    ]
    assert "<em>emphasis</em>" in Path(first[0]["path"]).read_text()
    assert first[1]["status"] == 200 and Path(first[1]["path"]).read_text() == PAGE

    second = ingest()  # the feed is re-fetched (conditionally), never served from a cache
    feed_requests = site.requests_for("/feed.xml")
    assert len(feed_requests) == 2
    assert feed_requests[1].headers["if-none-match"] == '"f1"'
    assert [p["path"] for p in second] == [p["path"] for p in first]
    assert site.count("/posts/full.html") == 0  # full content came from the feed


@pytest.mark.slow
def test_fetch_url_in_a_flow_retries_transient_errors_only(prefect_harness, site: Site, tmp_path):
    from prefect import flow

    site.add("/down", "busy", status=503)
    twice = settings(retries=1)  # the scraper's own policy: one retry

    @flow
    def fetch_both() -> list[str]:
        states = [
            fetch_url(site.url_for(p), "src", twice, str(tmp_path), return_state=True)
            for p in ("/down", "/gone")
        ]
        return [type(s.result(raise_on_failure=False)).__name__ for s in states]

    assert fetch_both() == ["TransientFetchError", "FetchError"]
    assert site.count("/down") == 2  # the scraper's retry, and no task retries around it
    assert site.count("/gone") == 1  # permanent: never retried
