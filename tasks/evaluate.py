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

import hashlib
import importlib
import inspect
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.rules_inline import backtick, emphasis, link
from markdown_it.rules_inline.state_inline import StateInline
from markdown_it.token import Token
from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from rapidfuzz.distance import Levenshtein

from backends import get_backend
from core.chat_data import read_jsonl
from core.faithful import repair
from core.inline import escape_line_start, escape_text
from core.markdown import MD, inline_plain, markdown_to_plain
from core.sample import spread
from core.tokens import count_tokens
from tasks.export import exported_split

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


def group_counts(
    counts: dict[str, tuple[int, int, int]], kinds: Sequence[str]
) -> tuple[int, int, int]:
    """(matched, predicted, reference) summed over some kinds."""
    return tuple(sum(counts[kind][i] for kind in kinds) for i in range(3))  # type: ignore[return-value]


def group_f1(counts: dict[str, tuple[int, int, int]], kinds: Sequence[str]) -> float:
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


def score_example(prediction: str, reference: str, plain: str) -> dict:
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


def bootstrap_ratio(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    empty: float | None = None,
) -> dict[str, float | None]:
    """Ratio of means ``sum(numerators) / sum(denominators)`` with a paired bootstrap interval.

    The ratio of the means over the examples, not the mean of per-example ratios: an example
    weighs by its denominator. Each bootstrap sample draws the example indices once and takes
    the ratio of the resampled sums, so an example's numerator and denominator stay together
    (paired). A resample whose denominator is not positive has no ratio and is left out; when
    the whole sample's is not, every bound is ``empty``. The interval is widened to contain
    the ratio.

    >>> bootstrap_ratio([1.0, 0.0], [2.0, 2.0], samples=500)  # 1/4, resampled: 0, 1/4, 1/2
    {'mean': 0.25, 'low': 0.0, 'high': 0.5}
    >>> bootstrap_ratio([0.0], [0.0], empty=1.0)
    {'mean': 1.0, 'low': 1.0, 'high': 1.0}
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("bootstrap_ratio: numerators and denominators: same length, not empty")
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ratio: bad samples={samples} or confidence={confidence}")

    def ratio(indices: Iterable[int]) -> float | None:
        picked = list(indices)
        den = math.fsum(denominators[i] for i in picked)
        return math.fsum(numerators[i] for i in picked) / den if den > 0 else None

    n = len(numerators)
    centre = ratio(range(n))
    if centre is None:
        return {"mean": empty, "low": empty, "high": empty}
    rng = random.Random(seed)
    resampled = (ratio(rng.choices(range(n), k=n)) for _ in range(samples))
    ratios = sorted(r for r in resampled if r is not None)
    if n == 1 or not ratios:
        return {"mean": centre, "low": centre, "high": centre}
    tail = (1 - confidence) / 2
    return {
        "mean": centre,
        "low": min(centre, percentile(ratios, tail)),
        "high": max(centre, percentile(ratios, 1 - tail)),
    }


def f1_interval(scores: list[dict], kinds: Sequence[str], **bounds) -> dict[str, float | None]:
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
) -> dict[str, float | None]:
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


def with_gap_closed(models: dict[str, dict], **bounds) -> dict[str, dict]:
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


def paired_comparisons(models: dict[str, dict], model: str = "finetuned", **bounds) -> list[dict]:
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


# ---------------------------------------------------------------------------------------------
# The ceiling: the reference without the markup plain text keeps no trace of


def record_backticks(state: StateInline, silent: bool) -> bool:
    """markdown-it's code span rule, noting where each code span starts and ends."""
    start, count = state.pos, len(state.tokens)
    if not backtick(state, silent):
        return False
    if len(state.tokens) > count and state.tokens[-1].type == "code_inline":
        state.env[PENDING].append((state.src, start, state.pos, state.tokens[-1], None))
    return True


