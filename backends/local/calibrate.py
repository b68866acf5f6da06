"""The markup bias of a fine-tune, chosen on its valid split: how readily a line starts a block.

A model trained for minutes has seen few headings, lists and fences. At a line start its
first choice is usually the text itself even where the author writes ``## `` or ``- ``, so it
adds too little structure (precision above recall). The faithful decoder can add a constant
``markup_bias`` to the logits of the markup-only tokens at every line start
(``backends.local.faithful``); this module picks the constant that gets the most line-start
decisions right on the valid split, where nothing was tuned.

The valid answers are teacher-forced: one forward pass per example, no generation. At each
line start of an answer the decoder's choice under a bias ``b`` is "markup" when the best
fitting markup token beats the best fitting other token by more than ``-b``, so the margins
of every line start, and whether the author put markup there, give the errors (and F1) of
any ``b``:

>>> choose_bias([(2.0, True), (-1.0, True), (-3.0, False), (-4.0, False)])
(2.0, 0.6667, 1.0)

(at 0 only the first line start gets markup: one missed, F1 2/3; any bias in (1, 3) takes
the second and no more: no error, F1 1; the middle of that interval is chosen, so a margin
near an end is not a tie.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from backends.local.scaffold import Reader, Scaffold, scaffold_name, scaffolded

DECODING_JSON = "decoding.json"  # in a fine-tune's adapter folder: the bias and its evidence
MAX_BIAS = 8.0  # logits: beyond this the model's own scores no longer matter


def choose_bias(margins: list[tuple[float, bool]]) -> tuple[float, float, float]:
    """``(bias, F1 at 0, F1 at bias)`` for line starts ``(margin, author put markup)``.

    The bias is the middle of the interval with the fewest wrong line starts (the one
    nearest 0 on a tie; 0 itself if it lies inside), within ``±MAX_BIAS``; 0 when no line
    start has markup. Fewest errors, not best F1: a missed ``## `` and a wrong one cost the
    same characters, and a model that cannot tell the two apart keeps its bias at 0 where
    F1 would put markup on every line.
    """
    positives = sum(label for _, label in margins)
    if not positives:
        return 0.0, 0.0, 0.0
    ranked = sorted(margins, key=lambda item: -item[0])
    cuts = [math.inf] + [m for m, _ in ranked] + [-math.inf]

    def f1(taken: int, hits: int) -> float:
        return 2 * hits / (taken + positives)

    best: tuple[int, float, float, float] | None = None
    hits = 0
    for taken in range(len(ranked) + 1):  # the ``taken`` largest margins get markup
        if taken:
            hits += ranked[taken - 1][1]
        low, high = -cuts[taken], -cuts[taken + 1]  # b in (low, high]: exactly ``taken``
        reach_low, reach_high = max(low, -MAX_BIAS), min(high, MAX_BIAS)
        if reach_high <= reach_low:
            continue  # equal margins (no bias splits them), or out of reach
        bias = 0.0 if low < 0 <= high else (reach_low + reach_high) / 2
        errors = (taken - hits) + (positives - hits)
        key = (-errors, -abs(bias), bias, f1(taken, hits))
        if best is None or key > best:
            best = key
    at_zero = sum(1 for m, _ in margins if m > 0)
    hits_zero = sum(label for m, label in margins if m > 0)
    assert best is not None
    return best[2], round(f1(at_zero, hits_zero), 4), round(best[3], 4)


def line_start_margins(
    model: Any,
    tokenizer: Any,
    examples: list[list[dict[str, str]]],
    scaffold: Scaffold | Reader = "none",
) -> list[tuple[float, bool]]:
    """``(margin, author put markup)`` at every line start of the examples' answers.

    The margin is the best fitting markup token's score minus the best fitting other
    token's (``backends.local.faithful.line_start_options``): the decoder writes markup
    there under a bias ``b`` exactly when ``margin + b > 0``. Line starts where no markup
    fits are left out; where only markup fits, the margin is infinite. The model reads each
    text to format as ``scaffold`` makes it (``backends.local.scaffold``), as it was trained to.
    """
    from backends.local.faithful import vocabulary

    vocab = vocabulary(tokenizer)
    found: list[tuple[float, bool]] = []
    for messages in examples:
        prompt = tokenizer.apply_chat_template(
            scaffolded(messages[:-1], scaffold), tokenize=False, add_generation_prompt=True
        )
        start = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        found += answer_margins(model, vocab, start, answer, messages[-2]["content"])
    return found


def answer_margins(
    model: Any, vocab: Any, prompt: list[int], answer: list[int], plain: str
) -> list[tuple[float, bool]]:
    """``line_start_margins`` of one answer's tokens after its prompt's, for input ``plain``."""
    import torch

    from backends.local.faithful import Matcher, at_line_start, line_start_options

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
    scores = logits[len(prompt) - 1 : len(prompt) - 1 + len(answer)]
    matcher = Matcher(plain)
    found: list[tuple[float, bool]] = []
    for token, row in zip(answer, scores, strict=True):
        if at_line_start(matcher):
            markup, other = line_start_options(matcher, row, vocab)
            if markup is not None:
                margin = markup[1] - other[1] if other is not None else math.inf
                found.append((margin, bool(vocab.is_markup[token])))
        if token >= len(vocab.table) or not matcher.feed(vocab.table[token] or b""):
            break  # the answer leaves the plain text (an edited chunk), or ends: stop here
    return found


def calibrate(
    model: Any,
    tokenizer: Any,
    valid_jsonl: str | Path | None,
    scaffold: Scaffold | Reader = "none",
    limit: int | None = None,
) -> dict[str, Any]:
    """How ``model`` decodes best: what it reads (``scaffold``) and the markup bias its valid
    split chose, with what the bias was chosen on (``decoding.json``). ``limit``: at most that
    many valid examples, spread over the split (``finetune.max_valid_examples``)."""
    from core.chat_data import read_chats
    from core.sample import spread

    examples = spread(read_chats(valid_jsonl), limit) if valid_jsonl else []
    margins = line_start_margins(model, tokenizer, examples, scaffold) if examples else []
    bias, f1_zero, f1_best = choose_bias(margins)
    return {
        "scaffold": scaffold_name(scaffold),
        "markup_bias": round(bias, 3),
        "valid_examples": len(examples),
        "line_starts": len(margins),
        "with_markup": sum(label for _, label in margins),
        "f1_without_bias": f1_zero,
        "f1_with_bias": f1_best,
    }
