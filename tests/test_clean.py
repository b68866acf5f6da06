"""Tests for tasks/clean/: page -> (Markdown, plain) on hand-made fixtures, escaping, fuzzing."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import CleanSettings
from core.markdown import markdown_to_plain
from tasks.clean import (
    body_to_markdown,
    clean_page,
    extract_body,
    extract_metadata,
    html_to_markdown,
    markdown_to_html,
    parse_html,
)
from tasks.clean.dom import CONTROL

FIXTURES = Path(__file__).parent / "fixtures" / "clean"
CHROME = [
    "Sign up",
    "Sign in",
    "Follow",
    "claps",
    "1.2K",
    "responses",
    "min read",
    "More from",
    "Recommended",
    "Written by",
    "Subscribe",
    "Previous post",
    "Next post",
    "Related posts",
    "Share on Twitter",
    "Copy link",
    "Archive",
    "RSS",
    "Careers",
    "Exported from Medium",
    "Canonical link",
    "hackernoon.com",
]


def fixture(name: str) -> str:
    """A fixture file's text."""
    return (FIXTURES / name).read_text(encoding="utf-8")


def md(html: str, **options: bool) -> str:
    """Markdown of an HTML fragment treated as the whole body (no title)."""
    return body_to_markdown(parse_html(html).body, **options)


# --- line correspondence: Markdown lines <-> plain lines ---------------------------------------

FENCE = re.compile(r"(`{3,}|~{3,})")
CONTAINER_PREFIX = re.compile(r"^(?:[ \t]*>[ ]?|[ \t]*(?:[-+*]|\d{1,9}[.)])(?:[ \t]+|$)|[ \t]+)*")
TABLE_SEPARATOR = re.compile(r"\|(?: *:?-+:? *\|)+")
IMAGE_ONLY = re.compile(r"!\[[^\]]*\]\([^)]*\)")


def text_lines(markdown: str) -> list[tuple[str, bool]]:
    """The Markdown lines that each give one plain line, as (line, inside a code block):
    non-blank lines other than fences, table separator rows and image-only lines, plus
    every line inside a fence (blank code lines are kept in the plain text)."""
    lines: list[tuple[str, bool]] = []
    fence: str | None = None
    for line in markdown.split("\n") if markdown else []:
        core = CONTAINER_PREFIX.sub("", line, count=1)
        if fence is not None:
            stripped = core.strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                fence = None
            else:
                lines.append((line, True))
            continue
        opening = FENCE.match(core)
        if opening and not (opening.group(1)[0] == "`" and "`" in core[opening.end() :]):
            fence = opening.group(1)
        elif core.strip() and not (
            TABLE_SEPARATOR.fullmatch(line.strip()) or IMAGE_ONLY.fullmatch(core.strip())
        ):
            lines.append((line, False))
    return lines


def alnum(text: str) -> str:
    """Only the letters and digits of a text."""
    return "".join(c for c in text if c.isalnum())


def assert_lines_correspond(markdown: str, plain: str) -> list[tuple[str, bool, str]]:
    """Non-blank plain lines correspond one to one, in order, to the Markdown's non-blank text
    lines (same letters and digits once container markers are stripped); returns (md line, is
    code, plain line).
    For Markdown made with the default options (no link URLs or images)."""
    lines = [
        (line, code)
        for line, code in text_lines(markdown)
        if CONTAINER_PREFIX.sub("", line, count=1).strip()
    ]
    plain_lines = [line for line in plain.split("\n") if line.strip()]  # blank lines apart
    assert len(lines) == len(plain_lines), (lines, plain_lines)
    for (line, code), text in zip(lines, plain_lines, strict=True):
        source = line if code else CONTAINER_PREFIX.sub("", line, count=1)
        assert alnum(source) == alnum(text), (line, text)
    return [(line, code, text) for (line, code), text in zip(lines, plain_lines, strict=True)]


# --- the four hand-made fixtures ---------------------------------------------------------------

