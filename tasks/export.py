"""The export task: the stored examples as train/valid/test JSONL in OpenAI's chat format,
validated as they are written (every file lands, or none), with their stats.

The chat data itself (one example, its checks, its token counts and the cost) is
:mod:`core.chat_data`'s; this module is the pipeline step that writes ``DATA/jsonl/``.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from typing_extensions import TypedDict

from config.settings import ExportSettings
from core.articles import Example, Staged
from core.chat_data import (
    DISTRIBUTIONS,
    MIN_FINE_TUNE_EXAMPLES,
    REQUIRED_KEYS,
    SPLITS,
    ChatExample,
    DatasetError,
    DatasetStats,
    dumps_jsonl,
    read_numbered,
    stats_of,
    to_chat,
    validate_examples,
)
from core.errors import MissingInput
from core.io import atomic_path
from core.logs import run_logger
from tasks.store import stage_examples


class CostEstimate(TypedDict):
    """What fine-tuning on the train split would cost on OpenAI (its default epochs)."""

    model: str
    epochs: int
    charged_tokens: int
    usd: float
    prices_as_of: str  # ISO date of the price table


class ExportStats(TypedDict):
    """``DATA/jsonl/stats.json``: each split's figures and the cost estimate."""

    as_of: str  # ISO-8601 UTC, to the second
    splits: dict[str, DatasetStats]  # by split name, in SPLITS order
    cost_estimate: CostEstimate


class Exported(TypedDict):
    """What ``export_jsonl`` wrote: the files by split (and "stats"), the stats, the Parquet."""

    paths: dict[str, str]
    stats: ExportStats
    parquet: Staged


def exported_split(data_dir: str | Path, split: str) -> Path:
    """``DATA/jsonl/<split>.jsonl``; :class:`MissingInput` if ``pgpt export`` has not written it."""
    path = Path(data_dir) / "jsonl" / f"{split}.jsonl"
    if not path.exists():
        raise MissingInput(f"{path} not found: run `pgpt export` first")
    return path


# --- the Prefect task -----------------------------------------------------------------------


