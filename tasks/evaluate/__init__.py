"""Evaluate a fine-tune: which models it is compared with, their answers on the test split, scores.

The scoring is in two modules: ``metrics`` (CER, chrF, structure F1 by kind, text CER, the
bootstrap intervals, gap closed and the paired differences) and ``ceiling`` (the reference
without the markup plain text keeps no trace of: what a perfect model could write). This
module picks the models (:func:`models_to_compare`), has them answer (:func:`generate_answers`,
the Prefect task), scores the answers (:func:`score_answers`) and decides a promotion.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict

from backends import get_backend
from config.settings import EvaluateSettings, FinetuneSettings, OpenAISettings, Price, Settings
from core.chat_data import EvalExample, Message, chat_examples
from core.faithful import repair
from core.sample import spread
from core.tokens import count_tokens
from tasks.evaluate.ceiling import without_invisible
from tasks.evaluate.metrics import (
    F1_KEYS,
    SUMMARY_KEYS,
    Interval,
    Summary,
    bootstrap_interval,
    f1_interval,
    paired_difference,
    score_example,
    structure_by_kind,
)
from tasks.export import exported_split


@dataclass(frozen=True)
class ModelSpec:
    """A model that answers the test split: what its answers depend on, and only that.

    Not its role in the comparison (``models_to_compare`` names it): answers are cached per
    spec (:func:`generate_answers`), so the champion's are those it gave as the challenger.
    ``system`` replaces the examples' system message (one-shot models); a ``computed`` model
    carries the sha256 of the code that computes it (and of the train split it is counted
    from), so that its cached answers follow them.
    """

    backend: str  # "local", "openai" or "computed" (:data:`COMPUTED`)
    model_id: str
    system: str | None = None
    source_sha256: str | None = None
    train_sha256: str | None = None


class Runtime(BaseModel):
    """The settings answers depend on: the profile's backend, base model, threads, seed and
    openai section, and the price table; not the training hyperparameters (answers cached
    before a change of those are still right), never an API key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str  # the profile's; each ModelSpec names the backend it answers with
    base_model: str
    threads: int
    seed: int
    openai: OpenAISettings
    prices: dict[str, Price]

    @classmethod
    def of(cls, settings: Settings) -> Runtime:
        """The runtime of a run's settings."""
        f = settings.finetune
        return cls(
            backend=f.backend,
            base_model=f.base_model,
            threads=f.threads,
            seed=f.seed,
            openai=f.openai,
            prices=settings.export.prices,
        )

    def finetune(self, backend: str) -> FinetuneSettings:
        """Settings for a backend that answers (the training ones at their defaults: unread)."""
        return FinetuneSettings.model_validate(
            {
                "backend": backend,
                "base_model": self.base_model,
                "threads": self.threads,
                "seed": self.seed,
                "openai": self.openai,
            }
        )


class Answers(TypedDict):
    """One model's answers to the test examples (:func:`generate_answers`), and their cost."""

    answers: list[str]  # in the examples' order
    seconds: float  # wall time
    cpu_seconds: float  # of this process (a local model's generation; not a server's)
    output_tokens: int  # cl100k tokens of the answers
    cost_usd: float


class Decision(TypedDict):
    """Champion/challenger: promote the challenger or keep the champion, and why."""

    promote: bool
    reason: str
    cer_difference: Interval | None  # challenger - champion, paired (None: nothing to compare)


def read_test_examples(data_dir: str | Path, max_examples: int | None = None) -> list[EvalExample]:
    """The test split (``DATA/jsonl/test.jsonl``): at most ``max_examples`` of its chunks,
    spread evenly over it (the first N would come from a few articles)."""
    path = exported_split(data_dir, "test")
    examples = chat_examples(path)
    if not examples:
        raise ValueError(f"{path} holds no examples: the test split is empty")
    return spread(examples, max_examples)


def one_shot_system(system: str, example: EvalExample) -> str:
    """The seed's one-shot prompt: the system message plus one worked example."""
    return (
        f"{system}\n\nFor example, this plain text:\n\n{example['plain']}\n\n"
        f"is rendered as this markdown:\n\n{example['reference']}"
    )