def record_emphasis(state: StateInline, silent: bool) -> bool:
    """markdown-it's emphasis rule, noting where each delimiter character stands."""
    start = state.pos
    if not emphasis.tokenize(state, silent):
        return False
    run = state.pos - start  # one text token per delimiter character, the last ones pushed
    for offset, token in enumerate(state.tokens[len(state.tokens) - run :]):
        state.env[PENDING].append((state.src, start + offset, start + offset + 1, token, None))
    return True


def record_link(state: StateInline, silent: bool) -> bool:
    """markdown-it's link rule, noting the label of a link that refers to it by its label.

    ``[label]`` or ``[label][]`` finds its URL by the label's text: removing markup in the
    label would lose the link, so :func:`without_invisible` writes the old label after it.
    """
    start, count = state.pos, len(state.tokens)
    if not link(state, silent):
        return False
    if silent:
        return True
    label_end = state.md.helpers.parseLinkLabel(state, start, True)
    tail = state.src[label_end + 1 : state.pos]  # parseLinkLabel restores state.pos
    opened = next(t for t in state.tokens[count:] if t.type == "link_open")
    by_label = tail in ("", "[]")
    state.env[PENDING].append((state.src, start + 1, label_end, opened, by_label))
    return True


def resolve_invisible(state: StateInline) -> None:
    """Once emphasis is paired (before text fragments merge): the edits that drop it.

    A delimiter character became markup when its token is no longer text, or is text
    emptied by a strong pair; a code span is replaced by its content, escaped.
    """
    present = {id(token) for token in state.tokens}
    pending = []
    for src, start, end, token, by_label in state.env[PENDING]:
        if id(token) not in present:
            pending.append((src, start, end, token, by_label))
        elif token.type == "link_open":
            state.env[LABELS].setdefault(src, set()).add((start, end, by_label))
        elif token.type == "code_inline":
            state.env[EDITS].setdefault(src, set()).add((start, end, token.content))
        elif token.type != "text" or not token.content:
            state.env[EDITS].setdefault(src, set()).add((start, end, None))
    state.env[PENDING] = pending


PENDING, EDITS, LABELS = "pgpt_invisible_pending", "pgpt_invisible_edits", "pgpt_labels"
RECORDING_MD = MarkdownIt("commonmark").enable("table")  # as core.markdown.MD, recording
RECORDING_MD.inline.ruler.at("backticks", record_backticks)
RECORDING_MD.inline.ruler.at("emphasis", record_emphasis)
RECORDING_MD.inline.ruler.at("link", record_link)
RECORDING_MD.inline.ruler2.before("fragments_join", "resolve_invisible", resolve_invisible)


def content_positions(content: str, lines: list[str], first: int, cursor: dict) -> list[int]:
    """Where each character of an inline token's content stands in the document.

    The content's line k is found on document line ``first + k``, after what the previous
    inline token on that line took (``cursor``: table cells share a line); an escaped ``\\|``
    of a table cell counts for its ``|``. A newline stands at its line's end; the list has
    one more entry, the content's end. Raises ValueError if a line is not found.
    """
    positions: list[int] = []
    offset = sum(len(line) for line in lines[:first])
    for k, part in enumerate(content.split("\n")):
        number = first + k
        line = lines[number] if number < len(lines) else ""
        pattern = r"\\?\|".join(re.escape(piece) for piece in part.split("|"))
        found = re.compile(pattern).search(line, cursor.get(number, 0))
        if found is None:
            raise ValueError(f"content line {part!r} not found on line {number}")
        j = found.start()
        for char in part:
            if char == "|" and line[j] == "\\":
                j += 1
            positions.append(offset + j)
            j += 1
        cursor[number] = j
        positions.append(offset + len(line.rstrip("\n")))  # the newline, or the end
        offset += len(line)
    return positions


def apply_edits(text: str, edits: Iterable[tuple[int, int, str]], lo: int, hi: int) -> str:
    """``text[lo:hi]`` with the (start, end, replacement) edits inside it applied."""
    out, done = [], lo
    for first, last, replacement in sorted(edits):
        out += [text[done:first], replacement]
        done = last
    out.append(text[done:hi])
    return "".join(out)