MEDIUM_PAGE_MD = """\
# Writing Markdown by Hand

Why plain text is still the best draft format

Body text with **strong**, *emphasis*, `inline_code()` and a link.

Readers who follow these steps can share a draft with a friend and subscribe to nothing.

## A large heading

### A small heading

- item one
- item two

1. first
2. second

> A quotation.

> A pull quote.

```python
def f(x):
    return x * 2
```

A figure caption, which is article text.

A second section starts after a divider…"""

MEDIUM_PAGE_PLAIN = """\
Writing Markdown by Hand

Why plain text is still the best draft format

Body text with strong, emphasis, inline_code() and a link.

Readers who follow these steps can share a draft with a friend and subscribe to nothing.

A large heading

A small heading

item one
item two

first
second

A quotation.

A pull quote.

def f(x):
    return x * 2

A figure caption, which is article text.

A second section starts after a divider…"""

BLOG_MD = """\
# Notes on Static Sites

Prose with **bold**, *italics*, `code`, a link.

If this helped, share it with someone who will follow the argument, and mind the \
*\\*literal\\** stars in 2 * 3.

## Section

### Subsection

- item
  - nested item
  - another nested item
- next item

3. third
4. fourth

> Quoted paragraph one.
>
> Quoted paragraph two.

```javascript
const x = 1;
console.log(x);
```

| Name | Value |
| --- | --- |
| a | 1 |

A caption."""

BLOG_PLAIN = """\
Notes on Static Sites

Prose with bold, italics, code, a link.

If this helped, share it with someone who will follow the argument, and mind the *literal* \
stars in 2 * 3.

Section

Subsection

item
nested item
another nested item
next item

third
fourth

Quoted paragraph one.

Quoted paragraph two.

const x = 1;
console.log(x);

Name\tValue
a\t1

A caption."""

MEDIUM_EXPORT_MD = """\
# Small Tools, Long Lives

Why the programs I still use are the small ones

I have used *the same* editor for **twenty years**. Its config lives in `~/.exrc`, and its \
manual fits on a page.

If you follow along, share what breaks: 2 * 3 bugs a week is normal.

## What lasts

### Plain files

**A terminal, thirty years on.** Image credit: Public domain

```
for f in *.txt; do
    wc -w "$f"
done
<A,B> AND <C,D> => <A*C,B*D>
```

> The settings are:
>
> `port=1960`\\
> `backlog=512`

> Small tools outlive *their* authors.

1. Keep the data **plain**.
2. Keep the tools small.

A talk about small tools

1\\. Not a list, just a numbered thought\\
\\# and not a heading either.

Thanks to Some One for reading a draft."""

MEDIUM_EXPORT_PLAIN = """\
Small Tools, Long Lives

Why the programs I still use are the small ones

I have used the same editor for twenty years. Its config lives in ~/.exrc, and its manual \
fits on a page.

If you follow along, share what breaks: 2 * 3 bugs a week is normal.

What lasts

Plain files

A terminal, thirty years on. Image credit: Public domain

for f in *.txt; do
    wc -w "$f"
done
<A,B> AND <C,D> => <A*C,B*D>

The settings are:

port=1960
backlog=512

Small tools outlive their authors.

Keep the data plain.
Keep the tools small.

A talk about small tools

1. Not a list, just a numbered thought
# and not a heading either.

Thanks to Some One for reading a draft."""

LOCAL_MD = """\
# Plain Text, Forever

Plain text outlives *every* editor. I keep **notes** in `~/notes`, one file a day, and link \
them by hand.

## Why

1. It diffs.
2. It greps.
   - even on a phone
3. It lasts.

> Files are forever; apps are not.

```sh
grep -r "idea" ~/notes
```

Literal asterisks: 2 * 3 * 4, and a snake_case_name.

| Tool | Use |
| --- | --- |
| grep | search \\| filter |"""

LOCAL_PLAIN = """\
Plain Text, Forever

Plain text outlives every editor. I keep notes in ~/notes, one file a day, and link them by hand.

Why

It diffs.
It greps.
even on a phone
It lasts.

Files are forever; apps are not.

grep -r "idea" ~/notes

Literal asterisks: 2 * 3 * 4, and a snake_case_name.

Tool\tUse
grep\tsearch | filter"""

