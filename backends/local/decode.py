"""Greedy decoding that copies ahead: the model checks several input tokens in one pass.

Rendering plain text into Markdown mostly copies the input. Plain greedy decoding runs one
forward pass per answer token, and at batch 1 each pass is bound by reading every weight
once. Here each step drafts the tokens the input goes on with (prompt lookup: where the
answer's last tokens occur in the input, what follows them there) and the model scores the
last token and the whole draft in one pass. The step keeps the draft's longest prefix that
the choice rule picks anyway, plus the rule's own token where they part. So the answer is
token for token what plain greedy decoding gives with the same rule (argmax, or the faithful
constraint of ``backends.local.faithful``), in fewer passes.

In a batch each row keeps its own number of tokens per step, but the KV cache stays one
tensor: a rejected draft token's column is masked out (attention mask 0) instead of removed,
and position ids count only kept columns, so each row's model sees exactly its greedy
sequence. When masked columns are the majority, the cache is compacted. Finished rows leave
the batch.

>>> drafter = Drafter([5, 6, 7, 8, 6, 7, 9])
>>> drafter.propose([], 3)  # nothing written yet: the input's start
[5, 6, 7]
>>> drafter.propose([5, 6], 2)  # the answer ends like the input's [5, 6]: what follows
[7, 8]
>>> drafter.propose([5, 6, 7, 8, 6, 7], 4)  # the occurrence at or after the last copy
[9]
>>> drafter.propose([42], 3)  # markup the input does not have: no draft
[]
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

DRAFT_TOKENS = 31  # input tokens checked per pass: with make run's fine-tune, 31 beat 15 and
# 47 at batch 1 and 8 (README: Generation), and 15 beat 10
NGRAM = 3  # longest answer suffix looked up in the input (then 2, then 1 token)


class Chooser(Protocol):
    """The rule that picks each answer token from the model's scores (and follows the answer)."""

    def choose(self, row: int, scores: Any) -> int:
        """The token for ``row`` given its next-token ``scores`` (a 1-D tensor)."""

    def take(self, row: int, token: int) -> None:
        """``token`` is now part of row ``row``'s answer."""


class Argmax:
    """Plain greedy decoding: the most likely token."""

    def choose(self, row: int, scores: Any) -> int:
        return int(scores.argmax())

    def take(self, row: int, token: int) -> None:
        pass


