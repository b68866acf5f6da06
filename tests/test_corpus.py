"""The cleaner on real published articles: every file of ../shared/corpora/*/posts/*.html.

Each file is cleaned once (module fixture); the tests then check properties over all files
and report every failing file at once. Run with ``-s`` to see the article/skip summary.
"""

from __future__ import annotations

import collections
import re
import time
from pathlib import Path

import pytest
from bs4 import BeautifulSoup, Tag

from config.settings import CleanSettings
from core.chunks import chunk_markdown, split_blocks
from core.markdown import MD, markdown_to_plain
from core.tokens import count_tokens
from tasks.clean import clean_record, extract_body
from tasks.clean.html import BLOCKS

try:
    from tests.test_clean import CONTAINER_PREFIX, assert_lines_correspond
except ImportError:  # tests/ is not a package: pytest puts it on sys.path instead
    from test_clean import CONTAINER_PREFIX, assert_lines_correspond

CORPORA = Path(__file__).parents[1].parent / "shared" / "corpora"
SYNTAX_START = re.compile(r"(#{1,6} |> |- |\* |\+ |```|~~~)")
SKIP_MESSAGE = (
    "../shared/corpora not found: real-article tests need the shared corpus beside the project"
)
EXPORT_CHROME = ["Exported from Medium", "Canonical link", "medium.com/p/"]


def corpus_files() -> list[Path]:
    """All corpus pages, or a skip when the shared corpus is not beside the project."""
    if not CORPORA.is_dir():
        pytest.skip(SKIP_MESSAGE)
    return sorted(CORPORA.glob("*/posts/*.html"))


@pytest.fixture(scope="module")
def cleaned() -> dict[Path, dict]:
    """Every corpus file cleaned once with the default settings, timed."""
    files = corpus_files()
    options = CleanSettings()
    start = time.perf_counter()
    records = {
        path: clean_record(
            str(path), "0" * 64, f"file://{path.name}", path.parent.parent.name, options
        )
        for path in files
    }
    elapsed = time.perf_counter() - start
    reasons = collections.Counter(
        (r["skip_reason"] or "article").split(":")[0] for r in records.values()
    )
    print(f"\ncorpus: {len(files)} files cleaned in {elapsed:.1f} s: {dict(reasons)}")
    return records


def expected_text(path: Path) -> str:
    """The article's visible text, from the raw page independently of extract_body: a Medium
    export's body section minus link cards, embeds (captions kept), scripts and images."""
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "lxml")
    body = soup.find("section", attrs={"data-field": "body"})
    if body is None:  # not a Medium export: trust the extractor for what the body is
        body = extract_body(str(soup))
    for tag in body.select(".graf--mixtapeEmbed, script, style, iframe, noscript, label, img"):
        tag.decompose()
    for figure in body.select("figure.graf--iframe"):
        for child in list(figure.children):
            if getattr(child, "name", None) != "figcaption":
                child.extract()
    return visible_words(body)


def visible_words(root: Tag) -> str:
    """Text with a space at every block boundary and ``<br>`` (none between inline elements)."""
    parts: list[str] = []
    for node in root.descendants:
        if isinstance(node, Tag):
            if node.name in BLOCKS or node.name == "br":
                parts.append(" ")
        elif type(node).__name__ == "NavigableString":
            parts.append(str(node))
    return "".join(parts)


def failures(messages: list[str]) -> str:
    """A readable assertion message."""
    return f"{len(messages)} failing:\n" + "\n".join(messages[:20])


def test_every_file_is_cleaned(cleaned: dict[Path, dict]) -> None:
    bad = []
    for path, record in cleaned.items():
        if not record["markdown"] or not record["plain"]:
            bad.append(f"{path.name}: empty markdown or plain")
        if record["plain"] != markdown_to_plain(record["markdown"]):
            bad.append(f"{path.name}: plain is not markdown_to_plain(markdown)")
    assert not bad, failures(bad)


def test_skip_reasons(cleaned: dict[Path, dict]) -> None:
    reasons = collections.Counter(
        (r["skip_reason"] or "article").split(":")[0] for r in cleaned.values()
    )
    assert sum(reasons.values()) == len(cleaned)
    assert set(reasons) <= {"article", "draft", "no title", "short"}
    for path, record in cleaned.items():
        if path.name.startswith("draft_"):
            assert record["skip_reason"] == "draft"
        if record["skip_reason"] is None:
            assert record["title"] and record["markdown"].startswith("# ")
            assert record["words"] >= CleanSettings().min_words
    if CORPORA.joinpath("medium-enkiv2").is_dir():  # the README's figures for this export
        export = {p: r for p, r in cleaned.items() if p.parent.parent.name == "medium-enkiv2"}
        untitled = sum(1 for r in export.values() if r["title"] is None)
        assert untitled == 371


