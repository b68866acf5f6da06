"""What a run tells people: the dataset summary as Markdown and as Prefect artifacts.

>>> print(ingest_markdown({"sources": 1, "pages": 3, "added": ["a"], "updated": [],
...                        "unchanged": 1, "total": 2, "skipped": [], "failures": []}))
### Ingest
| sources | pages | added | updated | unchanged | skipped | failed | stored |
| --- | --- | --- | --- | --- | --- | --- | --- |
| 1 | 3 | 1 | 0 | 1 | 0 | 0 | 2 |
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.export import summary_markdown


def ingest_counts(summary: dict) -> dict[str, int]:
    """The ingest summary as counts, in the order people read them."""
    return {
        "sources": summary["sources"],
        "pages": summary["pages"],
        "added": len(summary["added"]),
        "updated": len(summary["updated"]),
        "unchanged": summary["unchanged"],
        "skipped": len(summary["skipped"]),
        "failed": len(summary["failures"]),
        "stored": summary["total"],
    }


def ingest_markdown(summary: dict) -> str:
    """The ingest counts as a Markdown table, then any failures."""
    counts = ingest_counts(summary)
    lines = [
        "### Ingest",
        "| " + " | ".join(counts) + " |",
        "| " + " | ".join("---" for _ in counts) + " |",
        "| " + " | ".join(str(v) for v in counts.values()) + " |",
    ]
    if summary["failures"]:
        lines += ["", "**Failed:**"] + [
            f"- `{f['item']}`: {f['error']}" for f in summary["failures"]
        ]
    return "\n".join(lines)


def article_rows(articles: list[dict], examples: list[dict]) -> list[dict]:
    """One row per article for the articles table: title, date, size, split, chunks, URL."""
    split = {e["article_id"]: e["split"] for e in examples}
    chunks: dict[str, int] = {}
    for e in examples:
        chunks[e["article_id"]] = chunks.get(e["article_id"], 0) + 1
    return [
        {
            "title": a["title"],
            "published": str(a["published"] or "")[:10],
            "words": a["words"],
            "markdown_tokens": a["markdown_tokens"],
            "split": split.get(a["id"], ""),
            "chunks": chunks.get(a["id"], 0),
            "url": a["url"],
        }
        for a in sorted(articles, key=lambda a: str(a["published"] or ""))
    ]


@task
def publish_dataset(ingest: dict | None, stats: dict, rows: list[dict]) -> str:
    """Publish the articles table and the dataset summary as Prefect artifacts."""
    create_table_artifact(
        key="pgpt-articles", table=rows, description="Articles in the dataset, with their split"
    )
    markdown = "\n\n".join(
        part
        for part in (
            "## personal-gpt dataset",
            ingest and ingest_markdown(ingest),
            summary_markdown(stats),
        )
        if part
    )
    create_markdown_artifact(
        key="pgpt-dataset",
        markdown=markdown,
        description="Dataset summary and fine-tuning cost estimate",
    )
    return markdown
