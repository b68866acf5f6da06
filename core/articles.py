"""The records an ingest and an export pass along: an article, its examples, what was stored.

They are ``TypedDict``s: plain dicts at run time (Parquet rows, JSON, Prefect results and
cache keys stay what they were), named in the signatures that carry them. From
``typing_extensions``: on Python < 3.12 pydantic (which Prefect validates flow parameters
with) accepts only those, so a flow parameter can be one (``flows/export.py``).

    clean_record -> Article (skip_reason) -> ingest adds fetched_at -> store_articles
    (copies) -> articles.parquet -> read_articles -> Article -> build_examples -> Example
"""

from __future__ import annotations

from datetime import datetime
from typing import NotRequired

from typing_extensions import TypedDict


class Article(TypedDict):
    """One article: a row of ``articles.parquet`` (``tasks.store.ARTICLES_SCHEMA``)."""

    id: str  # sha256 of the canonical URL, 16 hex digits
    source: str
    url: str  # the canonical URL
    title: str | None
    author: str | None
    published: str | datetime | None  # ISO-8601 when cleaned; a datetime once stored
    html_sha256: str
    markdown: str
    plain: str
    words: int
    markdown_tokens: int
    plain_tokens: int
    skip_reason: NotRequired[str | None]  # cleaned, not stored: why it is not an article
    fetched_at: NotRequired[str | datetime | None]
    copies: NotRequired[list[str] | None]  # stored: other URLs the same text was found at


class Example(TypedDict):
    """One training example: a chunk of an article, a row of ``examples.parquet``."""

    article_id: str
    chunk: int  # the chunk's index in its article
    split: str  # "train", "valid" or "test"
    plain: str
    markdown: str
    plain_tokens: int
    markdown_tokens: int


class Stored(TypedDict):
    """What ``store_articles`` did to ``articles.parquet`` (ids of the articles)."""

    path: str
    added: list[str]
    updated: list[str]
    merged: list[str]  # copies of a stored article's text: one more URL in its ``copies``
    unchanged: int
    total: int


class Staged(TypedDict):
    """What ``stage_examples`` staged for ``examples.parquet``."""

    path: str
    rows: int
    changed: bool


class Failure(TypedDict):
    """A source, page or URL that failed, and why (``"ExceptionType: message"``)."""

    item: str
    error: str


class Skipped(TypedDict):
    """A page that was cleaned but is not an article (a draft, a reply, too short)."""

    url: str
    reason: str


class IngestSummary(Stored):
    """The ingest flow's result: the ``Stored`` counts, plus what came in and what did not."""

    sources: int
    pages: int
    skipped: list[Skipped]
    failures: list[Failure]