PAGES = {
    "medium_page.html": (MEDIUM_PAGE_MD, MEDIUM_PAGE_PLAIN),
    "blog_page.html": (BLOG_MD, BLOG_PLAIN),
    "medium_export.html": (MEDIUM_EXPORT_MD, MEDIUM_EXPORT_PLAIN),
}

METADATA = {
    "medium_page.html": {
        "title": "Writing Markdown by Hand",
        "author": "Maren Holt",
        "published": "2023-03-14T09:12:31Z",
        "canonical_url": "https://medium.com/@marenholt/writing-markdown-by-hand-3f2a9c1b7d4e",
    },
    "blog_page.html": {
        "title": "Notes on Static Sites",
        "author": "Maren Holt",
        "published": "2023-03-14T08:00:00Z",
        "canonical_url": "https://marenholt.example/notes/notes-on-static-sites/",
    },
    "medium_export.html": {
        "title": "Small Tools, Long Lives",
        "author": "Maren Holt",
        "published": "2019-04-02T17:45:03Z",
        "canonical_url": "https://medium.com/@marenholt/small-tools-long-lives-9d2e4c1a7b3f",
    },
}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_markdown_and_plain(name: str) -> None:
    expected_md, expected_plain = PAGES[name]
    markdown = html_to_markdown(fixture(name))
    assert markdown == expected_md
    assert markdown_to_plain(markdown) == expected_plain
    assert_lines_correspond(markdown, expected_plain)


@pytest.mark.parametrize("name", sorted(METADATA))
def test_page_metadata(name: str) -> None:
    assert extract_metadata(fixture(name)) == METADATA[name]


def test_local_markdown_file() -> None:
    html = markdown_to_html(fixture("local_article.md"))
    assert extract_metadata(html) == {
        "title": "Plain Text, Forever",
        "author": "Maren Holt",
        "published": "2024-02-01",
        "canonical_url": "https://marenholt.example/notes/plain-text-forever/",
    }
    markdown = html_to_markdown(html)
    assert markdown == LOCAL_MD
    assert markdown_to_plain(markdown) == LOCAL_PLAIN
    assert_lines_correspond(markdown, LOCAL_PLAIN)


def test_markdown_title_from_first_heading_without_front_matter() -> None:
    html = markdown_to_html("Intro line.\n\n# The Title\n\nBody.")
    assert extract_metadata(html)["title"] == "The Title"
    assert html_to_markdown(html) == "# The Title\n\nIntro line.\n\nBody."


def test_markdown_without_title_gets_none() -> None:
    html = markdown_to_html("---\nauthor: A\n---\nJust a note.")
    assert extract_metadata(html)["title"] is None
    assert html_to_markdown(html) == "Just a note."


@pytest.mark.parametrize("name", [*sorted(PAGES), "local_article.md"])
@pytest.mark.parametrize("keep", [False, True])
def test_chrome_removed(name: str, keep: bool) -> None:
    page = fixture(name)
    html = markdown_to_html(page) if name.endswith(".md") else page
    markdown = html_to_markdown(html, keep_link_urls=keep, keep_images=keep)
    assert [word for word in CHROME if word in markdown] == []


def test_extract_body_picks_the_article_element() -> None:
    medium = extract_body(fixture("medium_page.html"))
    assert "postArticle-content" in medium["class"]
    blog = extract_body(fixture("blog_page.html"))
    assert "post-content" in blog["class"]
    export = extract_body(fixture("medium_export.html"))
    assert export.get("data-field") == "body"
    assert export.find(class_="graf--mixtapeEmbed") is None
    assert export.find("iframe") is None


def test_article_element_is_the_body_without_a_content_class() -> None:
    page = fixture("blog_page.html").replace('class="post-content"', 'class="content"')
    body = extract_body(page)
    assert body.name == "article"
    assert html_to_markdown(page) == BLOG_MD  # the post header's byline is gone, its h1 kept


def test_body_to_markdown_leaves_its_input_alone() -> None:
    body = extract_body(fixture("medium_page.html"))
    before = str(body)
    body_to_markdown(body, keep_link_urls=True, keep_images=True, title="Other")
    assert str(body) == before


def test_extract_body_falls_back_to_densest_element() -> None:
    html = (
        "<body><div class='menu'><p>Home</p></div><div id='x'><p>"
        + "word " * 50
        + "</p><p>more words here</p></div></body>"
    )
    body = extract_body(html)
    assert body.get("id") == "x"


