"""A fine-tune's decoding biases, chosen on its valid split: how readily it departs from the
rules it read, and how readily a line starts a block.

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

The scaffold biases (``backends.local.follow``) are chosen first, the same way: at every
answer token where the model could follow what it read or not, the best following token's
score minus the best other's is a margin, and the author's token says whether to follow. A
model that departs from its scaffold more often than the author does gets a positive bias.
Margins where a block's kind is decided (a line start, a line break; ``faithful.follow_biased``)
choose the block bias, the others the inline one: a model may know the author's code spans
and not their headings. The markup bias is then chosen with the block bias applied at line
starts, as the decoder applies them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from statistics import fmean
from typing import Any, NamedTuple

from backends.local.scaffold import Reader, Scaffold, scaffold_name, scaffolded
from core.intervals import paired_difference

DECODING_JSON = "decoding.json"  # in a fine-tune's adapter folder: the bias and its evidence
MAX_BIAS = 8.0  # logits: beyond this the model's own scores no longer matter

Margins = list[tuple[float, bool]]  # (margin, label) of each decision weighed


class Biases(NamedTuple):
    """The faithful decoder's biases (logits; ``backends.local.faithful``)."""

    scaffold: float  # added to the tokens that follow the scaffold, inside a line
    block: float  # ... where a block's kind is decided (a line start, a line break)
    markup: float  # added to the markup tokens at a line start


def choose_bias(margins: Margins) -> tuple[float, float, float]:
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


def valid_margins(
    model: Any,
    tokenizer: Any,
    examples: list[list[dict[str, str]]],
    scaffold: Scaffold | Reader = "none",
    block_bias: float | None = None,
) -> tuple[dict[str, Margins], Margins]:
    """``(follow margins by kind, line-start margins)`` of the examples' answers
    (``answer_margins``).

    The model reads each text to format as ``scaffold`` makes it (``backends.local.scaffold``),
    as it was trained to. The line-start margins are taken with ``block_bias`` added to the
    tokens that follow the scaffold (None: none added, and no follow margins kept).
    """
    from backends.local.faithful import vocabulary

    vocab = vocabulary(tokenizer)
    follows: dict[str, Margins] = {"block": [], "inline": []}
    starts: Margins = []
    for messages in examples:
        read = scaffolded(messages[:-1], scaffold)
        prompt = tokenizer.apply_chat_template(read, tokenize=False, add_generation_prompt=True)
        start = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        found = answer_margins(
            model, vocab, start, answer, messages[-2]["content"], read[-1]["content"],
            block_bias,
        )  # fmt: skip
        for kind, margins in found[0].items():
            follows[kind] += margins
        starts += found[1]
    return follows, starts


