"""What a run tells people: the dataset summary as Markdown and as Prefect artifacts.

>>> print(ingest_markdown({"sources": 1, "pages": 3, "added": ["a"], "updated": [],
...                        "unchanged": 1, "total": 2, "skipped": [], "failures": []}))
### Ingest
| sources | pages | added | updated | merged | unchanged | skipped | failed | stored |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
| 1 | 3 | 1 | 0 | 0 | 1 | 0 | 0 | 2 |
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from typing_extensions import TypedDict

from core.articles import Article, Example, IngestSummary
from core.chat_data import EvalExample
from core.io import write_atomic
from tasks.evaluate import Decision
from tasks.evaluate.metrics import (
    INVISIBLE_KINDS,
    KINDS,
    VISIBLE_KINDS,
    Interval,
    Paired,
    Score,
    Summary,
)
from tasks.export import ExportStats, summary_markdown


class ArticleRow(TypedDict):
    """One article in the dataset's articles table."""

    title: str | None
    published: str  # its date, YYYY-MM-DD ("" if unknown)
    words: int
    markdown_tokens: int
    split: str  # "" if it has no examples
    chunks: int
    url: str


class EvaluationReport(TypedDict):
    """An evaluation run's report (``metrics.json`` is it without the per-example scores)."""

    run_id: str
    created_at: str  # ISO-8601 UTC
    examples: int  # test chunks scored
    data_sha256: str  # of test.jsonl
    decision: Decision | None  # champion/challenger (only when promoting)
    loss_png: str | None
    worst_examples: int  # how many the report shows
    break_even: str
    models: dict[str, Summary]  # by their names in the report
    paired_cer: list[Paired]


Table = list[dict[str, str | int]]  # rows of a Markdown or Prefect table, keyed by header
Worst = list[tuple[int, float, str, str]]  # (index, cer, reference, answer), worst first


def ingest_counts(summary: IngestSummary) -> dict[str, int]:
    """The ingest summary as counts, in the order people read them."""
    return {
        "sources": summary["sources"],
        "pages": summary["pages"],
        "added": len(summary["added"]),
        "updated": len(summary["updated"]),
        "merged": len(summary.get("merged", [])),  # copies of a stored article's text
        "unchanged": summary["unchanged"],
        "skipped": len(summary["skipped"]),
        "failed": len(summary["failures"]),
        "stored": summary["total"],
    }


def ingest_markdown(summary: IngestSummary) -> str:
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


def article_rows(articles: list[Article], examples: list[Example]) -> list[ArticleRow]:
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
def publish_dataset(
    ingest: IngestSummary | None, stats: ExportStats, rows: list[ArticleRow]
) -> str:
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


# ---------------------------------------------------------------------------------------------
# Evaluation report: DATA/reports/<run id>/ and the Prefect artifacts

METRIC_LABELS = {
    "cer": "CER ↓",
    "gap_closed": "gap closed ↑",
    "visible_f1": "visible structure F1 ↑",
    "chrf": "chrF ↑",
}


def interval(value: Interval | None, digits: int = 3) -> str:
    """``0.123 [0.101, 0.150]``: a mean with its interval ("–" when there is none).

    >>> interval({"mean": 0.5, "low": 0.25, "high": 0.75}), interval({"mean": None})
    ('0.500 [0.250, 0.750]', '–')
    """
    if not value or value.get("mean") is None:
        return "–"
    return f"{value['mean']:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"


def metrics_rows(models: dict[str, Summary]) -> Table:
    """One row per model for tables: the means with intervals, time and cost."""
    return [
        {
            "model": name,
            "model id": m["model_id"],
            "CER": interval(m["cer"], 4),
            "gap closed": interval(m.get("gap_closed")),
            "visible F1": interval(m.get("visible_f1")),
            "invisible F1": interval(m.get("invisible_f1")),
            "chrF": interval(m["chrf"]),
            "structure F1": interval(m["structure_f1"]),
            "text CER": f"{m['text_cer']['mean']:.3f}",
            "s / example": f"{m['seconds_per_example']:.1f}",
            "cost ($)": f"{m['cost_usd']:.4f}",
        }
        for name, m in models.items()
    ]