def test_content_mentioning_chrome_words_survives() -> None:
    html = (
        "<article><p class='graf graf--p'>Follow the river and share the bread.</p>"
        "<div class='share-bar'><a>Share on Twitter</a></div>"
        "<p>Subscribe to nothing; follow no one.</p>"
        "<div class='comments'><p>Great post!</p></div></article>"
    )
    assert html_to_markdown(html) == (
        "Follow the river and share the bread.\n\nSubscribe to nothing; follow no one."
    )


def test_wrapper_with_chrome_class_holding_the_article_is_kept() -> None:
    prose = "A long paragraph of real article text. " * 10
    html = f"<article><div class='post has-social-buttons'><p>{prose}</p></div></article>"
    assert html_to_markdown(html) == prose.strip()


def test_chrome_class_inside_code_is_kept() -> None:
    html = (
        '<article><pre><code><span class="comment"># keep me</span>\nx = 1</code></pre></article>'
    )
    assert html_to_markdown(html) == "```\n# keep me\nx = 1\n```"


# --- options -----------------------------------------------------------------------------------


def test_links_and_images_dropped_by_default() -> None:
    html = (
        '<p>See <a href="https://a.example/x">the docs</a>.</p>'
        '<figure><img src="/i.png" alt="diagram"><figcaption>The caption.</figcaption></figure>'
    )
    assert md(html) == "See the docs.\n\nThe caption."
    assert md(html, keep_link_urls=True) == "See [the docs](https://a.example/x).\n\nThe caption."
    assert md(html, keep_images=True) == "See the docs.\n\n![diagram](/i.png)\n\nThe caption."


def test_page_with_links_and_images_kept() -> None:
    markdown = html_to_markdown(fixture("blog_page.html"), keep_link_urls=True, keep_images=True)
    assert "Prose with **bold**, *italics*, `code`, [a link](https://example.com)." in markdown
    assert "![alt text](/img/photo.jpg)\n\nA caption." in markdown
    plain = markdown_to_plain(markdown)
    assert "alt text" not in plain
    assert "https://example.com" not in plain
    assert plain == BLOG_PLAIN


def test_link_destinations_are_made_safe() -> None:
    html = (
        '<p><a href="https://w.example/Foo_(bar) x">paren</a> and '
        '<a href="javascript:x()">js</a></p>'
    )
    assert md(html, keep_link_urls=True) == "[paren](<https://w.example/Foo_(bar)%20x>) and js"
    html = '<p><a href="/x">[1] note ]</a></p>'
    assert md(html, keep_link_urls=True) == "[\\[1\\] note \\]](/x)"


def test_clean_settings_defaults_match_the_options() -> None:
    options = CleanSettings().model_dump()
    assert options["keep_link_urls"] is False
    assert options["keep_images"] is False


# --- Markdown conventions and escaping ---------------------------------------------------------

