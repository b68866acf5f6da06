"""pgpt: the personal-gpt command line.

    pgpt ingest SOURCE...          scrape + clean articles into parquet/articles.parquet
    pgpt export                    chunk, split and write the fine-tuning JSONL
    pgpt finetune                  fine-tune on the exported JSONL (local LoRA by default)
    pgpt evaluate [--model ID]     score a model against identity, the base model and the champion
    pgpt format [FILE|-]           render plain text as Markdown with the current model
    pgpt run [--source S]...       the whole retrain flow (default source: the bundled sample)
    pgpt serve [--port N]          your models behind OpenAI's API (chat, files, fine-tuning)
    pgpt export-model [ID] --to D  a model as GGUF + Ollama Modelfile (or a transformers folder)

Every command takes ``--data-dir DIR`` (env ``PGPT_DATA_DIR``, default ``./data``) before the
command name, and ``--profile NAME`` (a file in ``config/profiles/``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the flows' results, named; imported when a command runs its flow
    from backends.base import Event
    from core.articles import IngestSummary
    from flows.evaluate import Evaluation
    from flows.export import Dataset
    from flows.finetune import Finetuned
    from tasks.evaluate.metrics import Interval

# Without PREFECT_API_URL, and with no Prefect server running here (`_prefect`), Prefect runs
# a temporary server for each command. Keep it from sending telemetry (offline, every run
# would log an error), give it time to start on a busy machine, and keep its shutdown quiet:
# it is stopped when the command ends, while its services may still be flushing the last
# events, and that logs tracebacks after a run that succeeded. Each is only a default: the
# user's own Prefect settings win.
if not os.environ.get("PREFECT_API_URL"):
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")

app = typer.Typer(help="personal-gpt: your own personal ChatGPT.", no_args_is_help=True)
console = Console()
T = TypeVar("T")


def _checked_profile(profile: str) -> str:
    """``--profile`` as given, once its settings load; else one line naming it, exit 1."""
    import yaml

    from config.settings import load_settings

    try:
        device = load_settings(profile).finetune.device
        if device in ("cuda", "mps"):  # asked for by name: it must be there (torch is loaded)
            from backends.local.device import pick_device

            pick_device(device)
    except (ValueError, OSError, yaml.YAMLError) as error:
        _fail(f"--profile {profile}: {error}")
    return profile


def _fail(message: str) -> None:
    """``pgpt <message>`` on stderr, one line, and exit code 1."""
    Console(stderr=True).print(f"pgpt {message}", soft_wrap=True, markup=False)
    raise typer.Exit(1)


def _ready(command: str, check: Callable[[], T]) -> T:
    """``check()``, run before the command's flow starts (no server, no traceback): an input
    it reports wrong or missing is one line naming it and what to do, exit 1."""
    from core.errors import InputError

    try:
        return check()
    except InputError as error:
        _fail(f"{command}: {error}")
        raise  # unreachable: _fail exits


Profile = Annotated[
    str,
    typer.Option(
        "--profile", "-p", help="Settings profile (config/profiles)", callback=_checked_profile
    ),
]


@app.callback()
def main(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="PGPT_DATA_DIR", help="Where outputs go")
    ] = Path("data"),
) -> None:
    """Fine-tune a chat model on your own articles, as Prefect flows."""
    os.environ["PGPT_DATA_DIR"] = str(data_dir)


def _data_dir() -> str:
    return os.environ["PGPT_DATA_DIR"]


@contextmanager
def _prefect() -> Iterator[None]:
    """Where a command's flows run: a Prefect server already running on this machine when
    there is one (said in one line), else ``PREFECT_API_URL`` or the temporary server as
    before (``config/prefect_server.py``); task results persist under the data dir."""
    from config.prefect_server import prefect_api
    from config.runtime import results_in

    notices = Console(stderr=True)
    with prefect_api(lambda line: notices.print(line, soft_wrap=True)), results_in(_data_dir()):
        yield


def _print_ingest(summary: IngestSummary) -> None:
    table = Table(title="Ingest")
    from tasks.report import ingest_counts

    counts = ingest_counts(summary)
    for name in counts:
        table.add_column(name, justify="right")
    table.add_row(*(str(v) for v in counts.values()))
    console.print(table)
    for failure in summary["failures"]:
        console.print(f"[red]failed[/red] {failure['item']}: {failure['error']}")


def _print_export(result: Dataset) -> None:
    table = Table(title=f"Dataset ({result['articles']} articles)")
    for name in ("split", "examples", "tokens/example (mean)", "max", "over limit"):
        table.add_column(name, justify="right")
    for split, stats in result["stats"]["splits"].items():
        dist = (
            stats["distributions"]["num_total_tokens_per_example"] if stats["n_examples"] else None
        )
        table.add_row(
            split,
            str(stats["n_examples"]),
            f"{dist['mean']:.0f}" if dist else "-",
            f"{dist['max']}" if dist else "-",
            str(stats["n_too_long"]),
        )
    console.print(table)
    cost = result["stats"]["cost_estimate"]
    console.print(
        f"Fine-tuning {cost['model']} for {cost['epochs']} epochs would bill "
        f"{cost['charged_tokens']:,} tokens ≈ [bold]${cost['usd']:.2f}[/bold] "
        f"(prices as of {cost['prices_as_of']})."
    )
    for split, path in result["paths"].items():
        console.print(f"  {split}: {path}", soft_wrap=True)


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="URLs, feeds, exports, folders, files")],
    profile: Profile = "default",
) -> None:
    """Scrape and clean SOURCES into parquet/articles.parquet."""
    from flows.ingest import ingest as ingest_flow
    from tasks.scrape import checked_sources

    _ready("ingest", lambda: checked_sources(sources, local=True))
    with _prefect():
        _print_ingest(ingest_flow(sources, profile, _data_dir()))


@app.command()
def export(profile: Profile = "default") -> None:
    """Chunk and split the stored articles; write train/valid/test JSONL and stats."""
    from flows.export import export as export_flow
    from tasks.store import require_articles

    _ready("export", lambda: require_articles(_data_dir()))
    with _prefect():
        _print_export(export_flow(profile, _data_dir()))


def _print_finetune(job: Finetuned) -> None:
    m = job["metrics"]
    speed = f" at {m['tokens_per_s']} tok/s" if m.get("tokens_per_s") else ""
    cost = f", ${m['cost_usd']:.2f}" if m.get("cost_usd") else ""  # the openai backend
    console.print(
        f"Fine-tuned [bold]{job['model_id']}[/bold]: {m.get('steps')} steps, "
        f"{m.get('tokens_seen') or 0:,} tokens{speed}{cost}, "
        f"final train loss {_num(m.get('final_train_loss'))}, "
        f"valid loss {_num(m.get('final_valid_loss'))}",
        soft_wrap=True,
    )


@contextmanager
def _training_bar() -> Iterator[None]:
    """A progress bar (step, loss, tokens/s, ETA) fed by the fine-tune task's events."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from tasks.finetune import training_events

    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("training", total=None, stats="")

        def show(event: Event) -> None:
            if event["type"] == "step":
                stats = f"loss {event['loss']:.4f}"
                if event.get("tokens_per_s") is not None:
                    stats += f"  {event['tokens_per_s']:.0f} tok/s"
                progress.update(
                    bar, completed=event["step"], total=event.get("total_steps"), stats=stats
                )

        with training_events(show):
            yield


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command()
def finetune(profile: Profile = "default") -> None:
    """Fine-tune on DATA/jsonl with the configured backend; the result becomes current."""
    from flows.finetune import finetune as finetune_flow
    from tasks.export import exported_split

    _ready("finetune", lambda: exported_split(_data_dir(), "train"))
    with _prefect(), _training_bar():
        job = finetune_flow(profile, _data_dir())
    _print_finetune(job)