def without_invisible(markdown: str) -> str:
    r"""The Markdown with its invisible markup removed: what a perfect model could write.

    Emphasis and strong lose their delimiters; a code span becomes its content, escaped where
    it would otherwise read as markup. Everything else is kept character for character. It
    works on markdown-it's parse (the delimiters markdown-it pairs, at the positions it read
    them), so escaped characters, unpaired ``*`` and code spans holding ``*`` stay as they
    are; its plain text (:func:`core.markdown.markdown_to_plain`) is the reference's.

    >>> print(without_invisible(r"A **bold** and *light* word, ***both***, \*not\*."))
    A bold and light word, both, \*not\*.
    >>> print(without_invisible("Run `rm *.txt` or `a*b*c` in *2 * 3* `#` s"))
    Run rm \*.txt or a\*b\*c in 2 * 3 # s
    """
    markdown = markdown.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
    env: dict = {PENDING: [], EDITS: {}, LABELS: {}}
    tokens = RECORDING_MD.parse(markdown, env)
    if not env[EDITS]:
        return markdown
    lines = markdown.splitlines(keepends=True)
    cursor: dict[int, int] = {}
    edits: list[tuple[int, int, str]] = []
    in_table = 0
    for i, token in enumerate(tokens):
        in_table += {"table_open": 1, "table_close": -1}.get(token.type, 0)
        if token.type != "inline" or token.map is None:
            continue
        if i and tokens[i - 1].type == "heading_open" and tokens[i - 1].markup.startswith("#"):
            line = lines[token.map[0]]
            cursor[token.map[0]] = len(line) - len(line.lstrip()) + len(tokens[i - 1].markup)
        try:
            positions = content_positions(token.content, lines, token.map[0], cursor)
        except ValueError:  # not where it should be (tabs expanded): its markup stays
            continue
        spans = env[EDITS].get(token.content, set())
        labels = env[LABELS].get(token.content, set())
        for start, end, by_label in labels:  # the old label keeps the link
            if by_label and any(start <= edit < end for edit, _, _ in spans):
                label = token.content[start:end].replace("|", "\\|" if in_table else "|")
                tail = positions[end] + 1
                bracketed = markdown[tail : tail + 2] == "[]"
                edits.append((tail, tail + 2 if bracketed else tail, f"[{label}]"))
        mine = []
        for start, end, code in spans:
            first, last = positions[start], positions[end - 1] + 1
            text = ""
            if code is not None:
                before, after = markdown[first - 1 : first], markdown[last : last + 1]
                # brackets could close a label, or open a link to a defined reference
                in_link = bool(env.get("references")) or any(a <= start < b for a, b, _ in labels)
                text = escape_text(
                    code, before or None, after or None, in_link=in_link, cell=bool(in_table)
                )
            mine.append((first, last, text))
        if tokens[i - 1].type == "paragraph_open":
            mine = line_starts_escaped(markdown, mine, token.content, positions)
        edits += mine
    return apply_edits(markdown, edits, 0, len(markdown))


def line_starts_escaped(
    markdown: str, edits: list[tuple[int, int, str]], content: str, positions: list[int]
) -> list[tuple[int, int, str]]:
    """A paragraph's edits, those of a line whose start they change (``*1.* x`` -> ``1. x``,
    which would start a list) made one edit of the whole line with its start escaped."""
    offset = 0
    for part in content.split("\n"):
        lo, hi = positions[offset], positions[offset + len(part)]
        offset += len(part) + 1
        inside = [edit for edit in edits if lo <= edit[0] < hi]
        if not any(first == lo for first, _, _ in inside):
            continue
        line = apply_edits(markdown, inside, lo, hi)
        escaped = escape_line_start(line, line)
        if escaped != line:
            edits = [edit for edit in edits if edit not in inside] + [(lo, hi, escaped)]
    return edits


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