@dataclass
class Drafter:
    """Prompt lookup over one input's tokens: the input's continuation of the answer so far."""

    source: list[int]
    ngram: int = NGRAM
    at: int = 0  # where in the input the last draft was found to go on (search from here)
    index: dict[tuple[int, ...], list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {}
        for n in range(1, self.ngram + 1):
            for start in range(len(self.source) - n + 1):
                self.index.setdefault(tuple(self.source[start : start + n]), []).append(start)

    def propose(self, answer: list[int], tokens: int) -> list[int]:
        """Up to ``tokens`` input tokens that would continue ``answer`` if it keeps copying."""
        if tokens <= 0:
            return []
        if not answer:
            return self.source[:tokens]
        for n in range(min(self.ngram, len(answer)), 0, -1):
            starts = self.index.get(tuple(answer[-n:]))
            if not starts:
                continue
            # the occurrence nearest at or after the copy so far, else the first one
            found = starts[bisect_left(starts, self.at - n)] if starts[-1] >= self.at - n else None
            begin = (found if found is not None else starts[0]) + n
            self.at = begin
            return self.source[begin : begin + tokens]
        return []


@dataclass
class Row:
    """One answer being decoded: its tokens, the token to feed next, and its cache length."""

    index: int  # the row's place in the caller's list
    budget: int  # new tokens at most
    drafter: Drafter
    kept: int  # cache columns this row really has (its next position id)
    tokens: list[int] = field(default_factory=list)
    reason: str | None = None  # "stop", "length" or "cancelled" once finished


def decode(
    model: Any,
    prompts: list[list[int]],
    sources: list[list[int]],
    budgets: list[int],
    chooser: Chooser,
    *,
    stops: list[int],
    pad_id: int,
    draft_tokens: int = DRAFT_TOKENS,
    on_tokens: Callable[[int, list[int]], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[tuple[list[int], str]]:
    """Each prompt's greedy answer tokens (no stop token) and why it ended, in the input order.

    ``sources``: each row's input tokens, where drafts come from (the text to format).
    ``budgets``: each row's most new tokens. ``chooser``: the choice rule, told every kept
    token. ``draft_tokens``: input tokens checked per pass (0: plain greedy, one token a
    pass). ``on_tokens(row, tokens)``: called with each row's new tokens as they are kept.
    ``should_stop()``: polled after each pass; true ends every row ("cancelled").
    """
    import torch

    rows = [
        Row(i, budget, Drafter(source), len(prompt))
        for i, (prompt, source, budget) in enumerate(zip(prompts, sources, budgets, strict=True))
    ]
    if not rows:
        return []
    width = max(len(p) for p in prompts)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        if prompt:
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
    cache = new_cache(model)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = _forward(model, ids, mask, positions, cache, last_only=True)
    live = rows
    last = [0] * len(rows)  # the token each live row feeds next (kept, not yet in the cache)
    for i, row in enumerate(live):
        last[i] = _keep(row, [chooser.choose(row.index, logits[i, -1])], chooser, stops, on_tokens)
    while True:
        if should_stop is not None and should_stop():
            for row in live:
                row.reason = row.reason or "cancelled"
        done = [i for i, row in enumerate(live) if row.reason is not None]
        if done:
            stay = [i for i, row in enumerate(live) if row.reason is None]
            if not stay:
                break
            cache.batch_select_indices(torch.tensor(stay, device=model.device))
            mask, live, last = mask[stay], [live[i] for i in stay], [last[i] for i in stay]
        mask = _compact(cache, mask)
        drafts = [
            row.drafter.propose(row.tokens, min(draft_tokens, row.budget - len(row.tokens) - 1))
            for row in live
        ]
        columns = 1 + max(len(d) for d in drafts)
        step = torch.full((len(live), columns), pad_id, dtype=torch.long)
        step_mask = torch.zeros((len(live), columns), dtype=torch.long)
        for i, (token, draft) in enumerate(zip(last, drafts, strict=True)):
            step[i, : 1 + len(draft)] = torch.tensor([token, *draft])
            step_mask[i, : 1 + len(draft)] = 1
        kept = torch.tensor([row.kept for row in live]).unsqueeze(1)
        positions = kept + torch.arange(columns).unsqueeze(0)
        mask = torch.cat([mask, step_mask], dim=1)
        logits = _forward(model, step, mask, positions, cache)
        for i, (row, draft) in enumerate(zip(live, drafts, strict=True)):
            taken = _verify(row, draft, logits[i], chooser, stops, on_tokens)
            mask[i, mask.shape[1] - columns + taken :] = 0  # the rejected draft's columns
            row.kept += taken
            last[i] = row.tokens[-1] if row.tokens else last[i]
    return [(row.tokens, row.reason or "length") for row in rows]


def new_cache(model: Any) -> Any:
    """An empty KV cache for ``model``: its own (``backends.local.llama``) or transformers'."""
    if hasattr(model, "new_cache"):
        return model.new_cache()
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _forward(
    model: Any, ids: Any, mask: Any, positions: Any, cache: Any, last_only: bool = False
) -> Any:
    """Logits of a pass over ``ids`` (each column's, or only the last) that extends ``cache``."""
    import torch

    device = model.device  # the bookkeeping stays on the CPU; on the CPU, .to() is a no-op
    with torch.inference_mode():
        return (
            model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                cache=cache,
                use_cache=True,
                logits_to_keep=1 if last_only else 0,
            )
            .logits.float()
            .cpu()
        )


def _keep(
    row: Row,
    chosen: list[int],
    chooser: Chooser,
    stops: list[int],
    on_tokens: Callable[[int, list[int]], Any] | None,
) -> int:
    """Add ``chosen`` to the row's answer (up to a stop token or its budget); the last token."""
    for token in chosen:
        if token in stops:
            row.reason = "stop"
            break
        chooser.take(row.index, token)
        row.tokens.append(token)
        if on_tokens is not None:
            on_tokens(row.index, [token])
        if len(row.tokens) >= row.budget:
            row.reason = "length"
            break
    return row.tokens[-1] if row.tokens else chosen[0]


def _verify(
    row: Row,
    draft: list[int],
    logits: Any,
    chooser: Chooser,
    stops: list[int],
    on_tokens: Callable[[int, list[int]], Any] | None,
) -> int:
    """Keep the tokens the rule picks at each of the pass's columns while they match the draft.

    Returns the cache columns this row keeps: the fed token plus each draft token that was
    also the rule's pick.
    """
    j = 0
    while True:
        token = chooser.choose(row.index, logits[j])
        _keep(row, [token], chooser, stops, on_tokens)
        if row.reason is not None or j == len(draft) or token != draft[j]:
            return j + 1
        j += 1


def _compact(cache: Any, mask: Any) -> Any:
    """Drop masked cache columns once they are most of it; the new attention mask.

    Each row keeps its kept columns in order, left-padded to the longest row (padding is
    masked, as a left-padded prompt's is).
    """
    import torch

    counts = mask.sum(dim=1)
    if mask.numel() == 0 or 2 * int(counts.sum()) >= mask.numel():
        return mask
    longest = int(counts.max())
    index = torch.zeros((mask.shape[0], longest), dtype=torch.long)
    new_mask = torch.zeros((mask.shape[0], longest), dtype=torch.long)
    for i in range(mask.shape[0]):
        columns = mask[i].nonzero().squeeze(1)
        pad = longest - len(columns)
        index[i, pad:] = columns
        index[i, :pad] = columns[0] if len(columns) else 0
        new_mask[i, pad:] = 1
    for layer in cache.layers:
        gather = index.to(layer.keys.device)[:, None, :, None].expand(
            -1, layer.keys.shape[1], -1, layer.keys.shape[3]
        )
        layer.keys = layer.keys.gather(2, gather)
        layer.values = layer.values.gather(2, gather)
    return new_mask