def _print_evaluation(report: Evaluation) -> None:
    def share(value: Interval, interval: bool = False) -> str:
        if value.get("mean") is None:
            return "–"
        if value["mean"] < -1:  # worse than the input by more than the whole gap
            return "< -1"
        low = "< -1" if value["low"] < -1 else f"{value['low']:.2f}"
        bounds = f" [{low}, {value['high']:.2f}]" if interval else ""
        return f"{value['mean']:.2f}{bounds}"

    models = report["models"]
    priced = any(m["cost_usd"] for m in models.values())
    columns = ["model", "CER ↓", "gap closed", "vis. F1", "inv. F1", "text", "s"]
    table = Table(
        title=f"Evaluation on {report['examples']} test chunks (95 % intervals)",
        box=box.SIMPLE_HEAD,
    )
    table.add_column(columns[0], no_wrap=True, min_width=max(map(len, models)))
    for name in columns[1:] + (["$"] if priced else []):
        table.add_column(name, justify="right", no_wrap=True)
    for name, m in models.items():
        table.add_row(
            name,
            f"{m['cer']['mean']:.4f}",
            share(m.get("gap_closed", {}), interval=True),
            share(m["visible_f1"]),
            share(m["invisible_f1"]),
            f"{m['text_cer']['mean']:.3f}",
            f"{m['seconds_per_example']:.0f}",
            *([f"{m['cost_usd']:.2f}"] if priced else []),
        )
    console.print(table)
    console.print(
        "  gap closed: share of the CER between identity (0) and the ceiling (1: the reference "
        "without the markup plain text cannot show; < -1: worse than the input by more than "
        "that); vis./inv. F1: structure F1 of what plain "
        "text shows / cannot show; text: CER of the words alone; s: seconds a chunk"
    )
    for pair in report.get("paired_cer", []):
        console.print(
            f"  {pair['model']} − {pair['against']}: CER {pair['mean']:+.4f} "
            f"[{pair['low']:+.4f}, {pair['high']:+.4f}]"
        )
    for name, m in report["models"].items():
        if not name.endswith("_raw") and m["model_id"] != name:
            console.print(f"  {name}: {m['model_id']}", soft_wrap=True)
    decision = report.get("decision")
    if decision:
        verdict = "[green]promoted[/green]" if decision["promote"] else "[yellow]kept[/yellow]"
        console.print(f"Champion/challenger: {verdict}: {decision['reason']}", soft_wrap=True)
    console.print(f"Report: {report['report_dir']}/report.md", soft_wrap=True)


