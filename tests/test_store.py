"""Parquet storage: schemas, round trips, merge rules and atomicity."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tasks.store import (
    ARTICLES_SCHEMA,
    EXAMPLES_SCHEMA,
    parquet_path,
    read_articles,
    read_examples,
    stage_examples,
    store_articles,
)


def stage(examples: list[dict], data_dir: str) -> dict:
    """stage_examples in a stack of its own: the file lands when it closes."""
    with ExitStack() as stack:
        return stage_examples(examples, data_dir, stack)


def article(i: int, **changes) -> dict:
    row = {
        "id": f"id{i}",
        "source": "src",
        "url": f"https://x.test/{i}",
        "title": f"Title {i}",
        "author": "Ann",
        "published": "2023-03-14T09:12:31.204Z",
        "html_sha256": f"h{i}",
        "markdown": f"# Title {i}\n\nBody *{i}*.",
        "plain": f"Title {i}\nBody {i}.",
        "words": 4,
        "markdown_tokens": 9,
        "plain_tokens": 7,
        "skip_reason": None,
    }
    return row | changes


def test_round_trip_with_schema_and_readers(tmp_path):
    result = store_articles.fn([article(2), article(1)], str(tmp_path))
    path = parquet_path(tmp_path, "articles")
    assert result == {
        "path": str(path),
        "added": ["id2", "id1"],
        "updated": [],
        "merged": [],
        "unchanged": 0,
        "total": 2,
    }
    assert pq.read_schema(path).equals(ARTICLES_SCHEMA)
    rows = read_articles(tmp_path)
    assert [r["id"] for r in rows] == ["id1", "id2"]
    assert rows[0]["published"] == datetime(2023, 3, 14, 9, 12, 31, 204000, tzinfo=UTC)
    assert rows[0]["markdown"] == "# Title 1\n\nBody *1*."
    assert rows[0]["fetched_at"] is not None and "skip_reason" not in rows[0]
    assert pd.read_parquet(path)["title"].tolist() == ["Title 1", "Title 2"]
    assert duckdb.sql(f"SELECT count(*) FROM '{path}'").fetchall() == [(2,)]


def test_unchanged_articles_do_not_rewrite_the_file(tmp_path):
    store_articles.fn([article(1), article(2)], str(tmp_path))
    path = parquet_path(tmp_path, "articles")
    before = path.stat()
    result = store_articles.fn([article(1), article(2)], str(tmp_path))
    assert (result["added"], result["updated"], result["unchanged"]) == ([], [], 2)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_the_same_text_from_another_url_is_one_article_with_its_copies(tmp_path):
    """Issue 15: a feed and an export of one blog (or a renamed file) gave two rows, and the
    two could land in train and in test."""
    store_articles.fn([article(1), article(2)], str(tmp_path))
    feed_copy = article(9, url="https://feed.test/1", plain="TITLE 1\n  body 1.", html_sha256="f")
    result = store_articles.fn([feed_copy], str(tmp_path))
    assert (result["added"], result["merged"], result["total"]) == ([], ["id9"], 2)
    rows = {r["id"]: r for r in read_articles(tmp_path)}
    assert rows["id1"]["copies"] == ["https://feed.test/1"] and rows["id2"]["copies"] is None
    again = store_articles.fn([feed_copy, article(1)], str(tmp_path))
    assert (again["merged"], again["unchanged"]) == ([], 2)


def test_copies_stored_before_the_merge_never_reach_two_splits(tmp_path):
    """Rows written by an older version (one text under two ids) are read once by the export."""
    from tasks.store import distinct_articles, write_rows

    rows = [article(1), article(2), article(3, plain="Title 1\nBody 1.")]
    write_rows(rows, ARTICLES_SCHEMA, parquet_path(tmp_path, "articles"))
    kept, copies = distinct_articles(read_articles(tmp_path))
    assert [a["id"] for a in kept] == ["id1", "id2"] and copies == ["id3"]


def test_changed_article_replaces_its_row_and_missing_ones_are_kept(tmp_path):
    store_articles.fn([article(1), article(2)], str(tmp_path))
    changed = article(1, html_sha256="new", markdown="# Title 1\n\nNew body.")
    result = store_articles.fn([changed], str(tmp_path))
    assert (result["added"], result["updated"], result["total"]) == ([], ["id1"], 2)
    rows = {r["id"]: r for r in read_articles(tmp_path)}
    assert rows["id1"]["markdown"] == "# Title 1\n\nNew body."
    assert rows["id2"]["markdown"] == "# Title 2\n\nBody *2*."


def test_failed_write_leaves_stored_data_intact(tmp_path):
    store_articles.fn([article(1)], str(tmp_path))
    path = parquet_path(tmp_path, "articles")
    before = path.read_bytes()
    with pytest.raises(Exception, match="int"):
        store_articles.fn([article(2, words="not a number")], str(tmp_path))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["articles.parquet"]  # no temp left


def test_a_write_that_dies_halfway_leaves_the_old_file_byte_identical(tmp_path, monkeypatch):
    """The disk fills after half the bytes: an in-place write would leave junk behind."""
    import tasks.store

    store_articles.fn([article(1)], str(tmp_path))
    path = parquet_path(tmp_path, "articles")
    before = path.read_bytes()

    def dies_halfway(table, where, **options):
        with open(where, "wb") as out:
            out.write(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tasks.store.pq, "write_table", dies_halfway)
    with pytest.raises(OSError, match="No space left"):
        store_articles.fn([article(2)], str(tmp_path))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["articles.parquet"]


def test_examples_are_sorted_and_rewritten_only_on_change(tmp_path):
    rows = [
        {
            "article_id": "b",
            "chunk": 0,
            "split": "test",
            "plain": "p",
            "markdown": "m",
            "plain_tokens": 1,
            "markdown_tokens": 1,
        },
        {
            "article_id": "a",
            "chunk": 1,
            "split": "train",
            "plain": "p1",
            "markdown": "*m1*",
            "plain_tokens": 1,
            "markdown_tokens": 3,
        },
        {
            "article_id": "a",
            "chunk": 0,
            "split": "train",
            "plain": "p0",
            "markdown": "m0",
            "plain_tokens": 1,
            "markdown_tokens": 1,
        },
    ]
    path = str(parquet_path(tmp_path, "examples"))
    assert stage(rows, str(tmp_path)) == {"path": path, "rows": 3, "changed": True}
    stored = read_examples(tmp_path)
    assert [(r["article_id"], r["chunk"]) for r in stored] == [("a", 0), ("a", 1), ("b", 0)]
    assert pq.read_schema(parquet_path(tmp_path, "examples")).equals(EXAMPLES_SCHEMA)
    assert stage(list(reversed(rows)), str(tmp_path)) == {"path": path, "rows": 3, "changed": False}


def test_staged_examples_land_only_when_the_whole_stack_succeeds(tmp_path):
    """The export stages examples.parquet with its JSONL: until the stack closes the old file
    is untouched, and if anything else in the stack fails it stays byte-identical."""
    old = [{"article_id": "a", "chunk": 0, "split": "train", "plain": "p", "markdown": "m"}]
    new = [{**old[0], "markdown": "*m*"}]
    stage(old, str(tmp_path))
    path = parquet_path(tmp_path, "examples")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="JSONL"), ExitStack() as stack:
        assert stage_examples(new, str(tmp_path), stack)["changed"] is True
        assert path.read_bytes() == before  # staged, not written
        raise RuntimeError("the JSONL could not be written")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["examples.parquet"]
    with ExitStack() as stack:
        stage_examples(new, str(tmp_path), stack)
        assert path.read_bytes() == before
    assert [r["markdown"] for r in read_examples(tmp_path)] == ["*m*"]