def _chats_by_split(examples: list[Example], system_message: str) -> dict[str, list[ChatExample]]:
    """Chat examples per split, ordered by (article_id, chunk); DatasetError on malformed rows."""
    for index, row in enumerate(examples):
        missing = [k for k in REQUIRED_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise DatasetError("examples", None, f"row {index} lacks {', '.join(missing)}")
        if row["split"] not in SPLITS:
            raise DatasetError(
                "examples",
                None,
                f"article {row['article_id']!r} chunk {row['chunk']}: unknown split "
                f"{row['split']!r} (expected one of {', '.join(SPLITS)})",
            )
    by_split: dict[str, list[ChatExample]] = {split: [] for split in SPLITS}
    for row in sorted(examples, key=lambda r: (r["article_id"], r["chunk"])):
        by_split[row["split"]].append(to_chat(row["plain"], row["markdown"], system_message))
    return by_split


def _warn_leaks(examples: list[Example], log: logging.Logger | logging.LoggerAdapter) -> None:
    """Warn about articles whose chunks fall in more than one split (evaluation leakage)."""
    splits_of: defaultdict[Any, set[str]] = defaultdict(set)
    for row in examples:
        splits_of[row["article_id"]].add(row["split"])
    if leaked := sorted(str(a) for a, s in splits_of.items() if len(s) > 1):
        log.warning("%d article(s) span more than one split: %s", len(leaked), leaked[:5])


def _log_stats(
    split: str,
    stats: DatasetStats,
    cfg: ExportSettings,
    log: logging.Logger | logging.LoggerAdapter,
) -> None:
    """The cookbook's printed report, as log lines."""
    log.info("%s: %d examples", split, stats["n_examples"])
    if stats["missing_system"] or stats["missing_user"]:
        log.warning(
            "%s: %d examples missing a system message, %d missing a user message",
            split,
            stats["missing_system"],
            stats["missing_user"],
        )
    if stats["n_too_long"]:
        log.warning(
            "%s: %d examples may be over the %s token limit, they will be truncated during "
            "fine-tuning",
            split,
            stats["n_too_long"],
            f"{cfg.max_tokens_per_example:,}",
        )


@task
def export_jsonl(examples: list[Example], data_dir: str, export: ExportSettings) -> Exported:
    """Write train/valid/test JSONL in OpenAI chat format, validated, with stats.json and
    examples.parquet: every file is replaced, or none (a failed export leaves all as they
    were)."""
    log = run_logger(__name__)
    by_split = _chats_by_split(examples, export.system_message)
    _warn_leaks(examples, log)
    if not by_split["train"]:
        raise DatasetError("train.jsonl", None, "no training examples")
    out_dir = Path(data_dir) / "jsonl"
    paths = {split: out_dir / f"{split}.jsonl" for split in SPLITS}
    paths["stats"] = out_dir / "stats.json"
    with ExitStack() as stack:  # every file lands only if every split validates
        split_stats: dict[str, DatasetStats] = {}
        for split in SPLITS:
            name = paths[split].name
            tmp = stack.enter_context(atomic_path(paths[split]))
            tmp.write_text(dumps_jsonl(by_split[split]), encoding="utf-8")
            rows = read_numbered(tmp, name)  # validate what is on disk
            if len(rows) != len(by_split[split]):
                reason = f"{len(rows)} lines read back, {len(by_split[split])} written"
                raise DatasetError(name, None, reason)
            validate_examples([value for _, value in rows], name, [n for n, _ in rows])
            split_stats[split] = stats_of([value for _, value in rows], export)
            _log_stats(split, split_stats[split], export, log)
        train = split_stats["train"]
        stats: ExportStats = {
            "as_of": datetime.now(UTC).isoformat(timespec="seconds"),
            "splits": split_stats,
            "cost_estimate": {
                "model": train["price_model"],
                "epochs": train["epochs"],
                "charged_tokens": train["charged_tokens"],
                "usd": train["est_cost_usd"],
                "prices_as_of": train["prices_as_of"],
            },
        }
        tmp = stack.enter_context(atomic_path(paths["stats"]))
        tmp.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        stored = stage_examples(examples, data_dir, stack)  # lands with the JSONL, or not
    if train["n_examples"] < MIN_FINE_TUNE_EXAMPLES:
        log.warning(
            "train has %d examples; OpenAI fine-tuning needs at least %d",
            train["n_examples"],
            MIN_FINE_TUNE_EXAMPLES,
        )
    log.info(
        "default %d epochs x %d billing tokens = %d charged tokens: ~$%.4f on %s (prices of %s)",
        train["epochs"],
        train["billing_tokens"],
        train["charged_tokens"],
        train["est_cost_usd"],
        train["price_model"],
        train["prices_as_of"],
    )
    return {"paths": {k: str(v) for k, v in paths.items()}, "stats": stats, "parquet": stored}


# --- summary --------------------------------------------------------------------------------


def _fmt(value: float | int | None) -> str:
    """A table cell: thousands separators, one decimal for fractions, a dash for nothing."""
    if value is None:
        return "–"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _usd(value: float) -> str:
    """Dollars: cents, or four decimals below one cent."""
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"


def summary_markdown(stats: ExportStats) -> str:
    """A short Markdown report of export_jsonl's stats (for a Prefect markdown artifact)."""
    splits = stats["splits"]
    lines = [
        "## Fine-tuning data (OpenAI chat format)",
        "",
        "| split | examples | missing system | missing user | over token limit |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for split, s in splits.items():
        lines.append(
            f"| {split} | {_fmt(s['n_examples'])} | {_fmt(s['missing_system'])} "
            f"| {_fmt(s['missing_user'])} | {_fmt(s['n_too_long'])} |"
        )
    lines += [
        "",
        "### Tokens per example",
        "",
        "| split | tokens | min | p5 | median | mean | p95 | max |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split, s in splits.items():
        for label, key in (("total", DISTRIBUTIONS[1]), ("assistant", DISTRIBUTIONS[2])):
            d = s["distributions"][key]
            cells = " | ".join(_fmt(d[k]) for k in ("min", "p5", "median", "mean", "p95", "max"))
            lines.append(f"| {split} | {label} | {cells} |")
    cost = stats["cost_estimate"]
    train = splits.get("train", {})
    lines += [
        "",
        f"**Training:** {_fmt(cost['epochs'])} epochs (OpenAI's default rule) × "
        f"{_fmt(train.get('billing_tokens'))} billing tokens = "
        f"**{_fmt(cost['charged_tokens'])} charged tokens**.",
        "",
        f"**Estimated cost:** **{_usd(cost['usd'])}** to fine-tune `{cost['model']}` "
        f"(training prices as of {cost['prices_as_of']}).",
        "",
    ]
    return "\n".join(lines)