@app.command()
def evaluate(
    model: Annotated[str | None, typer.Option(help="Model id (default: current)")] = None,
    promote: Annotated[
        bool, typer.Option(help="Make it current if not worse than the champion")
    ] = False,
    profile: Profile = "default",
) -> None:
    """Score a model on the test split against identity, the base model and the champion."""
    from core.runs import model_to_use
    from flows.evaluate import evaluate as evaluate_flow
    from tasks.export import exported_split

    _ready(
        "evaluate", lambda: (model_to_use(_data_dir(), model), exported_split(_data_dir(), "test"))
    )
    with _prefect():
        _print_evaluation(evaluate_flow(profile, _data_dir(), model_id=model, promote=promote))


@app.command("format")
def format_text(
    file: Annotated[str, typer.Argument(help="Plain-text file, or - for stdin")] = "-",
    model: Annotated[str | None, typer.Option(help="Model id (default: current)")] = None,
    raw: Annotated[
        bool, typer.Option(help="Unconstrained output: words may change (faithful is default)")
    ] = False,
    scaffold_only: Annotated[
        bool, typer.Option(help="Print what the model reads (its scaffold), run no model")
    ] = False,
    profile: Profile = "default",
) -> None:
    """Print FILE (plain text) rendered as Markdown by your fine-tuned model.

    Faithful by default: the Markdown's text is exactly the input's (constrained decoding,
    then the repair pass); ``--raw`` prints what the model writes unconstrained.
    ``--scaffold-only`` prints the text as the model reads it (the author's rules' Markdown):
    the input to give the model exported by ``pgpt export-model`` in Ollama or llama.cpp.
    """
    import sys

    from rich.progress import Progress

    from backends import get_backend
    from config.settings import load_settings
    from core.chunks import chunk_plain
    from core.faithful import repair
    from core.runs import model_to_use

    settings = load_settings(profile, _data_dir())
    model_id = _ready("format", lambda: model_to_use(settings.data_dir, model))
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        _fail(f"format: cannot read {file}: {reason}; pass a plain-text file, or -")
    faithful = settings.evaluate.faithful and not raw
    system = {"role": "system", "content": settings.export.system_message}
    chunks = chunk_plain(text, settings.examples.chunk_tokens)
    if scaffold_only:
        from tasks.model_export import model_reader

        reader = model_reader(settings.data_dir, model_id)
        print("\n\n".join(reader(chunk) for chunk in chunks))
        return
    light = os.environ.get("PGPT_LIGHT", "1") != "0"  # 0: load through transformers
    backend = get_backend(settings.finetune, settings.data_dir, light=light)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task(f"formatting with {model_id}", total=len(chunks))
        replies = _ready(  # a model whose base folder is gone is one line too
            "format",
            lambda: backend.complete(
                model_id,
                [[system, {"role": "user", "content": c}] for c in chunks],
                progress=lambda done, total: progress.update(bar, completed=done),
                faithful=faithful,
            ),
        )
    if faithful:
        replies = [repair(reply, chunk) for reply, chunk in zip(replies, chunks, strict=True)]
    print("\n\n".join(replies))


