"""Ingest flow: sources -> raw pages -> cleaned articles -> parquet/articles.parquet.

Only what is new or changed does work: article pages are fetched through a task cache that
expires after ``scrape.refetch_after_hours`` (then a conditional GET), cleaning is cached on
the page's content hash, and the Parquet file is rewritten only when an article changed.
A source or page that fails is logged and listed in the summary; the rest goes on.

Fetches run on the flow's own thread pool (they wait on the network, and the per-host
politeness delay is kept in this process); cleaning fans out on the task runner that
``runner.task_runner`` chooses (threads, or a Dask cluster: ``flows/runner.py``).

    python flows/ingest.py data/sample/posts
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from prefect import flow, get_run_logger, unmapped
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.futures import PrefectFuture

from config.settings import Settings, load_settings
from core.articles import Article, Failure, IngestSummary
from flows.runner import fan_out, in_data_dir
from tasks.clean import clean_page
from tasks.scrape import PageRef, RawPage, checked_sources, discover_pages, fetch_url
from tasks.store import store_articles

SAMPLE_SOURCE = str(Path(__file__).resolve().parents[1] / "data" / "sample" / "posts")
T = TypeVar("T")


def settle(futures: list[PrefectFuture[T]], labels: list[str]) -> tuple[list[T], list[Failure]]:
    """Results of the futures that completed, and a Failure for each of those that failed."""
    results: list[T] = []
    failures: list[Failure] = []
    for future, label in zip(futures, labels, strict=True):
        value = future.result(raise_on_failure=False)
        if future.state.is_completed():
            results.append(value)
        else:
            failures.append({"item": label, "error": f"{type(value).__name__}: {value}"})
    return results, failures


def discover(sources: list[str], settings: Settings) -> tuple[list[PageRef], list[Failure]]:
    """Page refs from every source; a source that fails is reported, not raised."""
    pages: list[PageRef] = []
    failures: list[Failure] = []
    for source in sources:
        try:
            pages += discover_pages(source, settings.scrape, str(settings.data_dir))
        except Exception as exc:  # one bad source never sinks the run
            failures.append({"item": source, "error": f"{type(exc).__name__}: {exc}"})
    return pages, failures


def fetch(
    pages: list[PageRef], settings: Settings
) -> tuple[list[PageRef | RawPage], list[Failure]]:
    """Download the pages that are not on disk yet (cached for ``refetch_after_hours``)."""
    fetch_cached = in_data_dir(
        fetch_url,
        settings.data_dir,
        cache_policy=INPUTS + TASK_SOURCE,
        cache_expiration=timedelta(hours=settings.scrape.refetch_after_hours),
    )
    remote = [p for p in pages if p["kind"] == "http"]
    futures = [
        fetch_cached.submit(p["url"], p["source"], settings.scrape, str(settings.data_dir))
        for p in remote
    ]
    fetched, failures = settle(futures, [p["url"] for p in remote])
    return [p for p in pages if p["kind"] == "file"] + fetched, failures


def clean(raws: list[PageRef | RawPage], settings: Settings) -> tuple[list[Article], list[Failure]]:
    """Clean every raw page (cached on its content hash), fanned out on the task runner."""
    if not raws:
        return [], []
    with fan_out(settings.runner) as runner:
        futures = runner.map(
            in_data_dir(clean_page, settings.data_dir),
            {
                "path": [r["path"] for r in raws],
                "sha256": [r["sha256"] for r in raws],
                "url": [r["url"] for r in raws],
                "source": [r["source"] for r in raws],
                "clean": unmapped(settings.clean),
                "content_type": [r.get("content_type") or "" for r in raws],  # its charset
            },
        )
        return settle(list(futures), [r["url"] for r in raws])


@flow(name="ingest")
def ingest(
    sources: list[str] | None = None, profile: str = "default", data_dir: str | None = None
) -> IngestSummary:
    """Scrape and clean the sources (default: the bundled sample) into articles.parquet.

    Args:
        sources: Article URLs, RSS/Atom feeds, Medium exports or folders (none: the sample).
        profile: A settings profile: a name in config/profiles/ or the path of a YAML file.
        data_dir: Where everything goes (none: PGPT_DATA_DIR, else ./data).
    """
    settings = load_settings(profile, data_dir)
    sources = checked_sources(sources or [SAMPLE_SOURCE])
    pages, failures = discover(sources, settings)
    if not pages and failures:
        raise RuntimeError(f"every source failed: {failures}")
    raws, fetch_failures = fetch(pages, settings)
    records, clean_failures = clean(raws, settings)
    fetched_at = {r["sha256"]: r.get("fetched_at") for r in raws}
    articles: list[Article] = [
        {**a, "fetched_at": fetched_at.get(a["html_sha256"])}
        for a in records
        if not a["skip_reason"]
    ]
    stored = store_articles(articles, str(settings.data_dir))
    summary: IngestSummary = {
        "sources": len(sources),
        "pages": len(pages),
        **stored,
        "skipped": [
            {"url": a["url"], "reason": a["skip_reason"]} for a in records if a["skip_reason"]
        ],
        "failures": failures + fetch_failures + clean_failures,
    }
    logger = get_run_logger()
    logger.info(
        "ingested %d pages: %d added, %d updated, %d merged (the text of one stored), "
        "%d unchanged, %d skipped, %d failed",
        len(pages),
        len(stored["added"]),
        len(stored["updated"]),
        len(stored["merged"]),
        stored["unchanged"],
        len(summary["skipped"]),
        len(summary["failures"]),
    )
    for failure in summary["failures"]:
        logger.error("failed: %s: %s", failure["item"], failure["error"])
    return summary


if __name__ == "__main__":
    from config.runtime import results_in

    with results_in(load_settings().data_dir):
        ingest(sys.argv[1:] or None)
