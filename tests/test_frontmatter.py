"""Markdown files with TOML front matter (Zola, Hugo), reference-style links and footnotes.

Hand-made posts with exact expected records, then every post of the rust-blog corpus
(``../shared/corpora/rust-blog/posts/*.md``, Zola front matter between ``+++`` lines): each
post gets a title and a date, and no front matter, link reference definition or reference
link URL reaches the Markdown or the plain text. Run with ``-s`` for the corpus summary.
"""

from __future__ import annotations

import collections
import re
import time
from pathlib import Path

import pytest

from config.settings import CleanSettings
from core.markdown import MD, markdown_to_plain
from tasks.clean import clean_record, split_front_matter

try:
    from tests.test_clean import CONTAINER_PREFIX, assert_lines_correspond
    from tests.test_corpus import CORPORA, failures
except ImportError:  # tests/ is not a package: pytest puts it on sys.path instead
    from test_clean import CONTAINER_PREFIX, assert_lines_correspond
    from test_corpus import CORPORA, failures

RUST_BLOG = CORPORA / "rust-blog" / "posts"
SKIP_MESSAGE = (
    "../shared/corpora/rust-blog/posts not found: the rust-blog corpus tests need the shared "
    "corpus beside the project"
)


def clean_text(tmp_path: Path, text: str, **overrides: object) -> dict:
    """The record of a Markdown file with this text (no minimum length unless overridden)."""
    path = tmp_path / "post.md"
    path.write_text(text, encoding="utf-8")
    options = CleanSettings(**{"min_words": 0, **overrides})
    return clean_record(str(path), "0" * 64, "file:///post.md", "test", options)


# --- hand-made posts ---------------------------------------------------------------------------

ZOLA_POST = """\
+++
path = "inside-rust/2020/07/27/trains"
title = "Scheduling the trains"
authors = ["Aaron Turon", "Niko Matsakis"]
aliases = ["inside-rust/2020/07/27/trains.html"]

[extra]
team = "The Release Team"
team_url = "https://www.rust-lang.org/governance/teams/release"
+++

We talked about [why Rust is reaching 1.0][why], the [train model][] and
[Nightly] builds.[^1]

<!-- more -->

## The alpha release

See the [notes][why] and <https://example.com/bare>.

```toml
+++
title = "{{ page.title }}"
+++
```

[^1]: https://example.com/footnote
[^2]: Two.

[why]: https://blog.rust-lang.org/2014/10/30/Stability.html
[train model]: https://blog.rust-lang.org/2014/09/15/Rust-1.0.html "Trains"
[nightly]: https://rust-lang.org/nightly
"""
ZOLA_MD = """\
# Scheduling the trains

We talked about why Rust is reaching 1.0, the train model and Nightly builds.[^1]

## The alpha release

See the notes and https://example.com/bare.

```toml
+++
title = "{{ page.title }}"
+++
```

[^1\\]: https://example.com/footnote

[^2\\]: Two."""
ZOLA_PLAIN = """\
Scheduling the trains

We talked about why Rust is reaching 1.0, the train model and Nightly builds.[^1]

The alpha release

See the notes and https://example.com/bare.

+++
title = "{{ page.title }}"
+++

[^1]: https://example.com/footnote

[^2]: Two."""
ZOLA_LINKS = (
    "We talked about [why Rust is reaching 1.0](https://blog.rust-lang.org/2014/10/30/"
    "Stability.html), the [train model](https://blog.rust-lang.org/2014/09/15/Rust-1.0.html)"
    " and [Nightly](https://rust-lang.org/nightly) builds.[^1]"
)


def test_zola_post(tmp_path: Path) -> None:
    """Title, authors and the path's date from the TOML; reference links (full, collapsed,
    shortcut) keep their text only; definitions, ``<!-- more -->`` and the front matter are
    gone; code keeps its ``+++`` and ``{{ }}``; footnotes stay text, one paragraph each."""
    record = clean_text(tmp_path, ZOLA_POST)
    assert (record["title"], record["author"], record["published"]) == (
        "Scheduling the trains",
        "Aaron Turon, Niko Matsakis",
        "2020-07-27",
    )
    assert record["skip_reason"] is None
    assert record["markdown"] == ZOLA_MD
    assert record["plain"] == ZOLA_PLAIN
    assert_lines_correspond(ZOLA_MD, ZOLA_PLAIN)


