"""Ingest flow: sources -> raw pages -> cleaned articles -> parquet/articles.parquet.

Only what is new or changed does work: article pages are fetched through a task cache that
expires after ``scrape.refetch_after_hours`` (then a conditional GET), cleaning is cached on
the page's content hash, and the Parquet file is rewritten only when an article changed.
A source or page that fails is logged and listed in the summary; the rest goes on.

    python flows/ingest.py data/sample/posts
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.futures import PrefectFuture

from config.settings import Settings, load_settings
from tasks.clean import clean_page
from tasks.scrape import discover_pages, fetch_url
from tasks.store import store_articles

SAMPLE_SOURCE = str(Path(__file__).resolve().parents[1] / "data" / "sample" / "posts")


def settle(futures: list[PrefectFuture], labels: list[str]) -> tuple[list, list[dict]]:
    """Results of the futures that completed, and ``{"item", "error"}`` for those that failed."""
    results, failures = [], []
    for future, label in zip(futures, labels, strict=True):
        value = future.result(raise_on_failure=False)
        if future.state.is_completed():
            results.append(value)
        else:
            failures.append({"item": label, "error": f"{type(value).__name__}: {value}"})
    return results, failures


def discover(sources: list[str], settings: Settings) -> tuple[list[dict], list[dict]]:
    """Page refs from every source; a source that fails is reported, not raised."""
    pages, failures = [], []
    for source in sources:
        try:
            pages += discover_pages(source, settings.scrape.model_dump(), str(settings.data_dir))
        except Exception as exc:  # one bad source never sinks the run
            failures.append({"item": source, "error": f"{type(exc).__name__}: {exc}"})
    return pages, failures


def fetch(pages: list[dict], settings: Settings) -> tuple[list[dict], list[dict]]:
    """Download the pages that are not on disk yet (cached for ``refetch_after_hours``)."""
    fetch_cached = fetch_url.with_options(
        cache_policy=INPUTS + TASK_SOURCE,
        persist_result=True,
        cache_expiration=timedelta(hours=settings.scrape.refetch_after_hours),
    )
    remote = [p for p in pages if p["kind"] == "http"]
    futures = [
        fetch_cached.submit(
            p["url"], p["source"], settings.scrape.model_dump(), str(settings.data_dir)
        )
        for p in remote
    ]
    fetched, failures = settle(futures, [p["url"] for p in remote])
    return [p for p in pages if p["kind"] == "file"] + fetched, failures


@flow(name="ingest")
def ingest(
    sources: list[str] | None = None, profile: str = "default", data_dir: str | None = None
) -> dict:
    """Scrape and clean the sources (default: the bundled sample) into articles.parquet."""
    settings = load_settings(profile, data_dir)
    sources = sources or [SAMPLE_SOURCE]
    pages, failures = discover(sources, settings)
    if not pages and failures:
        raise RuntimeError(f"every source failed: {failures}")
    raws, fetch_failures = fetch(pages, settings)
    futures = [
        clean_page.submit(
            r["path"], r["sha256"], r["url"], r["source"], settings.clean.model_dump()
        )
        for r in raws
    ]
    records, clean_failures = settle(futures, [r["url"] for r in raws])
    fetched_at = {r["sha256"]: r.get("fetched_at") for r in raws}
    articles = [
        {**a, "fetched_at": fetched_at.get(a["html_sha256"])}
        for a in records
        if not a["skip_reason"]
    ]
    stored = store_articles(articles, str(settings.data_dir))
    summary = {
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
        "ingested %d pages: %d added, %d updated, %d unchanged, %d skipped, %d failed",
        len(pages),
        len(stored["added"]),
        len(stored["updated"]),
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
