"""Quality on real articles: the whole pipeline on a folder of articles, then every figure.

Ingests the articles, exports (split by article), fine-tunes and evaluates with the chosen
profile, in its own data dir, and prints what the evaluation found, each figure with its 95 %
bootstrap interval:

- per model (identity, the ceiling, the rules, base one-shot, the fine-tune, ...): CER, the
  **gap closed** (0: identity, 1: the ceiling, the author's Markdown without the emphasis,
  strong and inline code that plain text keeps no trace of), visible and invisible
  structure F1, seconds a chunk;
- visible and invisible structure F1 per element kind (micro over the chunks);
- the paired CER difference of the fine-tune against identity, base and rules;
- the total wall-clock minutes of the run (ingest to evaluation) and the load average of the
  machine at its start and end (other work on the machine slows training down).

The goal (issue 12): on each corpus the fine-tune closes >= 70 % of the gap (low end >= 50 %),
visible F1 >= 0.8, it beats the base model one-shot (paired interval below 0), <= 60 min.

    .venv/bin/python bench/quality.py --source ../shared/corpora/rust-blog --profile P.yaml
    .venv/bin/python bench/quality.py --source DIR --source OTHER_DIR   # pooled in one run
    .venv/bin/python bench/quality.py --articles 60 --profile quick     # corpora/*/posts/*.html
    .venv/bin/python bench/quality.py --answers DATA/reports/<run>/answers.jsonl

``--source`` takes anything ``pgpt ingest`` does (a Medium export, a folder of .md or .html
files); without it, every ``../shared/corpora/*/posts/*.html`` (or the first ``--articles``
of them, in file-name order) is copied to one folder and ingested as a Medium export. The data
dir defaults to ``data/bench-quality/<source folder names>``: run with a fresh one (delete it)
for a fair time, since ingest, export and fine-tune are cached. ``--answers`` prints the same
breakdown for an earlier run's answers.jsonl without running anything (the ceiling is computed
from the references when the file has none).

Runs take long on 2 cores (training is ~180 tokens/s): run it alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
FIXED = ("index", "plain", "reference")


def corpus_posts(limit: int | None) -> list[Path]:
    """The corpora's post files, in name order (the first ``limit`` of them)."""
    posts = sorted(CORPORA.glob("*/posts/*.html"))
    if not posts:
        sys.exit(f"no posts under {CORPORA}: this benchmark needs ../shared/corpora/")
    return posts[:limit] if limit else posts


def default_data_dir(sources: list[str]) -> Path:
    """``data/bench-quality`` (the corpora), or ``data/bench-quality/<folder names>``."""
    base = ROOT / "data" / "bench-quality"
    if not sources:
        return base
    return base / "+".join(Path(source).resolve().name for source in sources)


