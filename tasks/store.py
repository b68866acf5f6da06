"""Parquet storage of articles and examples, with explicit schemas and atomic writes.

``DATA/parquet/articles.parquet`` holds one row per article, keyed by ``id`` (a hash of the
canonical URL); ``DATA/parquet/examples.parquet`` one row per (article, chunk). Both are plain
Parquet files that pandas (``pd.read_parquet``) and duckdb (``SELECT * FROM 'x.parquet'``)
read as they are.

Merging is by id: a new article is added, a changed one (other HTML or other Markdown)
replaces its old row, an unchanged one keeps its row, and an article that has disappeared
from its source is kept (nothing stored is ever lost). When nothing changed, the file is not
rewritten at all. The same text under another id (a feed and an export of one blog, a
renamed file) is one article: its row lists the other URLs in ``copies``, and the export
reads one row per text (:func:`distinct_articles`), so no text is in two splits.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> row = {"id": "a1", "source": "s", "url": "u", "title": "T", "html_sha256": "h",
...        "markdown": "# T", "plain": "T"}
>>> store_articles.fn([row], d)["added"]
['a1']
>>> store_articles.fn([row], d)["unchanged"]
1
>>> [a["title"] for a in read_articles(d)]
['T']
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from typing_extensions import TypedDict

from core.articles import Article, Example, Staged, Stored
from core.errors import BadInput, MissingInput
from core.io import atomic_path

ARTICLES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("url", pa.string()),
        pa.field("title", pa.string()),
        pa.field("author", pa.string()),
        pa.field("published", pa.timestamp("us", tz="UTC")),
        pa.field("html_sha256", pa.string()),
        pa.field("markdown", pa.large_string()),
        pa.field("plain", pa.large_string()),
        pa.field("words", pa.int32()),
        pa.field("markdown_tokens", pa.int32()),
        pa.field("plain_tokens", pa.int32()),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC")),
        pa.field("copies", pa.list_(pa.string())),  # other URLs the same text was found at
    ]
)

NEEDED_COLUMNS = ("id", "markdown")  # what an export reads of an article
MIN_ARTICLES = 2  # one to train on and one held out to test (splits are by article)

EXAMPLES_SCHEMA = pa.schema(
    [
        pa.field("article_id", pa.string(), nullable=False),
        pa.field("chunk", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("plain", pa.large_string()),
        pa.field("markdown", pa.large_string()),
        pa.field("plain_tokens", pa.int32()),
        pa.field("markdown_tokens", pa.int32()),
    ]
)

RUNS_SCHEMA = pa.schema(  # one row per evaluated run: what champion/challenger decided, and why
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("data_sha256", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("champion_id", pa.string()),
        pa.field("examples", pa.int32()),
        pa.field("cer", pa.float64()),
        pa.field("cer_low", pa.float64()),
        pa.field("cer_high", pa.float64()),
        pa.field("chrf", pa.float64()),
        pa.field("structure_f1", pa.float64()),
        pa.field("text_cer", pa.float64()),
        pa.field("champion_cer", pa.float64()),
        pa.field("promoted", pa.bool_()),
        pa.field("reason", pa.string()),
        pa.field("report", pa.string()),
    ]
)


class RunRow(TypedDict):
    """One evaluated champion/challenger run: a row of runs.parquet (``RUNS_SCHEMA``)."""

    run_id: str
    created_at: str | datetime  # ISO-8601 when recorded; a datetime once read back
    data_sha256: str
    model_id: str
    champion_id: str | None
    examples: int
    cer: float | None
    cer_low: float | None
    cer_high: float | None
    chrf: float | None
    structure_f1: float | None
    text_cer: float | None
    champion_cer: float | None
    promoted: bool
    reason: str
    report: str  # the report's folder


Row = Article | Example | RunRow  # what the tables hold, one schema each


def parquet_path(data_dir: str | Path, name: str) -> Path:
    """``DATA/parquet/<name>.parquet``."""
    return Path(data_dir) / "parquet" / f"{name}.parquet"


def _timestamp(value: Any) -> datetime | None:
    """An aware UTC datetime from a datetime or an ISO-8601 string; None if absent or bad."""
    if value is None or isinstance(value, datetime):
        return value.astimezone(UTC) if value and value.tzinfo else value
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=parsed.tzinfo or UTC).astimezone(UTC)


def _conform(row: Row, schema: pa.Schema) -> dict[str, Any]:
    """Keep the schema's columns only, timestamps parsed."""
    out = {name: row.get(name) for name in schema.names}
    for field in schema:
        if pa.types.is_timestamp(field.type):
            out[field.name] = _timestamp(out[field.name])
    return out


def write_rows(rows: Sequence[Row], schema: pa.Schema, path: Path) -> None:
    """Write rows as a Parquet file with ``schema``, atomically."""
    with atomic_path(path) as tmp:
        write_table([_conform(r, schema) for r in rows], schema, tmp)


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    """Write conformed rows as a Parquet file with ``schema``, in place (a temp file)."""
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def read_rows(path: Path) -> list[Any]:
    """All rows of a Parquet file as dicts ([] when the file does not exist)."""
    return pq.read_table(path).to_pylist() if path.exists() else []


