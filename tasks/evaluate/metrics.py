"""Evaluate the model's Markdown against the author's: text, character and structure metrics.

Every metric compares a prediction (the Markdown the model wrote from an article's plain text)
with the reference (the author's Markdown), or with the plain text itself:

- :func:`cer` (from ``core.scores``): character error rate, Levenshtein distance over the
  reference's length;
- :func:`chrf`: sentence-level chrF (Popović 2015), as sacrebleu's ``sentence_chrf``;
- :func:`structure_f1`: F1 of the structural elements (headings, list items, code, ...);
- :func:`text_cer`: CER of the prediction's plain text against the input: the words the
  model dropped or invented, formatting apart.

>>> reference = "# Tools\\n\\nUse *small* tools:\\n\\n- one\\n- two\\n"
>>> prediction = "# Tools\\n\\nUse small tools:\\n\\n- one\\n- two\\n"
>>> plain = markdown_to_plain(reference)
>>> print(plain)
Tools
<BLANKLINE>
Use small tools:
<BLANKLINE>
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

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NotRequired

from markdown_it.token import Token
from typing_extensions import TypedDict

from core.intervals import Interval, bootstrap_interval, bootstrap_ratio, paired_difference
from core.markdown import MD, inline_plain, markdown_to_plain
from core.scores import cer

KINDS = (
    "heading",
    "list_item",
    "code_block",
    "blockquote",
    "emphasis",
    "strong",
    "code_inline",
    "table",
    "hr",
)
# The kinds whose trace survives in the plain text (a line of its own, indentation, cells) and
# those of which plain text keeps nothing: no model can recover the latter from the input.
VISIBLE_KINDS = ("heading", "list_item", "code_block", "blockquote", "table", "hr")
INVISIBLE_KINDS = ("emphasis", "strong", "code_inline")
SUMMARY_KEYS = ("cer", "chrf", "structure_f1", "text_cer")
F1_KEYS = {"visible_f1": VISIBLE_KINDS, "invisible_f1": INVISIBLE_KINDS}

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
Counts = tuple[int, int, int]  # (matched, predicted, reference) elements


# --- the records: plain dicts at run time (metrics.json, Prefect results), named in signatures


class Score(TypedDict):
    """Every metric of one answer (:func:`score_example`)."""

    cer: float
    chrf: float
    structure_f1: float  # overall (micro over the kinds)
    text_cer: float
    visible_f1: float
    invisible_f1: float
    structure: dict[str, float | None]  # F1 by kind (None: neither side has any)
    structure_counts: dict[str, Counts]  # by kind


class KindF1(TypedDict):
    """Micro F1 of one element kind over the examples, and how many the references hold."""

    f1: float | None
    reference: int


class Summary(TypedDict):
    """One model's scores on the test split: means with intervals, speed, cost, the scores."""

    model_id: str
    cer: Interval
    chrf: Interval
    structure_f1: Interval
    text_cer: Interval
    visible_f1: Interval
    invisible_f1: Interval
    seconds_per_example: float
    output_tokens_per_s: float | None
    cpu_seconds: float
    cost_usd: float
    structure_by_kind: dict[str, KindF1]
    scores: list[Score]
    gap_closed: NotRequired[Interval]  # :func:`with_gap_closed` adds it


class Paired(TypedDict):
    """The paired CER difference of a model and a baseline (below 0: the model is better)."""

    model: str
    against: str
    mean: float | None
    low: float | None
    high: float | None


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
        elif token.type == "hr":
            elements[("hr", "", "")] += 1
        elif token.type == "html_block":
            text = token.content
        elif token.type == "inline":
            text = inline_plain(token)
            elements.update(inline_elements(token))
        if text is not None:
            for _, _, parts in open_blocks:
                parts.append(text)
    return elements


def structure_counts(prediction: str, reference: str) -> dict[str, Counts]:
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


def group_counts(counts: dict[str, Counts], kinds: Sequence[str]) -> Counts:
    """(matched, predicted, reference) summed over some kinds."""
    return tuple(sum(counts[kind][i] for kind in kinds) for i in range(3))  # type: ignore[return-value]


def group_f1(counts: dict[str, Counts], kinds: Sequence[str]) -> float:
    """Micro F1 over some kinds of :func:`structure_counts`; 1.0 if neither side has any.

    >>> counts = structure_counts("## A\\n\\n- b\\n\\n*c*", "## A\\n\\n- x\\n\\nc")
    >>> group_f1(counts, VISIBLE_KINDS), group_f1(counts, INVISIBLE_KINDS)
    (0.5, 0.0)
    """
    score = f1(*group_counts(counts, kinds))
    return 1.0 if score is None else score


def text_cer(prediction: str, plain: str) -> float:
    """CER of the prediction's plain text against the plain input: text dropped or invented."""
    return cer(markdown_to_plain(prediction), plain)


