"""Evaluate the model's Markdown against the author's: text, character and structure metrics.

Every metric compares a prediction (the Markdown the model wrote from an article's plain text)
with the reference (the author's Markdown), or with the plain text itself:

- :func:`cer`: character error rate, Levenshtein distance over the reference's length;
- :func:`chrf`: sentence-level chrF (Popović 2015), as sacrebleu's ``sentence_chrf``;
- :func:`structure_f1`: F1 of the structural elements (headings, list items, code, ...);
- :func:`text_cer`: CER of the prediction's plain text against the input: the words the
  model dropped or invented, formatting apart.

>>> reference = "# Tools\\n\\nUse *small* tools:\\n\\n- one\\n- two\\n"
>>> prediction = "# Tools\\n\\nUse small tools:\\n\\n- one\\n- two\\n"
>>> plain = markdown_to_plain(reference)
>>> print(plain)
Tools
Use small tools:
one
two
>>> cer(prediction, reference)  # two asterisks missing, of 41 characters
0.04878048780487805
>>> round(chrf(prediction, reference), 4)  # short texts: each edit spoils many n-grams
0.7475
>>> structure_f1(prediction, reference)["emphasis"], structure_f1(prediction, reference)["heading"]
(0.0, 1.0)
>>> structure_f1(prediction, reference)["overall"]  # 3 of 4 elements found, none invented
0.8571428571428571
>>> text_cer(prediction, plain)  # no word dropped
0.0
>>> summary = summarize_scores([score_example(prediction, reference, plain)] * 3)
>>> {bound: round(value, 4) for bound, value in summary["cer"].items()}
{'mean': 0.0488, 'low': 0.0488, 'high': 0.0488}
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from markdown_it.token import Token
from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from rapidfuzz.distance import Levenshtein

from backends import get_backend
from tasks.clean import MD, inline_plain, markdown_to_plain
from tasks.export import read_jsonl
from tasks.faithful import repair
from tasks.tokens import count_tokens

# ---------------------------------------------------------------------------------------------
# Metrics

KINDS = (
    "heading",
    "list_item",
    "code_block",
    "blockquote",
    "emphasis",
    "strong",
    "code_inline",
    "table",
)
SUMMARY_KEYS = ("cer", "chrf", "structure_f1", "text_cer")

# Block tokens that open / close an element whose text is that of everything inside it.
BLOCK_OPENERS = {
    "heading_open": "heading",
    "list_item_open": "list_item",
    "blockquote_open": "blockquote",
    "table_open": "table",
}
BLOCK_CLOSERS = {"heading_close", "list_item_close", "blockquote_close", "table_close"}
INLINE_OPENERS = {"em_open": "emphasis", "strong_open": "strong"}
INLINE_CLOSERS = {"em_close", "strong_close"}

Element = tuple[str, str, str]  # (kind, detail, text)


def cer(prediction: str, reference: str) -> float:
    """Levenshtein distance over the reference's length (an empty reference counts as 1)."""
    return Levenshtein.distance(prediction, reference) / max(1, len(reference))


def char_ngrams(text: str, order: int) -> list[Counter[str]]:
    """Character n-gram counts for n = 1..order, whitespace removed (as sacrebleu does)."""
    text = "".join(text.split())
    return [Counter(text[i : i + n] for i in range(len(text) - n + 1)) for n in range(1, order + 1)]