def answer_margins(
    model: Any,
    vocab: Any,
    prompt: list[int],
    answer: list[int],
    plain: str,
    scaffold: str | None = None,
    block_bias: float | None = None,
) -> tuple[dict[str, Margins], Margins]:
    """``(follow margins by kind, line-start margins)`` of one answer's tokens after its
    prompt's, for input ``plain`` read as ``scaffold`` (the plain text itself if None).

    Follow margins (``follow_margins``), kept only where ``block_bias`` is None, are
    "block" where a block's kind is decided and "inline" elsewhere.

    A line-start margin is the best fitting markup token's score minus the best fitting
    other token's (``backends.local.faithful.line_start_options``), with ``block_bias``
    added to the following tokens first: the decoder writes markup there under a markup bias
    ``b`` exactly when ``margin + b > 0``. Line starts where no markup fits are left out;
    where only markup fits, the margin is infinite.
    """
    import torch

    from backends.local.faithful import Matcher, at_line_start, biased, line_start_options
    from backends.local.follow import Follower, following

    with torch.inference_mode():
        ids = torch.tensor([prompt + answer], device=model.device)
        logits = model(input_ids=ids).logits[0].float().cpu()  # on the CPU: the same tensor
    scores = logits[len(prompt) - 1 : len(prompt) - 1 + len(answer)]
    matcher, follower = Matcher(plain), Follower(plain if scaffold is None else scaffold, plain)
    follows: dict[str, Margins] = {"block": [], "inline": []}
    starts: Margins = []
    for k, (token, row) in enumerate(zip(answer, scores, strict=True)):
        ids = [i for i in following(follower, matcher, vocab, []) if i < row.shape[-1]]
        if ids and block_bias is None:
            ahead = b"".join(
                vocab.table[t] or b"" for t in answer[k : k + 8] if t < len(vocab.table)
            )
            found = follow_margins(matcher, follower, vocab, row, ids, token in ids, ahead)
            for kind, margin in found:
                follows[kind].append(margin)
        if at_line_start(matcher):
            weighed = ids if block_bias else []  # as the decoder weighs them
            adjusted = biased(row, weighed, block_bias or 0.0)
            markup, other = line_start_options(matcher, adjusted, vocab, weighed)
            if markup is not None:
                margin = markup[1] - other[1] if other is not None else math.inf
                starts.append((margin, bool(vocab.is_markup[token])))
        if token >= len(vocab.table) or not matcher.feed(vocab.table[token] or b""):
            break  # the answer leaves the plain text (an edited chunk), or ends: stop here
    return follows, starts


def follow_margins(
    matcher: Any,
    follower: Any,
    vocab: Any,
    row: Any,
    ids: list[int],
    followed: bool,
    ahead: bytes,
) -> list[tuple[str, tuple[float, bool]]]:
    """``(kind, (margin, label))`` of one answer token where the ``ids`` follow the scaffold,
    the author's token is one of them (``followed``) or not, and the author's answer goes
    on with ``ahead`` (its next tokens' bytes).

    A margin is the best fitting following token's score minus the best fitting other's (of
    the tokens the decoder weighs), labelled True where the author follows and False where
    the author departs as that other token does (where the author departs some other way,
    following and departing are both wrong: no margin). Where a block's kind is decided (a
    line start, or the scaffold breaks the line) one margin of kind "block"; inside a line,
    one "inline" against the others that keep to the line and one "block" against those that
    break it, as ``faithful.follow_biased`` weighs them: the decoder departs under biases
    ``b`` about where ``margin + b < 0`` (at a line start the markup bias weighs in too).
    """
    from backends.local.faithful import decides_block

    others = [i for i in decoder_candidates(matcher, vocab, row) if i not in ids]
    if decides_block(matcher, follower):
        sides = {"block": others}
    else:
        breaking = [i for i in others if b"\n" in (vocab.table[i] or b"")]
        sides = {"inline": [i for i in others if i not in breaking], "block": breaking}
    best_follow = best_fitting(matcher, vocab, row, ids)
    found = []
    for kind, side in sides.items():
        best_other = best_fitting(matcher, vocab, row, side)
        if best_follow is None or best_other is None:
            continue  # no choice here
        margin = best_follow[0] - best_other[0]
        if followed:
            found.append((kind, (margin, True)))
        elif ahead.startswith(vocab.table[best_other[1]]):  # the model departs as the author
            found.append((kind, (margin, False)))
    return found


def decoder_candidates(matcher: Any, vocab: Any, row: Any) -> list[int]:
    """The tokens the faithful decoder weighs for its next choice: the ``TOP_K`` highest, and
    at a line start each side's ``LINE_START_K`` highest and the input's own next token."""
    import torch

    from backends.local.faithful import LINE_START_K, TOP_K, at_line_start

    found = torch.topk(row, TOP_K).indices.tolist()
    if at_line_start(matcher):
        markup = vocab.markup_mask(row.shape[-1])
        for side in (markup, ~markup):
            masked = torch.where(side, row, torch.full_like(row, float("-inf")))
            found += torch.topk(masked, LINE_START_K).indices.tolist()
        found.append(vocab.own_next(matcher))
    return [i for i in dict.fromkeys(found) if i is not None and i < len(vocab.table)]