def kind_rows(models: dict[str, Summary], among: Sequence[str] = KINDS) -> Table:
    """Structure F1 per element kind (micro over the chunks), a row per model, and the counts.

    ``among``: the kinds to show (those that occur), e.g.
    :data:`tasks.evaluate.metrics.VISIBLE_KINDS`.
    """
    kinds = sorted(
        {k for m in models.values() for k in m.get("structure_by_kind", {}) if k in among},
        key=KINDS.index,
    )
    if not kinds:
        return []
    counts = {k: 0 for k in kinds}
    rows: Table = []
    for name, m in models.items():
        by_kind = m.get("structure_by_kind", {})
        counts |= {k: v["reference"] for k, v in by_kind.items() if k in counts}
        f1s = {k: by_kind.get(k, {}).get("f1") for k in kinds}
        rows.append({"model": name} | {k: "–" if v is None else f"{v:.2f}" for k, v in f1s.items()})
    return [{"model": "(in the references)"} | counts, *rows]


def paired_lines(comparisons: list[Paired]) -> list[str]:
    """One line per paired CER comparison: the mean difference, its interval, the verdict.

    >>> paired_lines([{"model": "finetuned", "against": "base", "mean": -0.002,
    ...                "low": -0.003, "high": -0.001}])
    ['finetuned − base: CER −0.0020 [−0.0030, −0.0010]: better']
    """
    lines = []
    for c in comparisons:
        verdict = "better" if c["high"] < 0 else "worse" if c["low"] > 0 else "not distinguishable"
        numbers = f"{c['mean']:+.4f} [{c['low']:+.4f}, {c['high']:+.4f}]".replace("-", "−")
        lines.append(f"{c['model']} − {c['against']}: CER {numbers}: {verdict}")
    return lines


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """A GitHub Markdown table of rows (their keys as the header)."""
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(r[k]) for k in header) + " |" for r in rows]
    return "\n".join(lines)


def worst_examples(
    examples: list[EvalExample], answers: list[str], scores: list[Score], n: int
) -> Worst:
    """The ``n`` examples with the highest CER: ``(index, cer, reference, answer)``."""
    ranked = sorted(range(len(examples)), key=lambda i: scores[i]["cer"], reverse=True)[:n]
    return [(i, scores[i]["cer"], examples[i]["reference"], answers[i]) for i in ranked]


def unified_diff(reference: str, answer: str) -> str:
    """A unified diff from the author's Markdown to the model's."""
    lines = difflib.unified_diff(
        reference.splitlines(), answer.splitlines(), "reference", "model", lineterm="", n=1
    )
    return "\n".join(lines) or "(identical)"


def report_markdown(report: EvaluationReport, worst: Worst) -> str:
    """report.md: the table, the decision, the break-even figure, the worst examples."""
    decision = report.get("decision") or {}
    parts = [
        f"# Evaluation {report['run_id']}",
        f"{report['examples']} test chunks; faithful mode unless the model's name ends in "
        "`_raw`. Means with 95 % bootstrap intervals; CER against the author's Markdown "
        "(lower is better), text CER against the plain input.",
        markdown_table(metrics_rows(report["models"])),
        "![metrics](metrics.png)\n\n![training loss](loss.png)",
    ]
    parts.append(
        "**gap closed**: (CER identity − CER model) / (CER identity − CER ceiling), a ratio of "
        "the means over the chunks with a paired bootstrap interval: 0 is the plain text "
        "copied (identity), 1 the **ceiling**, the author's Markdown without emphasis, strong "
        "and inline code, which plain text keeps no trace of. **visible F1**: headings, list "
        "items, code blocks, quotes, tables and thematic breaks; **invisible F1**: emphasis, "
        "strong and inline code (micro over the chunks)."
    )
    paired = report.get("paired_cer") or []
    if paired:
        lines = "\n".join(f"- {line}" for line in paired_lines(paired))
        parts.append(
            "## Paired comparisons\n\nThe mean per-chunk CER difference on the same chunks, "
            f"with its bootstrap interval (below 0: the first model is better).\n\n{lines}"
        )
    visible = kind_rows(report["models"], VISIBLE_KINDS)
    invisible = kind_rows(report["models"], INVISIBLE_KINDS)
    if visible or invisible:
        tables = [
            f"**{title}**\n\n{markdown_table(rows)}"
            for title, rows in (
                ("Visible: their trace survives in the plain text", visible),
                ("Invisible: plain text keeps no trace of them (the ceiling has none)", invisible),
            )
            if rows
        ]
        parts.append(
            "## Structure F1 by element kind\n\nMicro F1 over all test chunks (an element "
            "counts when its kind, detail and text all match); the first row counts the "
            "reference's elements.\n\n" + "\n\n".join(tables)
        )
    if decision:
        verdict = "promoted" if decision["promote"] else "kept the champion"
        parts.append(f"## Champion/challenger\n\n**{verdict}**: {decision['reason']}")
    if report.get("break_even"):
        parts.append(f"## Break-even\n\n{report['break_even']}")
    parts.append("## Worst examples (fine-tuned model)\n\nSide by side: `worst.html`.")
    for index, score, reference, answer in worst:
        diff = unified_diff(reference, answer)
        parts.append(f"### Test chunk {index} (CER {score:.3f})\n\n```diff\n{diff}\n```")
    return "\n\n".join(parts) + "\n"