def pick_one_shot(train: list[EvalExample]) -> EvalExample:
    """The train example of median length among those with markup (deterministic)."""
    marked = [e for e in train if e["reference"] != e["plain"]] or train
    ordered = sorted(marked, key=lambda e: (len(e["reference"]), e["reference"]))
    return ordered[(len(ordered) - 1) // 2]


def conversations(examples: list[EvalExample], system: str | None = None) -> list[list[Message]]:
    """Chat messages for each example: its system message (or ``system``) and its plain text."""
    return [
        [
            {"role": "system", "content": system or e["system"]},
            {"role": "user", "content": e["plain"]},
        ]
        for e in examples
    ]


def copy_text(text: str) -> str:
    """The identity model: the plain text as it is."""
    return text


# Models whose answers are computed, not generated: model id -> the example field it reads.
# "plain" models predict from the input like any model; the ceiling reads the reference.
COMPUTED = {"identity": "plain", "ceiling": "reference", "rules": "plain", "author_rules": "plain"}


def train_split(data_dir: str | Path) -> Path:
    """The train split the author's rules are counted from."""
    return Path(data_dir) / "jsonl" / "train.jsonl"


def computing_function(model_id: str, data_dir: str | Path | None = None) -> Callable[[str], str]:
    """The function that computes a computed model's answer from its input; the author's
    rules are counted from ``data_dir``'s train split first."""
    if model_id == "rules":
        from core.rules import rules_markdown  # the rule-based formatter, imported when used

        return rules_markdown
    if model_id == "author_rules":
        from core.author_rules import AuthorRules

        train = chat_examples(train_split(data_dir or "."))
        return AuthorRules.fit((e["plain"], e["reference"]) for e in train)
    return {"identity": copy_text, "ceiling": without_invisible}[model_id]


def computed_model(name: str, data_dir: str | Path | None = None) -> ModelSpec:
    """The spec of a computed model, with the sha256 of its function's module source (so
    cached answers follow a change of the code that computes them, not only of this task),
    and for the author's rules that of the train split they are counted from."""
    trained = name == "author_rules"  # counted from the train split: fitted only when used
    module_name = "core.author_rules" if trained else computing_function(name).__module__
    module = importlib.import_module(module_name)
    source = hashlib.sha256(inspect.getsource(module).encode()).hexdigest()
    train = (
        hashlib.sha256(train_split(data_dir or ".").read_bytes()).hexdigest() if trained else None
    )
    return ModelSpec("computed", name, source_sha256=source, train_sha256=train)


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def generate_answers(
    model: ModelSpec, examples: list[EvalExample], faithful: bool, runtime: Runtime, data_dir: str
) -> Answers:
    """A model's answers to the examples, with wall and CPU seconds and cost (cached per model).

    A ``computed`` model (:data:`COMPUTED`: identity, ceiling, rules) generates nothing: its
    answers are its function of each example's plain text (or reference, for the ceiling).
    Faithful mode repairs every answer predicted from the plain text.

    ``runtime``: the settings generation depends on (:class:`Runtime`).
    """
    logger = get_run_logger()
    wall, cpu = time.perf_counter(), time.process_time()
    cost = 0.0
    source = "plain"
    if model.backend == "computed":  # no generation: a function of the plain text or reference
        source = COMPUTED[model.model_id]
        compute = computing_function(model.model_id, data_dir)
        answers = [compute(e[source]) for e in examples]
    else:
        backend = get_backend(runtime.finetune(model.backend), data_dir, runtime.prices)
        chats = conversations(examples, model.system)

        def progress(done: int, total: int) -> None:
            logger.info("%s: %d/%d answers", model.model_id, done, total)

        answers = backend.complete(model.model_id, chats, progress=progress, faithful=faithful)
        if hasattr(backend, "usage_cost"):  # priced per token (the openai backend)
            cost = backend.usage_cost(model.model_id)
    if faithful and source == "plain":  # the ceiling's text is the reference's: nothing to repair
        answers = [repair(a, e["plain"]) for a, e in zip(answers, examples, strict=True)]
    return {
        "answers": answers,
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "output_tokens": sum(count_tokens(a) for a in answers),
        "cost_usd": cost,
    }


def score_answers(
    model_id: str, examples: list[EvalExample], run: Answers, evaluate: EvaluateSettings
) -> Summary:
    """Per-example scores and the model's summary row (means with bootstrap intervals; visible
    and invisible F1 micro over the examples, :func:`f1_interval`)."""
    scores = [
        score_example(a, e["reference"], e["plain"])
        for a, e in zip(run["answers"], examples, strict=True)
    ]
    bounds = {"samples": evaluate.bootstrap_samples, "confidence": evaluate.confidence}
    summary = {key: bootstrap_interval([s[key] for s in scores], **bounds) for key in SUMMARY_KEYS}
    f1s = {key: f1_interval(scores, kinds, **bounds) for key, kinds in F1_KEYS.items()}
    return {
        "model_id": model_id,
        **summary,
        **f1s,
        "seconds_per_example": run["seconds"] / len(examples),
        "output_tokens_per_s": run["output_tokens"] / run["seconds"] if run["seconds"] else None,
        "cpu_seconds": run["cpu_seconds"],
        "cost_usd": run.get("cost_usd", 0.0),
        "structure_by_kind": structure_by_kind(scores),
        "scores": scores,
    }


def decide_promotion(
    challenger: Summary, champion: Summary | None, *, samples: int = 2000, confidence: float = 0.95
) -> Decision:
    """Promote unless the challenger's CER is worse than the champion's beyond the interval.

    The test is paired on the same test examples: the interval of the per-example CER
    difference (challenger - champion). Worse means its low end is above 0.

    >>> better = {"model_id": "new", "scores": [{"cer": 0.1}, {"cer": 0.2}]}
    >>> worse = {"model_id": "old", "scores": [{"cer": 0.5}, {"cer": 0.6}]}
    >>> decide_promotion(better, worse)["promote"], decide_promotion(worse, better)["promote"]
    (True, False)
    >>> decide_promotion(better, None)["reason"]
    'no champion yet'
    """
    if champion is None:
        return {"promote": True, "reason": "no champion yet", "cer_difference": None}
    if champion["model_id"] == challenger["model_id"]:
        return {"promote": True, "reason": "the challenger is the champion", "cer_difference": None}
    diff = paired_difference(
        [s["cer"] for s in challenger["scores"]],
        [s["cer"] for s in champion["scores"]],
        samples=samples,
        confidence=confidence,
    )
    worse = diff["low"] > 0
    verdict = "worse than" if worse else "not worse than"
    reason = (
        f"{challenger['model_id']} is {verdict} {champion['model_id']}: CER difference "
        f"{diff['mean']:+.4f} ({confidence:.0%} interval {diff['low']:+.4f} to {diff['high']:+.4f})"
    )
    return {"promote": not worse, "reason": reason, "cer_difference": diff}


def break_even_articles(
    finetune_usd: float, article_usd_finetuned: float, article_usd_other: float
) -> float | None:
    """Articles after which fine-tuning has paid for itself against another model (None: never).

    >>> break_even_articles(4.0, 0.01, 0.05)  # $4 to train, saves 4 cents an article
    100.0
    >>> break_even_articles(0.0, 0.0, 0.0)
    0.0
    """
    if finetune_usd <= 0:
        return 0.0
    saving = article_usd_other - article_usd_finetuned
    return finetune_usd / saving if saving > 0 else None


def models_to_compare(
    challenger: str,
    champion: str | None,
    settings: Settings,
    one_shot: EvalExample | None,
    openai_available: bool = False,
) -> dict[str, ModelSpec]:
    """The models a run scores, by their names in the report: identity, the ceiling, the
    rules, the author's rules, base one-shot, the new model (finetuned), the champion, OpenAI.

    identity (the plain text), ceiling (the reference without its invisible markup), rules
    (``core.rules``) and, when there is a train split, the author's rules counted from it
    (``core.author_rules``) are computed (:data:`COMPUTED`), the others generate.

    ``evaluate.openai_models`` (one-shot, through the openai backend) only when
    ``openai_available`` (an API key, or a self-hosted ``finetune.openai.base_url``).
    """
    backend, system = settings.finetune.backend, settings.export.system_message
    models = {name: computed_model(name) for name in ("identity", "ceiling", "rules")}
    if one_shot is not None and train_split(settings.data_dir).is_file():
        models["author_rules"] = computed_model("author_rules", settings.data_dir)
    if settings.evaluate.one_shot_base and one_shot is not None:
        shot = one_shot_system(system, one_shot)
        models["base"] = ModelSpec(backend, settings.finetune.base_model, system=shot)
    models["finetuned"] = ModelSpec(backend, challenger)
    if champion and champion != challenger:
        models["champion"] = ModelSpec(backend, champion)
    if openai_available and one_shot is not None:
        for name in settings.evaluate.openai_models:
            models[name] = ModelSpec("openai", name, system=one_shot_system(system, one_shot))
    return models


def break_even_note(models: dict[str, Summary], finetune_usd: float, articles: float) -> str:
    """The seed's break-even figure for each priced model the fine-tune is compared with.

    ``articles``: how many articles the scored test chunks add up to.

    >>> models = {"finetuned": {"cost_usd": 0.0}, "gpt-4o": {"cost_usd": 0.02}}
    >>> break_even_note(models, 0.5, 1.0)  # 2 cents for the test chunks, which are 1 article
    'Against gpt-4o: the fine-tune ($0.50) pays for itself after 25 articles.'
    """
    articles = max(articles, 1e-9)
    own = models["finetuned"]["cost_usd"] / articles
    lines = []
    for name, model in models.items():
        if name.startswith(("finetuned", "identity")) or not model["cost_usd"]:
            continue
        after = break_even_articles(finetune_usd, own, model["cost_usd"] / articles)
        when = f"after {after:,.0f} articles" if after is not None else "never (it costs more)"
        lines.append(f"Against {name}: the fine-tune (${finetune_usd:.2f}) pays for itself {when}.")
    if not lines:
        return (
            "Every model here runs locally: $0 a chunk, and the fine-tune cost CPU time only, "
            "so it pays for itself at once."
        )
    return "\n".join(lines)