def best_fitting(matcher: Any, vocab: Any, row: Any, ids: list[int]) -> tuple[float, int] | None:
    """``(score, id)`` of the highest scoring of ``ids`` whose bytes fit the input, if any."""
    fitting = [
        (float(row[i]), i) for i in ids if i < len(vocab.table) and vocab.table[i]
        and matcher.fits(vocab.table[i])
    ]  # fmt: skip
    return max(fitting, default=None)


def check_departures(
    model: Any,
    tokenizer: Any,
    examples: list[list[dict[str, str]]],
    scaffold: Scaffold | Reader,
    biases: Biases,
    progress: Callable[[int, int], Any] | None = None,
) -> tuple[list[float], list[float]]:
    """``(model CERs, scaffold CERs)``: the CER of each valid example of the model's answer,
    decoded faithfully under ``biases`` and repaired, and of its
    scaffold's own formatting (what following it everywhere writes).

    Teacher forcing judges each token on the author's context; a decoded answer lives with
    its own choices, so a wrong departure (a list nested at its first item) can carry on to
    the next items. This check decodes, as the evaluation will, copying ahead
    (``backends.local.decode``) as a fine-tune does: the same tokens as one a pass, in a
    fraction of the passes (``model`` is the training one, not yet marked ``fine_tuned``).
    """
    from backends.local.generate import generate
    from backends.local.scaffold import scaffold_function
    from core.faithful import repair
    from core.scores import cer

    plains = [messages[-2]["content"] for messages in examples]
    references = [messages[-1]["content"] for messages in examples]
    answers = generate(
        model, tokenizer, [messages[:-1] for messages in examples], faithful=True,
        scaffold=scaffold, scaffold_bias=biases.scaffold, block_bias=biases.block,
        markup_bias=biases.markup, batch_size=1, copy_ahead_rows=1, progress=progress,
    )  # fmt: skip
    read = scaffold_function(scaffold)
    model_cers = [cer(repair(a, p), r) for a, p, r in zip(answers, plains, references, strict=True)]
    scaffold_cers = [cer(repair(read(p), p), r) for p, r in zip(plains, references, strict=True)]
    return model_cers, scaffold_cers


def departures_pay(model_cers: list[float], scaffold_cers: list[float]) -> bool:
    """Whether the model's answers are closer to the author's than its scaffold's, beyond the
    noise of so few examples: the paired CER difference's 95 % interval is all below 0 (the
    bar the evaluation sets a fine-tune against the base model). A model a hair better on
    average has not shown that its departures pay, and follows its scaffold.

    >>> departures_pay([0.1, 0.2, 0.3], [0.2, 0.3, 0.4])  # better on every example
    True
    >>> departures_pay([0.0, 0.3], [0.1, 0.21])  # better on average, worse on one
    False
    """
    return paired_difference(model_cers, scaffold_cers)["high"] < 0


