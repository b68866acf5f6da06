"""Export flow: parquet/articles.parquet -> examples.parquet -> train/valid/test JSONL.

python flows/export.py
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from config.settings import load_settings
from core.articles import Article, IngestSummary
from flows.runner import in_data_dir
from tasks.examples import build_examples
from tasks.export import Exported, export_jsonl
from tasks.report import article_rows, publish_dataset
from tasks.store import distinct_articles, read_articles, require_articles


class Dataset(Exported):
    """The export flow's result: what export_jsonl wrote, and how many articles and examples."""

    articles: int
    examples: int


@task
def load_articles(data_dir: str) -> list[Article]:
    """The stored articles, one per text (copies stored before they were merged are left
    out, so no text is in two splits); a clear error when there are none yet."""
    require_articles(data_dir)
    articles, copies = distinct_articles(read_articles(data_dir))
    if copies:
        get_run_logger().warning(
            "%d stored article(s) repeat another's text, left out: %s", len(copies), copies[:5]
        )
    return articles


@flow(name="export")
def export(
    profile: str = "default",
    data_dir: str | None = None,
    ingest_summary: IngestSummary | None = None,
) -> Dataset:
    """Chunk and split the stored articles and write the validated fine-tuning JSONL."""
    settings = load_settings(profile, data_dir)
    articles = load_articles(str(settings.data_dir))
    examples = in_data_dir(build_examples, settings.data_dir)(articles, settings.examples)
    exported = export_jsonl(examples, str(settings.data_dir), settings.export)
    publish_dataset(ingest_summary, exported["stats"], article_rows(articles, examples))
    return {"articles": len(articles), "examples": len(examples), **exported}


if __name__ == "__main__":
    from config.runtime import results_in

    with results_in(load_settings().data_dir):
        export()