def worst_html(worst: Worst) -> str:
    """The worst examples as side-by-side HTML diffs."""
    differ = difflib.HtmlDiff(wrapcolumn=80)
    tables = [
        f"<h2>Test chunk {i} (CER {score:.3f})</h2>"
        + differ.make_table(reference.splitlines(), answer.splitlines(), "reference", "model")
        for i, score, reference, answer in worst
    ]
    return differ.make_file([], []).replace("<body>", "<body>" + "".join(tables), 1)


def plot_metrics(models: dict[str, Summary], out: Path) -> Path:
    """CER, gap closed, visible F1 and chrF per model with their intervals, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(models)
    fig, axes = plt.subplots(1, len(METRIC_LABELS), figsize=(15, 0.5 * len(names) + 2), dpi=110)
    for ax, (key, label) in zip(axes, METRIC_LABELS.items(), strict=True):
        values = [models[n].get(key) or {} for n in names]
        means = [v.get("mean") or 0.0 for v in values]  # no value (no gap at all): 0, no bar
        errors = [
            [m - (v.get("low") or m) for v, m in zip(values, means, strict=True)],
            [(v.get("high") or m) - m for v, m in zip(values, means, strict=True)],
        ]
        ax.barh(names, means, xerr=errors, capsize=3, color="tab:blue", alpha=0.75)
        ax.set(title=label)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def point_latest(reports: Path, run_id: str) -> None:
    """``reports/latest`` -> ``reports/<run id>`` (replaced atomically)."""
    tmp = reports / f".latest.{run_id}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id, target_is_directory=True)
    os.replace(tmp, reports / "latest")


@task
def write_report(
    report: EvaluationReport,
    examples: list[EvalExample],
    answers: dict[str, list[str]],
    data_dir: str,
) -> str:
    """Write DATA/reports/<run id>/ (metrics.json, report.md, PNGs, answers); its path."""
    out = Path(data_dir) / "reports" / report["run_id"]
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if k != "models"}
    public["models"] = {
        name: {k: v for k, v in m.items() if k != "scores"} for name, m in report["models"].items()
    }
    write_atomic(out / "metrics.json", json.dumps(public, indent=2) + "\n")
    rows = [
        {"index": i, "plain": e["plain"], "reference": e["reference"]}
        | {f"{name}": answers[name][i] for name in answers}
        | {f"{name}_cer": report["models"][name]["scores"][i]["cer"] for name in answers}
        for i, e in enumerate(examples)
    ]
    write_atomic(out / "answers.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    plot_metrics(public["models"], out / "metrics.png")
    loss = report.get("loss_png")
    if loss and Path(loss).exists():
        shutil.copyfile(loss, out / "loss.png")
    top = "finetuned" if "finetuned" in answers else next(iter(answers))
    worst = worst_examples(
        examples, answers[top], report["models"][top]["scores"], report["worst_examples"]
    )
    write_atomic(out / "report.md", report_markdown(public, worst))
    write_atomic(out / "worst.html", worst_html(worst))
    point_latest(out.parent, report["run_id"])
    return str(out)


@task
def publish_evaluation(report: EvaluationReport, report_dir: str) -> None:
    """The evaluation table and the report summary as Prefect artifacts."""
    create_table_artifact(
        key="pgpt-evaluation",
        table=metrics_rows(report["models"]),
        description=f"Evaluation {report['run_id']} on {report['examples']} test chunks",
    )
    decision = report.get("decision") or {}
    create_markdown_artifact(
        key="pgpt-report",
        markdown=(
            f"## Evaluation {report['run_id']}\n\n"
            + markdown_table(metrics_rows(report["models"]))
            + "".join(f"\n\n{line}" for line in paired_lines(report.get("paired_cer") or []))
            + (f"\n\n**Champion/challenger:** {decision['reason']}" if decision else "")
            + f"\n\nReport: `{report_dir}/report.md` (charts: metrics.png, loss.png)"
        ),
        description="Evaluation report",
    )