ESCAPES = [
    ("<p>2 * 3 and 4*5 and *stars*</p>", "2 * 3 and 4\\*5 and \\*stars\\*", None),
    ("<p># not a heading</p>", "\\# not a heading", None),
    ("<p>#hashtag is fine</p>", "#hashtag is fine", None),
    ("<p>1. not a list</p>", "1\\. not a list", None),
    ("<p>2) nor this</p>", "2\\) nor this", None),
    ("<p>1986. A good year</p>", "1986\\. A good year", None),
    ("<p>- not a bullet</p>", "\\- not a bullet", None),
    ("<p>+ nor this</p>", "\\+ nor this", None),
    ("<p>&gt; not a quote</p>", "\\> not a quote", None),
    ("<p>---</p>", "\\---", None),
    ("<p>a<br>===</p>", "a\\\n\\===", "a\n==="),
    ("<p>~~~ tilde</p>", "\\~~~ tilde", None),
    ("<p>snake_case_name and _under_</p>", "snake_case_name and \\_under\\_", None),
    ("<p>a `tick` here</p>", "a \\`tick\\` here", None),
    ("<p>&lt;div&gt; &lt;/b&gt; a &lt; b</p>", "\\<div> \\</b> a < b", None),
    ("<p>&amp;amp; and AT&amp;T</p>", "\\&amp; and AT&T", None),
    ("<p>[a](b) and [ref]: x and [1]</p>", "[a\\](b) and [ref\\]: x and [1]", None),
    ("<p>C:\\dir\\ and \\* and end\\</p>", "C:\\dir\\ and \\\\\\* and end\\\\", None),
    ("<p>a | b</p>", "a | b", None),
    ('<p>x<strong>"quoted"</strong>y</p>', 'x"quoted"y', None),
    ("<p><strong> bold </strong>text</p>", "**bold** text", "bold text"),
    ("<p><em></em>empty<strong> </strong>marks</p>", "empty marks", None),
    ("<p><strong>strong <em>and em</em></strong></p>", "**strong *and em***", "strong and em"),
    ("<p><em>a</em><em>b</em></p>", "*ab*", "ab"),
    ("<p>line<br>break</p>", "line\\\nbreak", "line\nbreak"),
    ("<p><code>a`b</code> <code>``</code></p>", "`` a`b `` ``` `` ```", "a`b ``"),
    ("<h2>C #</h2>", "## C \\#", "C #"),
]


@pytest.mark.parametrize(("html", "expected", "plain"), ESCAPES)
def test_escaping(html: str, expected: str, plain: str | None) -> None:
    markdown = md(html)
    assert markdown == expected
    text = parse_html(html).get_text()
    assert markdown_to_plain(markdown) == (plain if plain is not None else text)


def test_table_cells_escape_pipes_and_infer_header() -> None:
    html = (
        "<table><tr><td>a|b</td><td><code>x|y</code></td></tr>"
        "<tr><td>1</td><td>2<br>3</td></tr><tr><td>only</td></tr></table>"
    )
    markdown = md(html)
    assert markdown == "| a\\|b | `x\\|y` |\n| --- | --- |\n| 1 | 2 3 |\n| only |  |"
    assert markdown_to_plain(markdown) == "a|b\tx|y\n1\t2 3\nonly\t"


def test_nested_list_indentation() -> None:
    html = (
        "<ul><li>a<ul><li>b<ol><li>c</li></ol></li></ul></li><li>d</li></ul>"
        "<ol start='9'><li>nine<ul><li>x</li></ul></li><li>ten<p>second paragraph</p></li></ol>"
    )
    assert md(html) == (
        "- a\n  - b\n    1. c\n- d\n\n9. nine\n   - x\n10. ten\n\n    second paragraph"
    )
    # a tight list is one block; the items of a loose list (a blank line in one) stand apart
    assert markdown_to_plain(md(html)) == "a\nb\nc\nd\n\nnine\n\nx\n\nten\n\nsecond paragraph"


def test_ordered_list_start_and_separate_lists() -> None:
    assert md("<ol start='3'><li>c</li><li>d</li></ol>") == "3. c\n4. d"
    assert md("<ol start='x'><li>a</li></ol>") == "1. a"
    assert md("<ul><li>a</li></ul><ul><li>b</li></ul>") == "- a\n- b"
    # an ordered list not starting at 1 cannot interrupt a paragraph: keep a blank line
    assert md("<ul><li>p<ol start='2'><li>b</li></ol></li></ul>") == "- p\n\n  2. b"


def test_blocks_inside_lists_and_quotes() -> None:
    html = "<ul><li>intro<pre>a\n\n  b</pre></li><li><blockquote>q</blockquote></li></ul>"
    assert md(html) == "- intro\n\n  ```\n  a\n\n    b\n  ```\n- > q"
    assert markdown_to_plain(md(html)) == "intro\n\na\n\n  b\n\nq"
    quoted = md("<blockquote><p>one</p><ul><li>two</li></ul><pre>x\n\ny</pre></blockquote>")
    assert quoted == "> one\n>\n> - two\n>\n> ```\n> x\n>\n> y\n> ```"