def read_test_examples(data_dir: str | Path, max_examples: int | None = None) -> list[dict]:
    """The test split (``DATA/jsonl/test.jsonl``): at most ``max_examples`` of its chunks,
    spread evenly over it (the first N would come from a few articles)."""
    path = exported_split(data_dir, "test")
    examples = read_chat_jsonl(path)
    if not examples:
        raise ValueError(f"{path} holds no examples: the test split is empty")
    return spread(examples, max_examples)


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

        train = read_chat_jsonl(train_split(data_dir or "."))
        return AuthorRules.fit((e["plain"], e["reference"]) for e in train)
    return {"identity": copy_text, "ceiling": without_invisible}[model_id]


def computed_model(name: str, data_dir: str | Path | None = None) -> dict:
    """The spec of a computed model, with the sha256 of its function's module source (so
    cached answers follow a change of the code that computes them, not only of this task),
    and for the author's rules that of the train split they are counted from."""
    trained = name == "author_rules"  # counted from the train split: fitted only when used
    module_name = "core.author_rules" if trained else computing_function(name).__module__
    module = importlib.import_module(module_name)
    source = hashlib.sha256(inspect.getsource(module).encode()).hexdigest()
    spec = {"name": name, "backend": "computed", "model_id": name, "source_sha256": source}
    if trained:
        train = train_split(data_dir or ".")
        spec["train_sha256"] = hashlib.sha256(train.read_bytes()).hexdigest()
    return spec


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def generate_answers(
    model: dict, examples: list[dict], faithful: bool, runtime: dict, data_dir: str
) -> dict:
    """A model's answers to the examples, with wall and CPU seconds and cost (cached per model).

    A ``computed`` model (:data:`COMPUTED`: identity, ceiling, rules) generates nothing: its
    answers are its function of each example's plain text (or reference, for the ceiling).
    Faithful mode repairs every answer predicted from the plain text.

    ``runtime``: the settings generation depends on (backend, base_model, threads, seed, the
    openai section, the price table), never an API key.
    """
    logger = get_run_logger()
    wall, cpu = time.perf_counter(), time.process_time()
    cost = 0.0
    source = "plain"
    if model["backend"] == "computed":  # no generation: a function of the plain text or reference
        source = COMPUTED[model["model_id"]]
        compute = computing_function(model["model_id"], data_dir)
        answers = [compute(e[source]) for e in examples]
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
    if faithful and source == "plain":  # the ceiling's text is the reference's: nothing to repair
        answers = [repair(a, e["plain"]) for a, e in zip(answers, examples, strict=True)]
    return {
        "answers": answers,
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "output_tokens": sum(count_tokens(a) for a in answers),
        "cost_usd": cost,
    }


def score_answers(model: dict, examples: list[dict], run: dict, evaluate: dict) -> dict:
    """Per-example scores and the model's summary row (means with bootstrap intervals; visible
    and invisible F1 micro over the examples, :func:`f1_interval`)."""
    scores = [
        score_example(a, e["reference"], e["plain"])
        for a, e in zip(run["answers"], examples, strict=True)
    ]
    bounds = {"samples": evaluate["bootstrap_samples"], "confidence": evaluate["confidence"]}
    summary = {key: bootstrap_interval([s[key] for s in scores], **bounds) for key in SUMMARY_KEYS}
    f1s = {key: f1_interval(scores, kinds, **bounds) for key, kinds in F1_KEYS.items()}
    return {
        "model_id": model["model_id"],
        **summary,
        **f1s,
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
    """The models a run scores: identity, the ceiling, the rules, the author's rules, base
    one-shot, the new model, the champion, OpenAI.

    identity (the plain text), ceiling (the reference without its invisible markup), rules
    (``core.rules``) and, when there is a train split, the author's rules counted from it
    (``core.author_rules``) are computed (:data:`COMPUTED`), the others generate.

    ``evaluate.openai_models`` (one-shot, through the openai backend) only when
    ``openai_available`` (an API key, or a self-hosted ``finetune.openai.base_url``).
    """
    finetune, evaluate = settings["finetune"], settings["evaluate"]
    system = settings["export"]["system_message"]
    models = [computed_model(name) for name in ("identity", "ceiling", "rules")]
    if one_shot is not None and train_split(settings["data_dir"]).is_file():
        models.append(computed_model("author_rules", settings["data_dir"]))
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
