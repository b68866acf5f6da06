"""Evaluate flow: score the fine-tuned model against identity, the base model and the champion.

Every model answers the test split (``DATA/jsonl/test.jsonl``) in faithful mode (and raw,
as ``<name>_raw``); the scores, a report and charts land in ``DATA/reports/<run id>/``.
Three models are computed, not generated: identity (the plain text), rules (a rule-based
formatter) and the ceiling (the reference without the markup plain text keeps no trace of);
each model's gap closed is measured between identity (0) and the ceiling (1). With
``promote=True`` (the retrain flow) the new model becomes current only if it is not worse
than the champion, and the run is recorded in ``DATA/parquet/runs.parquet``.

The models' answers are generated in parallel on the task runner that ``runner.task_runner``
chooses (``flows/runner.py``); on one machine, local models still generate one after the other
(torch already uses every core), while the computed models and API models run alongside.

python flows/evaluate.py [MODEL_ID]
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger

from backends.openai import is_openai
from config.settings import Settings, load_settings
from core.chat_data import EvalExample, chat_examples
from core.runs import RunFolder, current_model, file_sha256, model_to_use, set_current_model
from flows.runner import Backend, fan_out, flow_settings, in_data_dir, one_machine
from tasks.evaluate import (
    Answers,
    Decision,
    ModelSpec,
    Runtime,
    break_even_note,
    decide_promotion,
    generate_answers,
    models_to_compare,
    pick_one_shot,
    read_test_examples,
    score_answers,
)
from tasks.evaluate.metrics import Summary, paired_comparisons, with_gap_closed
from tasks.report import EvaluationReport, publish_evaluation, write_report
from tasks.store import RunRow, read_examples, record_run


class Evaluation(EvaluationReport):
    """The evaluate flow's result: the report, and the folder it was written to."""

    report_dir: str


@flow(name="evaluate")
def evaluate(
    profile: str = "default",
    data_dir: str | None = None,
    model_id: str | None = None,
    promote: bool = False,
    loss_png: str | None = None,
    backend: Backend | None = None,
) -> Evaluation:
    """Score ``model_id`` (default: the current model) and the models it is compared with.

    Args:
        profile: A settings profile: a name in config/profiles/ or the path of a YAML file.
        data_dir: Where everything goes (none: PGPT_DATA_DIR, else ./data).
        model_id: The model to score (none: the current model, models/current.json).
        promote: Make it the current model if it is not worse than the champion.
        loss_png: Its loss curve, for the report (the retrain flow passes it).
        backend: The backend the model is on, "local" or "openai" (none: the profile's).
    """
    settings = flow_settings(profile, data_dir, backend)
    data = str(settings.data_dir)
    jsonl = Path(data) / "jsonl"
    champion = current_model(data)
    challenger = model_to_use(data, model_id)
    examples = read_test_examples(data, settings.evaluate.max_examples)
    train = chat_examples(jsonl / "train.jsonl") if (jsonl / "train.jsonl").exists() else []
    one_shot = pick_one_shot(train) if train else None
    openai = settings.finetune.openai
    has_key = bool(openai.api_key_secret or os.environ.get(openai.api_key_env))
    openai_available = has_key or not is_openai(openai.base_url)
    compared = models_to_compare(challenger, champion, settings, one_shot, openai_available)
    runs = generate_all(compared, examples, Runtime.of(settings), settings)
    models: dict[str, Summary] = {}
    answers: dict[str, list[str]] = {}
    for name, (model, run) in runs.items():
        models[name] = score_answers(model.model_id, examples, run, settings.evaluate)
        answers[name] = run["answers"]
    bounds = {
        "samples": settings.evaluate.bootstrap_samples,
        "confidence": settings.evaluate.confidence,
    }
    models = with_gap_closed(models, **bounds)
    decision: Decision | None = None
    if promote:
        decision = decide_promotion(
            models["finetuned"],
            models.get("champion"),
            samples=settings.evaluate.bootstrap_samples,
            confidence=settings.evaluate.confidence,
        )
        get_run_logger().info("champion/challenger: %s", decision["reason"])
        if decision["promote"]:
            set_current_model(data, challenger)
    now = datetime.now(UTC)
    report: EvaluationReport = {
        "run_id": f"{now:%Y%m%d-%H%M%S}-{RunFolder.of(data, challenger).path.name[-12:]}",
        "created_at": now.isoformat(),
        "examples": len(examples),
        "data_sha256": file_sha256(jsonl / "test.jsonl"),
        "decision": decision,
        "loss_png": loss_png,
        "worst_examples": settings.evaluate.worst_examples,
        "break_even": break_even_note(
            models, finetune_cost(data, challenger), articles_in_test(data, len(examples))
        ),
        "models": models,
        "paired_cer": paired_comparisons(models, **bounds),
    }
    report_dir = write_report(report, examples, answers, data)
    publish_evaluation(report, report_dir)
    if promote:
        record_run(run_row(report, report_dir, challenger, champion), data)
    return {**report, "report_dir": report_dir}