def test_code_blocks() -> None:
    assert md('<pre class="lang-rb">puts 1</pre>') == "```rb\nputs 1\n```"
    assert md('<pre><code class="language-python">a = "&lt;b&gt;"   \n</code></pre>') == (
        '```python\na = "<b>"\n```'
    )
    assert md("<pre>x\n```\ny</pre>") == "````\nx\n```\ny\n````"
    assert md("<pre>\n\n  indented\n\n\n</pre>") == "```\n  indented\n```"
    medium = (
        '<pre class="graf graf--pre">a<br>  b</pre>'
        '<pre class="graf graf--pre graf-after--pre"><code class="markup--code">c</code></pre>'
    )
    assert md(medium) == "```\na\n  b\nc\n```"


def test_headings_generic_and_medium() -> None:
    assert md("<h1>T</h1><h2>A</h2><h5>B</h5>") == "# T\n\n## A\n\n##### B"
    medium = (
        '<h3 class="graf graf--h3 graf--title">T</h3><h4 class="graf graf--h4 '
        'graf--subtitle">Sub</h4><h3 class="graf graf--h3">A</h3><h4 class="graf graf--h4">B</h4>'
    )
    assert md(medium) == "# T\n\nSub\n\n## A\n\n### B"


def test_title_prepended_or_moved_first() -> None:
    page = (
        "<html><head><title>My Title | Site</title></head><body><article>{}</article></body></html>"
    )
    assert html_to_markdown(page.format("<p>text</p>")) == "# My Title\n\ntext"
    moved = page.format("<p>intro</p><h2>my  title</h2><p>text</p>")
    assert html_to_markdown(moved) == "# my title\n\nintro\n\ntext"


def test_dividers_embeds_and_whitespace() -> None:
    html = (
        "<p>  a \n\t b  </p><hr><div class='section-divider'><hr></div>"
        "<iframe src='x'></iframe><video src='v'></video><p>c&nbsp;&nbsp;d</p>"
    )
    assert md(html) == "a b\n\nc d"


def test_markdown_to_plain_on_hand_written_markdown() -> None:
    markdown = (
        "Title\n=====\n\nA *b* __c__ [d](e) ![alt](x.png) `f` <span>g</span> &amp; \\*h\\*\n"
        "soft\nbreak  \nhard\n\n    indented code\n\n\n    more\n\n***\n\n<div>\nraw\n</div>"
    )
    assert markdown_to_plain(markdown) == (
        "Title\n\nA b c d  f <span>g</span> & *h*\nsoft\nbreak\nhard\n\n"
        "indented code\n\n\nmore\n\n<div>\nraw\n</div>"
    )


def test_markdown_output_is_canonical() -> None:
    for name in PAGES:
        markdown = html_to_markdown(fixture(name), keep_link_urls=True, keep_images=True)
        assert markdown == markdown.strip()
        assert "\n\n\n" not in markdown
        assert all(line == line.rstrip() for line in markdown.split("\n"))


# --- clean_page --------------------------------------------------------------------------------

RECORD_TYPES = {
    "id": str,
    "source": str,
    "url": str,
    "title": (str, type(None)),
    "author": (str, type(None)),
    "published": (str, type(None)),
    "html_sha256": str,
    "markdown": str,
    "plain": str,
    "words": int,
    "markdown_tokens": int,
    "plain_tokens": int,
    "skip_reason": (str, type(None)),
}


def clean(path: Path, url: str = "https://example.com/post", **overrides: object) -> dict:
    """clean_page's function body on one file, without a Prefect server."""
    return clean_page.fn(str(path), "ab" * 32, url, "test", CleanSettings(**overrides))


def test_clean_page_record(tmp_path: Path) -> None:
    path = tmp_path / "post.html"
    path.write_text(fixture("medium_export.html"), encoding="utf-8")
    record = clean(path, min_words=10)
    assert set(record) == set(RECORD_TYPES)
    for key, kind in RECORD_TYPES.items():
        assert isinstance(record[key], kind), key
    canonical = METADATA["medium_export.html"]["canonical_url"]
    assert record["id"] == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert record["url"] == canonical
    assert record["source"] == "test"
    assert record["html_sha256"] == "ab" * 32
    assert record["markdown"] == MEDIUM_EXPORT_MD
    assert record["plain"] == MEDIUM_EXPORT_PLAIN
    assert record["words"] == len(MEDIUM_EXPORT_PLAIN.split())
    assert 0 < record["plain_tokens"] < record["markdown_tokens"]
    assert record["skip_reason"] is None


