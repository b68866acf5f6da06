"""What scraping hands on: page refs (a page found) and raw pages (a page on disk, fetched).

Plain dicts at run time (Prefect results and cache keys), named in signatures
(``typing_extensions.TypedDict``: see ``core/articles.py``).

A ref of kind "http" still has to be fetched (``fetch_url``); kind "file" already has its HTML
or Markdown on disk at ``path`` (``sha256`` of its bytes). A local file's ``url`` is its
resolved ``file://`` URI; a feed entry's ``url`` is the entry's link. ``fetch_url`` returns a
raw page: a ref of kind "file" with what the fetch learnt.
"""

from __future__ import annotations

from typing import Literal

from typing_extensions import TypedDict


class PageRef(TypedDict):
    """A page a source lists: on disk ("file") or still to fetch ("http")."""

    source: str  # the SOURCE it was found in
    url: str
    path: str | None  # where its bytes are (None until fetched)
    sha256: str | None  # of those bytes
    kind: Literal["http", "file"]


class RawPage(PageRef):
    """A page fetched over HTTP, on disk at ``path``."""

    final_url: str  # after redirects
    content_type: str  # the full Content-Type header, charset included
    fetched_at: str  # ISO-8601 UTC
    status: int  # 200, or 304 (not modified: the stored copy)