def test_zola_post_keeping_link_urls(tmp_path: Path) -> None:
    """With clean.keep_link_urls, reference links become inline links to their definitions."""
    record = clean_text(tmp_path, ZOLA_POST, keep_link_urls=True)
    assert record["markdown"].split("\n")[2] == ZOLA_LINKS
    assert record["plain"] == ZOLA_PLAIN


def test_hugo_post_date_wins_over_path(tmp_path: Path) -> None:
    """Hugo: a TOML datetime ``date`` (zoned -> UTC) and a single ``author``."""
    post = (
        '+++\ntitle = "Plain Text, Forever"\nauthor = "Maren Holt"\n'
        'date = 2024-02-01T10:30:00+01:00\npath = "2019/01/01/old"\n+++\n\n'
        "A [link][1] here.\n\n[1]: <https://marenholt.example/one> 'One'\n"
    )
    record = clean_text(tmp_path, post)
    assert (record["title"], record["author"], record["published"]) == (
        "Plain Text, Forever",
        "Maren Holt",
        "2024-02-01T09:30:00Z",
    )
    assert record["markdown"] == "# Plain Text, Forever\n\nA link here."
    assert record["plain"] == "Plain Text, Forever\n\nA link here."


def test_yaml_authors_list(tmp_path: Path) -> None:
    """YAML front matter reads ``authors`` (a list) as TOML does."""
    post = "---\ntitle: YAML Post\nauthors:\n  - Ada Lee\n  - Bo Chen\ndate: 2023-05-06\n---\n"
    record = clean_text(tmp_path, post + "Text [here].\n\n[here]: https://x.example\n")
    assert (record["title"], record["author"], record["published"]) == (
        "YAML Post",
        "Ada Lee, Bo Chen",
        "2023-05-06",
    )
    assert record["markdown"] == "# YAML Post\n\nText here."


def test_broken_toml_keeps_its_key_value_lines(tmp_path: Path) -> None:
    """Front matter that is not valid TOML still gives its top-level ``key = value`` lines and
    never reaches the body."""
    post = '+++\ntitle = "A "quoted" title"\npath = "2021/02/03/broken"\n[extra\n+++\nText.\n'
    record = clean_text(tmp_path, post)
    assert (record["title"], record["author"], record["published"]) == (
        'A "quoted" title',
        None,
        "2021-02-03",
    )
    assert record["markdown"] == '# A "quoted" title\n\nText.'


def test_toml_page_without_title_is_skipped(tmp_path: Path) -> None:
    """A Zola template page (front matter only, no title) is skipped with nothing as text."""
    record = clean_text(tmp_path, '+++\ntemplate = "latest.html"\n+++\n', min_words=150)
    assert (record["title"], record["markdown"], record["plain"]) == (None, "", "")
    assert record["skip_reason"] == "no title: a reply or note, not an article"


def test_split_front_matter_needs_matching_fences() -> None:
    """``+++`` opens TOML only and ``---`` YAML only; a thematic break is no front matter."""
    assert split_front_matter('+++\ntitle = "A"\n---\nText.') == (
        {},
        '+++\ntitle = "A"\n---\nText.',
    )
    assert split_front_matter("Text.\n\n+++\n") == ({}, "Text.\n\n+++\n")
    assert split_front_matter('+++\ntitle = "A"\n+++\r\nText.') == ({"title": "A"}, "Text.")


# --- the rust-blog corpus ----------------------------------------------------------------------

FRONT_MATTER_LINE = re.compile(r"^(?:\+\+\+|(?:path|title|authors|aliases) = \S)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\\?\[(?!\^)[^\]]+\\?\]:[ \t]*[^\s:]")  # "[ref]: url"