@app.command()
def run(
    source: Annotated[
        list[str] | None, typer.Option("--source", "-s", help="Repeatable; default: sample")
    ] = None,
    profile: Profile = "default",
) -> None:
    """Run the whole retrain flow: ingest, export, fine-tune, evaluate (and promote)."""
    from flows.retrain import retrain

    with _prefect(), _training_bar():
        result = retrain(source or None, profile, _data_dir())
    _print_ingest(result["ingest"])
    _print_export(result["export"])
    _print_finetune(result["finetune"])
    _print_evaluation(result["evaluate"])


@app.command("export-model")
def export_model(
    model: Annotated[str | None, typer.Argument(help="Model id (default: current)")] = None,
    to: Annotated[Path, typer.Option(help="Folder to write into")] = Path("exported"),
    format: Annotated[
        str, typer.Option(help="gguf (llama.cpp, Ollama) or hf (transformers)")
    ] = "gguf",
    quant: Annotated[str, typer.Option(help="gguf weights: q8_0 or f16")] = "q8_0",
    profile: Profile = "default",
) -> None:
    """Write a model with its adapter merged: GGUF + an Ollama Modelfile, or a transformers
    folder. Then `ollama create NAME -f DIR/Modelfile`, or `llama-cli -m DIR/NAME.gguf`."""
    from backends.local.export_model import FORMATS
    from backends.local.to_gguf import QUANTS
    from flows.export_model import export_model as export_model_flow
    from tasks.model_export import exportable_model, usage_lines

    if format not in FORMATS:
        _fail(f"export-model: --format {format}: one of {', '.join(FORMATS)}")
    if quant not in QUANTS:
        _fail(f"export-model: --quant {quant}: one of {', '.join(QUANTS)}")
    if to.exists() and not to.is_dir():
        _fail(f"export-model: --to {to} is a file: give a folder (it is made if missing)")
    chosen = _ready("export-model", lambda: exportable_model(_data_dir(), model))
    with _prefect():
        exported = export_model_flow(str(to), chosen, format, quant, profile, _data_dir())
    size = f"{exported['bytes'] / 1e6:.0f} MB"
    console.print(f"exported {chosen} ({exported['format']}, {exported['quant']}, {size}):")
    for path in exported["files"]:
        console.print(f"  {path}")
    for line in usage_lines(exported):
        console.print(f"  $ {line}", soft_wrap=True, markup=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address (default: serve.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: serve.port)")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="PGPT_SERVER_API_KEY", help="Require this bearer token"),
    ] = None,
    profile: Profile = "default",
) -> None:
    """Serve the base model and your fine-tunes with OpenAI's API (for any OpenAI client).

    Chat completions (streaming too), files and fine-tuning jobs (trained locally), e.g.
    ``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=...)``; a playground page at
    http://127.0.0.1:8000/.
    """
    from config.settings import load_settings
    from server.app import serve as serve_app

    settings = load_settings(profile, _data_dir())
    serve_app(settings, host=host, port=port, api_key=api_key)


if __name__ == "__main__":
    app()