def calibrate(
    model: Any,
    tokenizer: Any,
    valid_jsonl: str | Path | None,
    scaffold: Scaffold | Reader = "none",
    limit: int | None = None,
    check: int = 0,
    progress: Callable[[int, int, str], Any] | None = None,
) -> dict[str, Any]:
    """How ``model`` decodes best: what it reads (``scaffold``), the scaffold biases (inline
    and block) and the markup bias its valid split chose (in that order: the markup bias is
    chosen with the block bias applied), with what they were chosen on (``decoding.json``).
    ``limit``: at most that many valid examples, spread over the split
    (``finetune.max_valid_examples``). A model that reads the plain text itself has no
    scaffold to follow: its scaffold biases are 0.

    ``check``: that many of them (spread) are then decoded (``check_departures``), first
    departing as chosen, then (if that does not pay) inside lines only, its blocks held to
    the scaffold's (block bias ``MAX_BIAS``); the first whose answers are closer to the
    author's than the scaffold's own formatting beyond the noise (``departures_pay``) is
    kept, and if none is, both biases become ``MAX_BIAS``: follow the scaffold.
    ``progress(done, total, what)``: called as the check decodes, ``what`` naming the try.
    """
    from core.chat_data import read_chats
    from core.sample import spread

    examples = spread(read_chats(valid_jsonl), limit) if valid_jsonl else []
    follows: dict[str, Margins] = {"block": [], "inline": []}
    margins: Margins = []
    if examples and scaffold_name(scaffold) != "none":
        follows, margins = valid_margins(model, tokenizer, examples, scaffold)
    weighed = follows["block"] + follows["inline"]
    # follow where margin + bias > 0, with the fewest errors: each kind its own bias
    inline_bias, block_bias = choose_bias(follows["inline"])[0], choose_bias(follows["block"])[0]
    if examples and (block_bias or not weighed):  # else the line starts are those above
        margins = valid_margins(model, tokenizer, examples, scaffold, block_bias)[1]
    bias, f1_zero, f1_best = choose_bias(margins)
    chosen = Biases(inline_bias, block_bias, bias)
    found: dict[str, Any] = {"scaffold": scaffold_name(scaffold)}
    if check and weighed:
        decoded = spread(examples, check)
        found["checked"], chosen = check_choices(
            model, tokenizer, decoded, scaffold, chosen, progress
        )
    return found | {
        "scaffold_bias": round(chosen.scaffold, 3),
        "block_bias": round(chosen.block, 3),
        "markup_bias": round(chosen.markup, 3),
        "valid_examples": len(examples),
        "tokens_weighed": len(weighed),
        "author_departures": sum(not label for _, label in weighed),
        "model_departures": sum(1 for margin, _ in weighed if margin < 0),
        "inline_weighed": len(follows["inline"]),
        "inline_author_departures": sum(not label for _, label in follows["inline"]),
        "inline_model_departures": sum(1 for margin, _ in follows["inline"] if margin < 0),
        "line_starts": len(margins),
        "with_markup": sum(label for _, label in margins),
        "f1_without_bias": f1_zero,
        "f1_with_bias": f1_best,
    }


def check_choices(
    model: Any,
    tokenizer: Any,
    examples: list[list[dict[str, str]]],
    scaffold: Scaffold | Reader,
    chosen: Biases,
    progress: Callable[[int, int, str], Any] | None = None,
) -> tuple[list[dict[str, Any]], Biases]:
    """``(what each try found, the biases kept)``: ``chosen``, then the same with the blocks
    held to the scaffold, decoded on ``examples`` until one's departures pay (``calibrate``).
    A try in which the model cannot depart (both biases ``MAX_BIAS``) is not decoded.
    """
    tries = {chosen: "departing as chosen", chosen._replace(block=MAX_BIAS): "inside lines only"}
    checked: list[dict[str, Any]] = []
    for biases, what in tries.items():
        if min(biases.scaffold, biases.block) >= MAX_BIAS:
            continue
        step = None if progress is None else partial(progress, what=what)
        model_cers, scaffold_cers = check_departures(
            model, tokenizer, examples, scaffold, biases, step
        )
        difference = paired_difference(model_cers, scaffold_cers)
        checked.append({
            "valid_examples": len(examples),
            "scaffold_bias": round(biases.scaffold, 3),
            "block_bias": round(biases.block, 3),
            "model_cer": round(fmean(model_cers), 5),
            "scaffold_cer": round(fmean(scaffold_cers), 5),
            "difference": {bound: round(x, 5) for bound, x in difference.items()},
        })  # fmt: skip
        if departures_pay(model_cers, scaffold_cers):
            return checked, biases
    return checked, chosen._replace(scaffold=MAX_BIAS, block=MAX_BIAS)