def rust_blog_files() -> list[Path]:
    """The corpus posts, or a skip when the corpus is not beside the project."""
    if not RUST_BLOG.is_dir():
        pytest.skip(SKIP_MESSAGE)
    return sorted(RUST_BLOG.glob("*.md"))


@pytest.fixture(scope="module")
def rust_blog() -> dict[Path, dict]:
    """Every corpus post cleaned once with the default settings, timed."""
    files = rust_blog_files()
    options = CleanSettings()
    start = time.perf_counter()
    records = {
        path: clean_record(str(path), "0" * 64, f"file://{path.name}", "rust-blog", options)
        for path in files
    }
    reasons = collections.Counter(
        (r["skip_reason"] or "article").split(":")[0] for r in records.values()
    )
    elapsed = time.perf_counter() - start
    print(f"\nrust-blog: {len(files)} posts cleaned in {elapsed:.1f} s: {dict(reasons)}")
    return records


def is_page(path: Path) -> bool:
    """A Zola section (``_index.md``) or a page with no body (a template): not a post."""
    body = split_front_matter(path.read_text(encoding="utf-8"))[1]
    return path.name.endswith("_index.md") or not body.strip()


def test_rust_blog_posts_get_title_and_date(rust_blog: dict[Path, dict]) -> None:
    """Every post (not the 4 section and template pages) has a title and a date."""
    pages = [path.name for path in rust_blog if is_page(path)]
    assert len(pages) == 4, pages  # _index.md, inside-rust/_index.md, releases/_index.md, latest
    bad = [
        f"{path.name}: title {record['title']!r}, date {record['published']!r}"
        for path, record in rust_blog.items()
        if not is_page(path) and not (record["title"] and record["published"])
    ]
    assert not bad, failures(bad)
    assert sum(record["skip_reason"] is None for record in rust_blog.values()) >= 600


def test_rust_blog_no_front_matter_or_definitions_left(rust_blog: dict[Path, dict]) -> None:
    """Outside code, no Markdown or plain line is a front matter line (``+++``, ``title =
    ...``) and no Markdown line is a link reference definition (plain lines may be: a code
    span such as `` `[T]: Copy` `` is one in the plain text)."""
    bad = []
    for path, record in rust_blog.items():
        assert record["plain"] == markdown_to_plain(record["markdown"]), path.name
        for md_line, is_code, line in assert_lines_correspond(record["markdown"], record["plain"]):
            content = CONTAINER_PREFIX.sub("", md_line, count=1)
            if is_code:
                continue
            if FRONT_MATTER_LINE.match(content) or FRONT_MATTER_LINE.match(line):
                bad.append(f"{path.name}: front matter {line[:80]!r}")
            if REFERENCE_DEFINITION.match(content):
                bad.append(f"{path.name}: definition {md_line[:80]!r}")
    assert not bad, failures(bad)


def reference_urls(path: Path) -> set[str]:
    """Absolute URLs of the post's link reference definitions that the author did not also
    write as text: not in the body once definitions and inline link destinations are removed."""
    body = split_front_matter(path.read_text(encoding="utf-8"))[1]
    env: dict = {}
    MD.parse(body, env)
    lines = body.replace("\r", "").split("\n")
    text = "\n".join(line for line in lines if not REFERENCE_DEFINITION.match(line))
    text = re.sub(r"\]\([^)\s]*", "](", text)
    hrefs = {ref["href"] for label, ref in env.get("references", {}).items() if label[:1] != "^"}
    return {href for href in hrefs if "://" in href and href not in text}


def test_rust_blog_reference_link_urls_are_dropped(rust_blog: dict[Path, dict]) -> None:
    """No URL of a reference link reaches the Markdown or the plain text (keep_link_urls off)."""
    bad, checked = [], 0
    for path, record in rust_blog.items():
        for href in reference_urls(path):
            checked += 1
            bad.extend(
                f"{path.name}: {field} has {href}"
                for field in ("markdown", "plain")
                if href in record[field]
            )
    assert checked > 3000  # the corpus is full of reference links: the check checks something
    assert not bad, failures(bad)