def chrf(prediction: str, reference: str, *, order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF in [0, 1]: F-beta of n-gram precision and recall averaged over n.

    As sacrebleu (2.x, no epsilon smoothing) does, only the orders n for which both strings
    have n-grams are averaged ("effective order"), so a short but exact prediction scores 1;
    and when no order is effective (either string empty or blank) the score is 0, even for
    two empty strings.
    """
    precision = recall = 0.0
    effective = 0
    for hyp, ref in zip(char_ngrams(prediction, order), char_ngrams(reference, order), strict=True):
        n_hyp, n_ref = hyp.total(), ref.total()
        if n_hyp and n_ref:
            matched = (hyp & ref).total()
            precision += matched / n_hyp
            recall += matched / n_ref
            effective += 1
    if not effective:
        return 0.0
    precision, recall = precision / effective, recall / effective
    if not precision + recall:
        return 0.0
    factor = beta**2
    return (1 + factor) * precision * recall / (factor * precision + recall)


def collapse(text: str) -> str:
    """Whitespace runs -> one space, stripped."""
    return " ".join(text.split())


def block_detail(token: Token, lists: list[str]) -> str:
    """The detail of a block element: "h2" for a heading, the list type for a list item."""
    if token.type == "heading_open":
        return token.tag
    if token.type == "list_item_open":
        return lists[-1]
    return ""


def code_language(token: Token) -> str:
    """The language of a code block: the first word of a fence's info string ("" if none)."""
    words = token.info.split()
    return words[0] if words else ""


def joined(kind: str, parts: list[str]) -> str:
    """An element's text from its parts: table cells joined by " | ", others by spaces."""
    if kind == "table":
        return " | ".join(collapse(part) for part in parts)
    return collapse(" ".join(parts))


def inline_elements(token: Token) -> Iterable[Element]:
    """Emphasis, strong and code spans of an inline token, with the text inside each."""
    stack: list[tuple[str, list[str]]] = []
    for child in token.children or []:
        if child.type in INLINE_OPENERS:
            stack.append((INLINE_OPENERS[child.type], []))
        elif child.type in INLINE_CLOSERS and stack:
            kind, parts = stack.pop()
            yield (kind, "", collapse("".join(parts)))
        elif child.type in ("text", "code_inline", "html_inline", "softbreak", "hardbreak"):
            text = child.content if child.type not in ("softbreak", "hardbreak") else " "
            for _, parts in stack:
                parts.append(text)
            if child.type == "code_inline":
                yield ("code_inline", "", child.content.strip())


def structure_elements(markdown: str) -> Counter[Element]:
    """The multiset of ``(kind, detail, text)`` structural elements of a Markdown document.

    A list item, quote or table's text is that of all its contents (nested lists included);
    a table's is its cells in reading order joined by " | "; a code block's its content,
    stripped but not collapsed, and its detail the language.

    >>> sorted(structure_elements("## Hi *there*\\n\\n1. `x`\\n\\n```py\\nx = 1\\n```"))
    ... # doctest: +NORMALIZE_WHITESPACE
    [('code_block', 'py', 'x = 1'), ('code_inline', '', 'x'), ('emphasis', '', 'there'),
     ('heading', 'h2', 'Hi there'), ('list_item', 'ordered', 'x')]
    """
    elements: Counter[Element] = Counter()
    lists: list[str] = []
    open_blocks: list[tuple[str, str, list[str]]] = []
    for token in MD.parse(markdown):
        text: str | None = None
        if token.type in ("bullet_list_open", "ordered_list_open"):
            lists.append("ordered" if token.type == "ordered_list_open" else "bullet")
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif token.type in BLOCK_OPENERS:
            open_blocks.append((BLOCK_OPENERS[token.type], block_detail(token, lists), []))
        elif token.type in BLOCK_CLOSERS:
            kind, detail, parts = open_blocks.pop()
            elements[(kind, detail, joined(kind, parts))] += 1
        elif token.type in ("fence", "code_block"):
            text = token.content
            elements[("code_block", code_language(token), text.strip())] += 1
        elif token.type == "html_block":
            text = token.content
        elif token.type == "inline":
            text = inline_plain(token)
            elements.update(inline_elements(token))
        if text is not None:
            for _, _, parts in open_blocks:
                parts.append(text)
    return elements


def structure_counts(prediction: str, reference: str) -> dict[str, tuple[int, int, int]]:
    """(matched, predicted, reference) element counts per kind; matched is a multiset meet."""
    predicted, expected = structure_elements(prediction), structure_elements(reference)
    matched = predicted & expected
    return {
        kind: (
            sum(n for (k, _, _), n in matched.items() if k == kind),
            sum(n for (k, _, _), n in predicted.items() if k == kind),
            sum(n for (k, _, _), n in expected.items() if k == kind),
        )
        for kind in KINDS
    }


def f1(matched: int, predicted: int, expected: int) -> float | None:
    """2·matched / (predicted + expected), or None when there is nothing on either side."""
    total = predicted + expected
    return 2 * matched / total if total else None


def structure_f1(prediction: str, reference: str) -> dict[str, float | None]:
    """F1 of the structural elements per kind (None if neither has any), and "overall" (micro).

    "overall" is 1.0 when neither document has any structural element at all.
    """
    counts = structure_counts(prediction, reference)
    scores: dict[str, float | None] = {kind: f1(*counts[kind]) for kind in KINDS}
    totals = [sum(column) for column in zip(*counts.values(), strict=True)]
    overall = f1(*totals)
    scores["overall"] = 1.0 if overall is None else overall
    return scores


def text_cer(prediction: str, plain: str) -> float:
    """CER of the prediction's plain text against the plain input: text dropped or invented."""
    return cer(markdown_to_plain(prediction), plain)


def score_example(prediction: str, reference: str, plain: str) -> dict:
    """All metrics of one prediction: cer, chrf, structure_f1 (overall), text_cer, structure
    (F1 per kind) and structure_counts ((matched, predicted, reference) per kind)."""
    structure = structure_f1(prediction, reference)
    return {
        "cer": cer(prediction, reference),
        "chrf": chrf(prediction, reference),
        "structure_f1": structure["overall"],
        "text_cer": text_cer(prediction, plain),
        "structure": {kind: structure[kind] for kind in KINDS},
        "structure_counts": structure_counts(prediction, reference),
    }


def structure_by_kind(scores: list[dict]) -> dict[str, dict]:
    """Micro F1 per element kind over many examples, with the kind's reference count.

    Only kinds that occur in a reference or a prediction are listed.

    >>> pairs = [("# A\\n\\n*b*", "# A\\n\\nb"), ("- x", "- x\\n- y")]
    >>> by_kind = structure_by_kind([score_example(p, r, "") for p, r in pairs])
    >>> {kind: (round(v["f1"], 3), v["reference"]) for kind, v in by_kind.items()}
    {'heading': (1.0, 1), 'list_item': (0.667, 2), 'emphasis': (0.0, 0)}
    """
    totals = {kind: [0, 0, 0] for kind in KINDS}
    for score in scores:
        for kind, counts in score["structure_counts"].items():
            totals[kind] = [a + b for a, b in zip(totals[kind], counts, strict=True)]
    return {
        kind: {"f1": f1(*counts), "reference": counts[2]}
        for kind, counts in totals.items()
        if counts[1] or counts[2]
    }


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (exactly rounded sum)."""
    return math.fsum(values) / len(values)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, linearly interpolated."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def bootstrap_interval(
    values: Sequence[float | None],
    *,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Mean and percentile-bootstrap confidence interval of the values (None values skipped).

    The interval is widened to contain the mean if resampling noise ever leaves it outside.

    >>> bootstrap_interval([0.0, 1.0, None], samples=500)
    {'mean': 0.5, 'low': 0.0, 'high': 1.0}
    """
    kept = [value for value in values if value is not None]
    if not kept:
        raise ValueError("bootstrap_interval: no values to summarize (empty or all None)")
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap_interval: bad samples={samples} or confidence={confidence}")
    centre = mean(kept)
    if len(kept) == 1:
        return {"mean": centre, "low": centre, "high": centre}
    rng = random.Random(seed)
    means = sorted(mean(rng.choices(kept, k=len(kept))) for _ in range(samples))
    tail = (1 - confidence) / 2
    return {
        "mean": centre,
        "low": min(centre, percentile(means, tail)),
        "high": max(centre, percentile(means, 1 - tail)),
    }


def summarize_scores(scores: list[dict]) -> dict[str, dict[str, float]]:
    """Bootstrap interval of each of cer, chrf, structure_f1 and text_cer over the examples."""
    return {key: bootstrap_interval([score[key] for score in scores]) for key in SUMMARY_KEYS}


# ---------------------------------------------------------------------------------------------
# Evaluation runs: which models, their answers on the test split, their scores


def read_chat_jsonl(path: str | Path) -> list[dict]:
    """Examples of a chat JSONL file as ``{"system", "plain", "reference"}``."""
    examples = []
    for row in read_jsonl(path):
        system, user, assistant = row["messages"][:3]
        examples.append(
            {
                "system": system["content"],
                "plain": user["content"],
                "reference": assistant["content"],
            }
        )
    return examples


def read_test_examples(jsonl_dir: str | Path, max_examples: int | None = None) -> list[dict]:
    """The test split (``test.jsonl``), at most ``max_examples`` of it."""
    path = Path(jsonl_dir) / "test.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `pgpt export` first")
    examples = read_chat_jsonl(path)
    if not examples:
        raise ValueError(f"{path} holds no examples: the test split is empty")
    return examples[:max_examples] if max_examples else examples