def score_example(prediction: str, reference: str, plain: str) -> Score:
    """All metrics of one prediction: cer, chrf, structure_f1 (overall), text_cer, visible_f1
    and invisible_f1 (micro F1 over :data:`VISIBLE_KINDS` / :data:`INVISIBLE_KINDS`, 1.0 when
    neither side has any), structure (F1 per kind) and structure_counts ((matched, predicted,
    reference) per kind)."""
    structure = structure_f1(prediction, reference)
    counts = structure_counts(prediction, reference)
    return {
        "cer": cer(prediction, reference),
        "chrf": chrf(prediction, reference),
        "structure_f1": structure["overall"],
        "text_cer": text_cer(prediction, plain),
        **{key: group_f1(counts, kinds) for key, kinds in F1_KEYS.items()},
        "structure": {kind: structure[kind] for kind in KINDS},
        "structure_counts": counts,
    }


def structure_by_kind(scores: list[Score]) -> dict[str, KindF1]:
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


def summarize_scores(scores: list[Score]) -> dict[str, Interval]:
    """Bootstrap interval of each of cer, chrf, structure_f1 and text_cer over the examples."""
    return {key: bootstrap_interval([score[key] for score in scores]) for key in SUMMARY_KEYS}


def f1_interval(scores: list[Score], kinds: Sequence[str], **bounds) -> Interval:
    """Micro F1 over ``kinds`` and the examples (pooled counts), with a bootstrap interval.

    2·matched / (predicted + reference), all summed over the examples: an example weighs by
    its number of elements, and examples without any count for nothing (1.0 if none has any,
    as :func:`structure_f1`'s "overall").
    """
    counts = [group_counts(score["structure_counts"], kinds) for score in scores]
    return bootstrap_ratio(
        [2 * matched for matched, _, _ in counts],
        [predicted + expected for _, predicted, expected in counts],
        empty=1.0,
        **bounds,
    )


def gap_closed(
    model: Sequence[float], identity: Sequence[float], ceiling: Sequence[float], **bounds
) -> Interval:
    """Share of the recoverable CER gap a model closes, with a paired bootstrap interval.

    (CER identity - CER model) / (CER identity - CER ceiling), each CER the mean over the same
    chunks: a ratio of means (not a mean of per-chunk ratios), so a chunk weighs by its own
    gap. 0 is "did nothing" (identity copies the input), 1 is "perfect" (the ceiling: the
    reference without its invisible markup); it is below 0 for a model that harms the text.
    The interval resamples the chunk indices once per bootstrap sample, for all three models
    (:func:`bootstrap_ratio`). No gap at all (every value None): nothing to close.

    >>> gap = gap_closed([0.1, 0.4], identity=[0.2, 0.4], ceiling=[0.0, 0.0], samples=500)
    >>> round(gap["mean"], 4)  # 0.1 / 0.6, where the mean of per-chunk ratios would be 0.25
    0.1667
    """
    if not len(model) == len(identity) == len(ceiling):
        raise ValueError("gap_closed: the models' CERs must be on the same chunks")
    return bootstrap_ratio(
        [i - m for i, m in zip(identity, model, strict=True)],
        [i - c for i, c in zip(identity, ceiling, strict=True)],
        **bounds,
    )


def with_gap_closed(models: dict[str, Summary], **bounds) -> dict[str, Summary]:
    """Every scored model with its ``gap_closed`` (against the ``identity`` and ``ceiling``)."""
    identity = [s["cer"] for s in models["identity"]["scores"]]
    ceiling = [s["cer"] for s in models["ceiling"]["scores"]]
    return {
        name: {
            **m,
            "gap_closed": gap_closed([s["cer"] for s in m["scores"]], identity, ceiling, **bounds),
        }
        for name, m in models.items()
    }


PAIRED_BASELINES = ("identity", "base", "rules", "author_rules")


def paired_comparisons(
    models: dict[str, Summary], model: str = "finetuned", **bounds
) -> list[Paired]:
    """The paired CER difference of ``model`` and each baseline it must beat (below 0: better).

    >>> models = {"finetuned": {"scores": [{"cer": 0.25}, {"cer": 0.5}]},
    ...           "identity": {"scores": [{"cer": 0.5}, {"cer": 0.75}]}}
    >>> paired_comparisons(models, samples=100)
    [{'model': 'finetuned', 'against': 'identity', 'mean': -0.25, 'low': -0.25, 'high': -0.25}]
    """
    if model not in models:
        return []
    cers = [s["cer"] for s in models[model]["scores"]]
    return [
        {"model": model, "against": other}
        | paired_difference(cers, [s["cer"] for s in models[other]["scores"]], **bounds)
        for other in PAIRED_BASELINES
        if other in models and other != model
    ]