def load() -> tuple[float, float, float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def score_answer_rows(rows: list[dict], samples: int = 2000, confidence: float = 0.95) -> dict:
    """The models of an answers.jsonl scored as the evaluation scores them (gap closed too).

    The ceiling is computed from the references when the file has no ``ceiling`` column.
    Returns ``{"models": {name: summary}, "paired_cer": [...]}`` like metrics.json.
    """
    from config.settings import EvaluateSettings
    from tasks.evaluate import score_answers
    from tasks.evaluate.ceiling import without_invisible
    from tasks.evaluate.metrics import paired_comparisons, with_gap_closed

    names = [k for k in rows[0] if k not in FIXED and not k.endswith("_cer")]
    answers = {name: [r[name] for r in rows] for name in names}
    answers.setdefault("ceiling", [without_invisible(r["reference"]) for r in rows])
    examples = [{"plain": r["plain"], "reference": r["reference"]} for r in rows]
    bounds = {"samples": samples, "confidence": confidence}
    evaluate = EvaluateSettings(bootstrap_samples=samples, confidence=confidence)
    models = {}
    for name, predictions in answers.items():
        run = {"answers": predictions, "seconds": 0.0, "cpu_seconds": 0.0, "output_tokens": 0}
        scored = score_answers(name, examples, run, evaluate)
        models[name] = {k: v for k, v in scored.items() if k != "seconds_per_example"}  # unknown
    models = with_gap_closed(models, **bounds)
    return {"models": models, "paired_cer": paired_comparisons(models, **bounds)}


def figure(value: dict | None, digits: int = 3) -> str:
    """``0.123 [0.101, 0.150]``, or "-" when there is no value (no gap to close)."""
    if not value or value.get("mean") is None:
        return "-"
    return f"{value['mean']:.{digits}f} [{value['low']:.{digits}f}, {value['high']:.{digits}f}]"


def decoding_line(found: dict) -> str:
    """The biases a fine-tune's valid split chose (``backends.local.calibrate``), in a line."""
    scaffold = (
        "scaffold bias {scaffold_bias}, block bias {block_bias} (valid: {tokens_weighed} "
        "decisions weighed; the author departs from the scaffold at {author_departures}, "
        "the model at {model_departures}; inside lines {inline_weighed}, "
        "{inline_author_departures} and {inline_model_departures}); ".format(**found)
        if "scaffold_bias" in found
        else ""
    )
    for checked in found.get("checked", []):  # each decoded try, until one paid
        scaffold += (
            "checked by decoding {valid_examples} valid chunks at scaffold bias {scaffold_bias}, "
            "block bias {block_bias}: CER {model_cer} against the scaffold's own "
            "{scaffold_cer}".format(**checked)
        )
        scaffold += " (paired {mean:+.5f} [{low:+.5f}, {high:+.5f}]); ".format(
            **checked["difference"]
        )
    return scaffold + (
        "markup bias {markup_bias} (valid: {line_starts} line starts, {with_markup} with "
        "markup; their F1 {f1_without_bias} without the bias, {f1_with_bias} with it)"
    ).format(**found)


def summary_lines(metrics: dict) -> list[str]:
    """The bench's printout of an evaluation (metrics.json, or :func:`score_answer_rows`)."""
    from tasks.evaluate.metrics import INVISIBLE_KINDS, VISIBLE_KINDS
    from tasks.report import paired_lines

    models = metrics["models"]
    header = f"{'model':<16} {'CER [95 % CI]':<26} {'gap closed':<22} {'visible F1':<22} "
    header += f"{'invisible F1':<22} s/chunk"
    lines = [header]
    for name, m in models.items():
        seconds = m.get("seconds_per_example")
        lines.append(
            f"{name:<16} {figure(m['cer'], 4):<26} {figure(m.get('gap_closed')):<22} "
            f"{figure(m.get('visible_f1')):<22} {figure(m.get('invisible_f1')):<22} "
            + ("" if seconds is None else f"{seconds:.1f}")
        )
    ceiling = models.get("ceiling")
    if ceiling:
        lines.append(
            f"ceiling (the reference without emphasis, strong and inline code): CER "
            f"{figure(ceiling['cer'], 4)}, visible F1 {figure(ceiling.get('visible_f1'))}"
        )
    for title, kinds in (("visible", VISIBLE_KINDS), ("invisible", INVISIBLE_KINDS)):
        lines.append(f"{title} structure F1 per kind, micro over the chunks (reference count):")
        for name, m in models.items():
            by_kind = {k: v for k, v in m.get("structure_by_kind", {}).items() if k in kinds}
            shown = ", ".join(
                f"{kind} {'-' if v['f1'] is None else format(v['f1'], '.2f')} ({v['reference']})"
                for kind, v in by_kind.items()
            )
            lines.append(f"  {name}: {shown or 'none on either side'}")
    lines.append("paired CER difference (below 0: the first is better):")
    lines += [f"  {line}" for line in paired_lines(metrics.get("paired_cer") or [])]
    return lines


def print_breakdown(answers_path: Path) -> None:
    """Every figure of an earlier run's answers.jsonl (its ceiling computed if absent)."""
    rows = [json.loads(line) for line in answers_path.read_text().splitlines() if line.strip()]
    print(f"{answers_path}: {len(rows)} chunks")
    print("\n".join(summary_lines(score_answer_rows(rows))))


def run_pipeline(sources: list[str], profile: str, data_dir: str) -> dict:
    """ingest -> export -> fine-tune -> evaluate (the retrain flow) in ``data_dir``."""
    from config.runtime import results_in
    from flows.retrain import retrain

    with results_in(data_dir):
        return retrain(sources, profile, data_dir)


def checked_inputs(sources: list[str], profile: str) -> None:
    """Before any flow starts: a source that is not there, or a profile that does not load, is
    one line naming it and what to do (the checks ``pgpt`` makes), exit code 1."""
    from config.settings import load_settings
    from core.errors import InputError
    from tasks.scrape import checked_sources

    try:
        checked_sources(sources, local=True)
        load_settings(profile)
    except (InputError, ValueError, OSError) as error:
        sys.exit(f"bench/quality.py: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        help="a folder of articles (Medium export, .md or .html); repeatable",
    )
    parser.add_argument("--articles", type=int, default=None, help="corpora post files (all)")
    parser.add_argument("--profile", default="full", help="settings profile or YAML path")
    parser.add_argument("--data-dir", default=None, help="default: data/bench-quality/<source>")
    parser.add_argument("--answers", type=Path, help="only print the breakdown of this file")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if not os.environ.get("PREFECT_API_URL"):  # Prefect's temporary server, as `pgpt` sets it up
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no errors
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if args.answers:
        print_breakdown(args.answers)
        return
    data_dir = str(args.data_dir or default_data_dir(args.source))
    start, load_start = time.monotonic(), load()
    with tempfile.TemporaryDirectory() as tmp:
        sources = [str(Path(source).resolve()) for source in args.source]
        if not sources:
            folder = Path(tmp) / "posts"
            folder.mkdir()
            for post in corpus_posts(args.articles):  # one folder: read as a Medium export
                shutil.copy(post, folder / post.name)
            sources = [str(folder)]
        checked_inputs(sources, args.profile)
        result = run_pipeline(sources, args.profile, data_dir)
    minutes, load_end = (time.monotonic() - start) / 60, load()
    report_dir = Path(result["evaluate"]["report_dir"])
    metrics = json.loads((report_dir / "metrics.json").read_text())
    print(f"{metrics['examples']} test chunks; report: {report_dir}/report.md")
    print("\n".join(summary_lines(metrics)))
    decoding = (result["finetune"].get("metrics") or {}).get("decoding")
    if decoding:  # backends.local.calibrate: the fine-tune's biases, from the valid split
        print(decoding_line(decoding))
    print(f"total: {minutes:.1f} min (ingest to evaluation)")
    print("load average (1, 5, 15 min): start {:.2f} {:.2f} {:.2f}".format(*load_start), end="")
    print(", end {:.2f} {:.2f} {:.2f}".format(*load_end))
    print(f"command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