def one_shot_system(system: str, example: dict) -> str:
    """The seed's one-shot prompt: the system message plus one worked example."""
    return (
        f"{system}\n\nFor example, this plain text:\n\n{example['plain']}\n\n"
        f"is rendered as this markdown:\n\n{example['reference']}"
    )


def pick_one_shot(train: list[dict]) -> dict:
    """The train example of median length among those with markup (deterministic)."""
    marked = [e for e in train if e["reference"] != e["plain"]] or train
    ordered = sorted(marked, key=lambda e: (len(e["reference"]), e["reference"]))
    return ordered[(len(ordered) - 1) // 2]


def conversations(examples: list[dict], system: str | None = None) -> list[list[dict]]:
    """Chat messages for each example: its system message (or ``system``) and its plain text."""
    return [
        [
            {"role": "system", "content": system or e["system"]},
            {"role": "user", "content": e["plain"]},
        ]
        for e in examples
    ]


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def generate_answers(
    model: dict, examples: list[dict], faithful: bool, runtime: dict, data_dir: str
) -> dict:
    """A model's answers to the examples, with wall and CPU seconds and cost (cached per model).

    ``runtime``: the settings generation depends on (backend, base_model, threads, seed, the
    openai section, the price table), never an API key.
    """
    logger = get_run_logger()
    wall, cpu = time.perf_counter(), time.process_time()
    cost = 0.0
    if model["backend"] == "identity":
        answers = [e["plain"] for e in examples]
    else:
        settings = {k: v for k, v in runtime.items() if k != "prices"}
        backend = get_backend(
            {**settings, "backend": model["backend"]}, data_dir, runtime.get("prices")
        )
        chats = conversations(examples, model.get("system"))

        def progress(done: int, total: int) -> None:
            logger.info("%s: %d/%d answers", model["model_id"], done, total)

        answers = backend.complete(model["model_id"], chats, progress=progress, faithful=faithful)
        if hasattr(backend, "usage_cost"):  # priced per token (the openai backend)
            cost = backend.usage_cost(model["model_id"])
    if faithful:
        answers = [repair(a, e["plain"]) for a, e in zip(answers, examples, strict=True)]
    return {
        "answers": answers,
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "output_tokens": sum(count_tokens(a) for a in answers),
        "cost_usd": cost,
    }


def score_answers(model: dict, examples: list[dict], run: dict, evaluate: dict) -> dict:
    """Per-example scores and the model's summary row (means with bootstrap intervals)."""
    scores = [
        score_example(a, e["reference"], e["plain"])
        for a, e in zip(run["answers"], examples, strict=True)
    ]
    bounds = {"samples": evaluate["bootstrap_samples"], "confidence": evaluate["confidence"]}
    summary = {key: bootstrap_interval([s[key] for s in scores], **bounds) for key in SUMMARY_KEYS}
    return {
        "model_id": model["model_id"],
        **summary,
        "seconds_per_example": run["seconds"] / len(examples),
        "output_tokens_per_s": run["output_tokens"] / run["seconds"] if run["seconds"] else None,
        "cpu_seconds": run["cpu_seconds"],
        "cost_usd": run.get("cost_usd", 0.0),
        "structure_by_kind": structure_by_kind(scores),
        "scores": scores,
    }


def paired_difference(
    challenger: list[float], champion: list[float], *, samples: int = 2000, confidence: float = 0.95
) -> dict:
    """Mean of challenger - champion per example, with a bootstrap interval (paired)."""
    diffs = [a - b for a, b in zip(challenger, champion, strict=True)]
    return bootstrap_interval(diffs, samples=samples, confidence=confidence)


def decide_promotion(
    challenger: dict, champion: dict | None, *, samples: int = 2000, confidence: float = 0.95
) -> dict:
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
    settings: dict,
    one_shot: dict | None,
    openai_available: bool = False,
) -> list[dict]:
    """The models a run scores: identity, base one-shot, the new model, the champion, OpenAI.

    ``evaluate.openai_models`` (one-shot, through the openai backend) only when
    ``openai_available`` (an API key, or a self-hosted ``finetune.openai.base_url``).
    """
    finetune, evaluate = settings["finetune"], settings["evaluate"]
    system = settings["export"]["system_message"]
    models = [{"name": "identity", "backend": "identity", "model_id": "identity"}]
    if evaluate["one_shot_base"] and one_shot is not None:
        models.append(
            {
                "name": "base",
                "backend": finetune["backend"],
                "model_id": finetune["base_model"],
                "system": one_shot_system(system, one_shot),
            }
        )
    models.append({"name": "finetuned", "backend": finetune["backend"], "model_id": challenger})
    if champion and champion != challenger:
        models.append({"name": "champion", "backend": finetune["backend"], "model_id": champion})
    if openai_available and one_shot is not None:
        for name in evaluate["openai_models"]:
            models.append(
                {
                    "name": name,
                    "backend": "openai",
                    "model_id": name,
                    "system": one_shot_system(system, one_shot),
                }
            )
    return models


def break_even_note(models: dict[str, dict], finetune_usd: float, articles: float) -> str:
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