def test_plain_text_is_the_visible_text(cleaned: dict[Path, dict]) -> None:
    """Nothing lost, nothing added: the plain's words are the body's visible words."""
    bad = []
    for path, record in cleaned.items():
        expected = expected_text(path).split()
        got = record["plain"].split()
        if got != expected:
            pairs = enumerate(zip(expected, got, strict=False))
            at = next((i for i, (a, b) in pairs if a != b), None)
            at = at if at is not None else min(len(expected), len(got))
            bad.append(f"{path.name}: word {at}: {expected[at : at + 5]} != {got[at : at + 5]}")
    assert not bad, failures(bad)


def test_lines_correspond(cleaned: dict[Path, dict]) -> None:
    for record in cleaned.values():
        assert_lines_correspond(record["markdown"], record["plain"])


def test_plain_has_no_markdown_syntax(cleaned: dict[Path, dict]) -> None:
    """No markup is left in the plain text. Literal text the author typed is excluded:
    code-block lines (verbatim by design, e.g. a shell ``# comment``), and lines that start
    with syntax characters only because the Markdown escapes them (``\\> quoted reply``,
    ``\\- attribution``) or wraps them in inline markup (`` `# comment` ``, ``*- Name,*``);
    so a line fails when its Markdown starts with the same syntax the plain line does."""
    bad = []
    for path, record in cleaned.items():
        for md_line, is_code, line in assert_lines_correspond(record["markdown"], record["plain"]):
            if is_code:
                continue
            content = CONTAINER_PREFIX.sub("", md_line, count=1)
            start = SYNTAX_START.match(line)
            if start and content.startswith(start.group(1)):  # markup the parser left as text
                bad.append(f"{path.name}: {line[:60]!r} from {md_line[:60]!r}")
            if "**" in line and "\\*\\*" not in md_line:
                bad.append(f"{path.name}: ** in {line[:60]!r}")
            if "](" in line and "\\](" not in md_line:
                bad.append(f"{path.name}: ]( in {line[:60]!r}")
    assert not bad, failures(bad)


def test_no_export_chrome(cleaned: dict[Path, dict]) -> None:
    bad = [
        f"{path.name}: {word!r}"
        for path, record in cleaned.items()
        for word in EXPORT_CHROME
        if word in record["markdown"]
    ]
    assert not bad, failures(bad)


def test_markdown_is_canonical(cleaned: dict[Path, dict]) -> None:
    for record in cleaned.values():
        markdown = record["markdown"]
        assert markdown == markdown.strip()
        assert all(line == line.rstrip() for line in markdown.split("\n"))


def test_chunks_keep_every_word_and_fit_unless_they_cannot_be_cut(
    cleaned: dict[Path, dict],
) -> None:
    """Chunking every article at 384 tokens (the bench profile) loses and adds no word, and a
    chunk over the budget is one block that has nothing left to cut at: one item, one line."""
    budget, bad, over = 384, [], 0
    for path, record in cleaned.items():
        if record["skip_reason"]:
            continue
        chunks = chunk_markdown(record["markdown"], budget)
        words = " ".join(markdown_to_plain(chunk) for chunk in chunks).split()
        if words != record["plain"].split():
            bad.append(f"{path.name}: the chunks' words differ from the article's")
        for chunk in chunks:
            if count_tokens(chunk) <= budget:
                continue
            over += 1
            tokens = MD.parse(chunk)
            items = sum(t.type == "list_item_open" and t.level == 1 for t in tokens)
            content_lines = [line for line in chunk.split("\n") if line.strip("> ")]
            one_unit = len(split_blocks(chunk)) == 1 and (
                items == 1  # one list item
                or tokens[0].type in ("paragraph_open", "heading_open")  # no cut allowed
                or len(content_lines) <= 3  # one line of a quote or (fenced) code
            )
            if not one_unit:
                bad.append(f"{path.name}: {count_tokens(chunk)} tokens: {chunk[:60]!r}")
    assert not bad, failures(bad)
    assert over <= 10, f"{over} chunks over {budget} tokens"