def generate_all(
    compared: dict[str, ModelSpec],
    examples: list[EvalExample],
    runtime: Runtime,
    settings: Settings,
) -> dict[str, tuple[ModelSpec, Answers]]:
    """Every model's answers, faithful (and raw): ``{name: (model, generate_answers run)}``.

    Each (model, mode) is one cached ``generate_answers`` task, submitted to the task runner;
    on one machine each local model waits for the previous one (``wait_for``).
    """
    generate = in_data_dir(generate_answers, settings.data_dir)
    serial = one_machine(settings.runner)
    futures, previous_local = {}, None
    with fan_out(settings.runner) as runner:
        for role, model in compared.items():
            raw = settings.evaluate.raw and model.backend != "computed"
            for faithful in [True, False] if raw else [True]:
                name = role if faithful else f"{role}_raw"
                parameters = {
                    "model": model,  # cached by model, not role: the spec holds no name
                    "examples": examples,
                    "faithful": faithful,
                    "runtime": runtime,
                    "data_dir": str(settings.data_dir),
                }
                local = model.backend == "local"
                wait_for = [previous_local] if serial and local and previous_local else None
                futures[name] = (model, runner.submit(generate, parameters, wait_for=wait_for))
                if local:
                    previous_local = futures[name][1]
        return {name: (model, future.result()) for name, (model, future) in futures.items()}


def finetune_cost(data_dir: str, model_id: str) -> float:
    """What fine-tuning ``model_id`` cost in USD (its model.json; local fine-tunes: 0)."""
    return RunFolder.of(data_dir, model_id).read_model().get("cost_usd") or 0.0


def articles_in_test(data_dir: str, chunks: int) -> float:
    """How many articles ``chunks`` test chunks add up to (from examples.parquet)."""
    test = [e for e in read_examples(data_dir) if e["split"] == "test"]
    per_article = len(test) / max(1, len({e["article_id"] for e in test}))
    return chunks / per_article if test else 1.0


def run_row(
    report: EvaluationReport, report_dir: str, challenger: str, champion: str | None
) -> RunRow:
    """The runs.parquet row of a champion/challenger run."""
    new, decision = report["models"]["finetuned"], report["decision"]
    old = report["models"].get("champion")
    return {
        "run_id": report["run_id"],
        "created_at": report["created_at"],
        "data_sha256": report["data_sha256"],
        "model_id": challenger,
        "champion_id": champion,
        "examples": report["examples"],
        "cer": new["cer"]["mean"],
        "cer_low": new["cer"]["low"],
        "cer_high": new["cer"]["high"],
        "chrf": new["chrf"]["mean"],
        "structure_f1": new["structure_f1"]["mean"],
        "text_cer": new["text_cer"]["mean"],
        "champion_cer": old["cer"]["mean"] if old else None,
        "promoted": decision["promote"],
        "reason": decision["reason"],
        "report": report_dir,
    }


if __name__ == "__main__":
    from config.runtime import results_in

    with results_in(load_settings().data_dir):
        evaluate(model_id=sys.argv[1] if len(sys.argv) > 1 else None)