def require_articles(data_dir: str | Path) -> None:
    """Raise :class:`MissingInput` unless articles are stored (read from the file's footer),
    :class:`BadInput` if the data dir is a file or the articles file is not an articles table."""
    if Path(data_dir).is_file():
        raise BadInput(f"--data-dir {data_dir} is a file: give a folder (made if missing)")
    path = parquet_path(data_dir, "articles")
    rebuild = "move it away and run `pgpt ingest SOURCE` again (fetched pages are kept in raw/)"
    try:
        footer = pq.ParquetFile(path) if path.exists() else None  # one read of the footer
        names = footer.schema_arrow.names if footer else list(NEEDED_COLUMNS)
        rows = footer.metadata.num_rows if footer else 0
    except (pa.ArrowException, OSError) as error:
        raise BadInput(f"{path} is not a Parquet file ({error}): {rebuild}") from error
    missing = [name for name in NEEDED_COLUMNS if name not in names]
    if missing:
        raise BadInput(f"{path} is not an articles table (no {missing[0]!r} column): {rebuild}")
    if not rows:
        raise MissingInput(f"no articles in {path}: run `pgpt ingest SOURCE` first")
    if rows < MIN_ARTICLES:
        raise MissingInput(
            f"{rows} article in {path}: a fine-tune needs at least {MIN_ARTICLES} (one is "
            "held out to test it, the rest trains): `pgpt ingest` more of your articles"
        )


def read_articles(data_dir: str | Path) -> list[Article]:
    """Every stored article, in id order."""
    return read_rows(parquet_path(data_dir, "articles"))


def read_examples(data_dir: str | Path) -> list[Example]:
    """Every stored example, in (article_id, chunk) order."""
    return read_rows(parquet_path(data_dir, "examples"))


def read_runs(data_dir: str | Path) -> list[RunRow]:
    """Every recorded run, oldest first."""
    return read_rows(parquet_path(data_dir, "runs"))


@task
def record_run(run: RunRow, data_dir: str) -> str:
    """Append a run to runs.parquet (rewritten atomically; earlier rows are kept as they are)."""
    path = parquet_path(data_dir, "runs")
    rows: list[RunRow] = [r for r in read_rows(path) if r["run_id"] != run["run_id"]]
    write_rows([*rows, run], RUNS_SCHEMA, path)
    return str(path)


QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "—": "-", "–": "-"})


def content_key(plain: str) -> str:
    """An article's text as a key: case, whitespace, typographic quotes and dashes do not
    count, so the same article from two sources has one key.

    >>> content_key("It’s  SMALL — tools.") == content_key("it's small - tools.")
    True
    >>> content_key("Small tools.") == content_key("Big tools.")
    False
    """
    text = " ".join(unicodedata.normalize("NFKC", plain).casefold().translate(QUOTES).split())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def distinct_articles(articles: list[Article]) -> tuple[list[Article], list[str]]:
    """One article per text, the first by id, and the ids of the copies left out.

    >>> rows = [{"id": "b", "plain": "Tools."}, {"id": "a", "plain": "tools."}, {"id": "c",
    ...         "plain": "Saws."}]
    >>> [a["id"] for a in distinct_articles(rows)[0]], distinct_articles(rows)[1]
    (['a', 'c'], ['b'])
    """
    seen: set[str] = set()
    kept, copies = [], []
    for article in sorted(articles, key=lambda a: a["id"]):
        key = content_key(article.get("plain") or "")
        if key in seen:
            copies.append(article["id"])
        else:
            kept.append(article)
            seen.add(key)
    return kept, copies


def _same(old: Article, new: Article) -> bool:
    return old["html_sha256"] == new["html_sha256"] and old["markdown"] == new["markdown"]


@task
def store_articles(articles: list[Article], data_dir: str) -> Stored:
    """Merge cleaned articles into articles.parquet by id (the same text under a new id is
    merged into its article's ``copies``); rewrite only if something changed."""
    path = parquet_path(data_dir, "articles")
    stored: dict[str, Article] = {row["id"]: row for row in read_rows(path)}
    owner = {content_key(r.get("plain") or ""): i for i, r in sorted(stored.items(), reverse=True)}
    now = datetime.now(UTC)
    added, updated, merged, unchanged = [], [], [], 0
    for article in articles:
        first = owner.setdefault(content_key(article.get("plain") or ""), article["id"])
        old = stored.get(article["id"])
        if first != article["id"] and old is None:  # a copy: one more URL for its article
            row = stored[first]
            copies = sorted({*(row.get("copies") or []), article["url"]} - {row["url"]})
            if copies == (row.get("copies") or []):
                unchanged += 1
            else:
                stored[first] = {**row, "copies": copies}
                merged.append(article["id"])
            continue
        if old is not None and _same(old, article):
            unchanged += 1
            continue
        (updated if old is not None else added).append(article["id"])
        stored[article["id"]] = {**article, "fetched_at": article.get("fetched_at") or now}
    if added or updated or merged or not path.exists():
        write_rows([stored[k] for k in sorted(stored)], ARTICLES_SCHEMA, path)
    return {
        "path": str(path),
        "added": added,
        "updated": updated,
        "merged": merged,
        "unchanged": unchanged,
        "total": len(stored),
    }


def stage_examples(examples: list[Example], data_dir: str, stack: ExitStack) -> Staged:
    """Stage examples.parquet as ``examples`` (sorted) in ``stack``: it replaces the file when
    the stack closes without an error, with whatever else the stack holds (the export's
    JSONL), or not at all; untouched if they are the same.

    >>> import tempfile
    >>> d, row = tempfile.mkdtemp(), {"article_id": "a", "chunk": 0, "split": "train"}
    >>> with ExitStack() as stack:
    ...     stage_examples([row], d, stack)["changed"]
    True
    >>> [r["article_id"] for r in read_examples(d)]
    ['a']
    """
    path = parquet_path(data_dir, "examples")
    rows = sorted(
        (_conform(e, EXAMPLES_SCHEMA) for e in examples),
        key=lambda e: (e["article_id"], e["chunk"]),
    )
    changed = read_rows(path) != rows
    if changed:
        write_table(rows, EXAMPLES_SCHEMA, stack.enter_context(atomic_path(path)))
    return {"path": str(path), "rows": len(rows), "changed": changed}