def test_clean_page_markdown_file(tmp_path: Path) -> None:
    path = tmp_path / "local.md"
    path.write_text(fixture("local_article.md"), encoding="utf-8")
    record = clean(path, url="file:///local.md", min_words=10)
    assert record["markdown"] == LOCAL_MD
    assert record["title"] == "Plain Text, Forever"
    assert record["url"] == "https://marenholt.example/notes/plain-text-forever/"
    assert record["skip_reason"] is None


def test_clean_page_skip_reasons(tmp_path: Path) -> None:
    export = fixture("medium_export.html")
    draft = tmp_path / "draft_Small-Tools.html"
    draft.write_text(export, encoding="utf-8")
    assert clean(draft)["skip_reason"] == "draft"

    reply = tmp_path / "reply.html"
    reply.write_text(export.replace("graf--title", "graf--plain"), encoding="utf-8")
    record = clean(reply)
    assert record["title"] is None
    assert record["skip_reason"] == "no title: a reply or note, not an article"

    short = tmp_path / "short.html"
    short.write_text(export, encoding="utf-8")
    record = clean(short, min_words=150)
    assert record["skip_reason"] == f"short: {record['words']} words < 150"


def test_clean_page_without_canonical_uses_url(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(b"<html><body><article><h1>Hi</h1><p>caf\xe9 \xff text</p></article></body>")
    record = clean(path, url="https://example.com/hi", min_words=1)
    assert record["url"] == "https://example.com/hi"
    assert record["title"] == "Hi"
    assert record["plain"] == "Hi\n\ncafé ÿ text"  # no charset, not UTF-8: windows-1252
    assert record["id"] == hashlib.sha256(b"https://example.com/hi").hexdigest()[:16]


# --- metadata edge cases -----------------------------------------------------------------------


def test_metadata_fallbacks() -> None:
    html = (
        "<html><head><title>Deep Work — Ada's Notes</title>"
        '<script type="application/ld+json">{"@graph": [{"@type": "Article", '
        '"author": [{"name": "Ada Lee"}], "datePublished": "2021-05-06T07:08:09+02:00"}]}'
        "</script></head><body><header><a href='/'>Ada's Notes</a></header>"
        "<article><h1>Deep Work</h1><p>x</p></article></body></html>"
    )
    assert extract_metadata(html, url="https://ada.example/deep") == {
        "title": "Deep Work",
        "author": "Ada Lee",
        "published": "2021-05-06T05:08:09Z",
        "canonical_url": "https://ada.example/deep",
    }


def test_metadata_from_byline_and_time() -> None:
    html = (
        "<title>Post | by Ada | Medium</title><p class='byline'>By Bo Chen · 3 min read</p>"
        "<time datetime='2020-01-02'>Jan 2</time>"
    )
    assert extract_metadata(html) == {
        "title": "Post",
        "author": "Bo Chen",
        "published": "2020-01-02",
        "canonical_url": None,
    }


def test_metadata_of_empty_page() -> None:
    assert extract_metadata("") == {
        "title": None,
        "author": None,
        "published": None,
        "canonical_url": None,
    }


# --- fuzzing -----------------------------------------------------------------------------------

TAGS = [
    "p",
    "div",
    "span",
    "em",
    "strong",
    "b",
    "i",
    "code",
    "pre",
    "a",
    "ul",
    "ol",
    "li",
    "blockquote",
    "h1",
    "h2",
    "h3",
    "h4",
    "table",
    "tr",
    "td",
    "th",
    "br",
    "img",
    "figure",
    "figcaption",
    "hr",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "script",
    "q",
    "del",
    "kbd",
    "dl",
    "dt",
    "dd",
]
ATTRS = [
    "",
    ' class="graf graf--title"',
    ' class="graf graf--h3"',
    ' class="graf--pullquote"',
    ' class="share"',
    ' href="http://x.example/(a)"',
    ' src="s.png" alt="a*b"',
    ' start="3"',
    ' class="language-py"',
    ' class="graf graf--pre"',
]
TEXTS = [
    "word",
    "two words",
    "*",
    "**",
    "_",
    "`",
    "```",
    "#",
    "# x",
    "> q",
    "- a",
    "+",
    "1.",
    "2)",
    "|",
    "\\",
    "<",
    "&amp;",
    "&lt;b&gt;",
    "&#42;",
    "&copy",
    "[",
    "](x)",
    "![",
    " ",
    "\n",
    "\t",
    "---",
    "===",
    "~~~",
    "a_b",
    "&",
    "é",
    "😀",
    "\u00a0",
    "<!--",
]


@st.composite
def html_fragments(draw: st.DrawFn, depth: int = 0) -> str:
    """Random HTML-ish text: nested random tags and attributes, unclosed tags, entities."""
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        if depth > 3 or draw(st.booleans()):
            parts.append(draw(st.sampled_from(TEXTS) | st.text(max_size=8)))
        else:
            tag = draw(st.sampled_from(TAGS))
            attrs = draw(st.sampled_from(ATTRS))
            inner = draw(html_fragments(depth + 1))
            close = draw(st.sampled_from([f"</{tag}>", f"</{tag}>", ""]))
            parts.append(f"<{tag}{attrs}>{inner}{close}")
    return "".join(parts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html=html_fragments())
def test_fuzz_plain_keeps_all_body_text(html: str) -> None:
    """No character is lost or added. Order is not compared: the title heading moves first
    and stray text inside a table goes before it (as a browser shows it)."""
    body = extract_body(html)
    plain = markdown_to_plain(body_to_markdown(body))
    expected = CONTROL.sub("", body.get_text())
    assert Counter("".join(plain.split())) == Counter("".join(expected.split()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(html=html_fragments(), keep=st.booleans())
def test_fuzz_never_raises_and_blank_lines_only_part_blocks(html: str, keep: bool) -> None:
    metadata = extract_metadata(html)
    assert set(metadata) == {"title", "author", "published", "canonical_url"}
    markdown = html_to_markdown(html, keep_link_urls=keep, keep_images=keep)
    plain = markdown_to_plain(markdown)
    assert markdown == markdown.strip("\n")
    assert all(line == line.rstrip() for line in markdown.split("\n"))
    if not keep:
        assert_lines_correspond(markdown, plain)
    if "\n\n\n" in plain or plain[:1] == "\n" or plain[-1:] == "\n":
        assert "```" in markdown, (markdown, plain)  # only code holds more than a separator


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=60))
def test_fuzz_markdown_to_plain_never_raises(text: str) -> None:
    markdown_to_plain(text)


@pytest.mark.parametrize("tag", ["div", "span", "ul><li", "blockquote"])
def test_a_page_nested_ten_thousand_deep_is_cleaned_not_a_recursion_error(tmp_path, tag) -> None:
    """Issue 15: a hostile page's 10,000 nested elements raised a raw RecursionError."""
    close = "</" + "></".join(reversed(tag.split("><"))) + ">"
    deep = f"<{tag}>" * 10_000 + "The deep words are kept." + close * 10_000
    page = tmp_path / "deep.html"
    page.write_text(f"<html><head><title>Deep</title></head><body><article><h1>Deep</h1>"
                    f"<p>A first paragraph.</p>{deep}</article></body></html>")  # fmt: skip
    record = clean_page.fn(
        str(page), "sha", "https://example.com/deep", "test", CleanSettings(min_words=0)
    )
    assert record["title"] == "Deep"
    assert "The deep words are kept." in record["plain"]
    assert record["plain"].startswith("Deep\n\nA first paragraph.")


def test_lists_nested_past_what_markdown_reads_keep_every_word() -> None:
    """markdown-it reads 20 levels of blocks: 30 nested lists lost their inner items' text."""
    items = "".join(f"<ul><li>level {i}" for i in range(30)) + "</li></ul>" * 30
    markdown = html_to_markdown(f"<html><body><article><h1>T</h1>{items}</article></body></html>")
    plain = markdown_to_plain(markdown)
    assert [f"level {i}" in plain for i in range(30)] == [True] * 30
    assert markdown.startswith("# T\n\n- level 0\n  - level 1\n")
