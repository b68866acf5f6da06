"""Training data for the local backend: chat examples -> masked token ids -> padded batches.

Each JSONL line is one OpenAI chat example (system, user = plain text, assistant = Markdown).
``tokenize_example`` renders it with the tokenizer's own chat template and keeps a label only
on what the model must learn to write: the assistant's content and its closing ``<|im_end|>``
(so it learns to stop). Everything else (system, user, the ``<|im_start|>assistant\\n`` header
and the template's trailing newline) is labelled -100 and ignored by the loss.

>>> batches = length_grouped_batches([5, 50, 6, 49, 7, 48], batch_size=2, seed=0, epoch=0)
>>> sorted(i for b in batches for i in b)
[0, 1, 2, 3, 4, 5]
>>> batches == length_grouped_batches([5, 50, 6, 49, 7, 48], batch_size=2, seed=0, epoch=0)
True
>>> sorted(sorted(b) for b in batches)  # similar lengths share a batch: little padding
[[0, 2], [1, 3], [4, 5]]

A batch is run in micro-batches of at most ``max_tokens`` padded tokens (rows x the longest
row), because the activations autograd keeps for the backward pass grow with them:
>>> split_by_tokens([0, 1, 2, 3], [300, 500, 200, 450], max_tokens=1024)
[[1, 3], [0, 2]]
>>> split_by_tokens([0, 1, 2, 3], [300, 500, 200, 450], max_tokens=0)  # no bound
[[0, 1, 2, 3]]
"""

from __future__ import annotations

import random
from typing import Any

IGNORE = -100  # label of a position the loss skips (PyTorch's cross_entropy ignore_index)
END_OF_TURN = "<|im_end|>"  # ChatML's end of a turn: the assistant's stop token
MEGA_CHUNK = 50  # batches per length-sorted chunk (HF's LengthGroupedSampler uses 50)

Messages = list[dict[str, str]]


def end_of_turn_id(tokenizer: Any) -> int:
    """Id of the token that closes the assistant's turn: ``<|im_end|>``, else the EOS token."""
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
        return token_id
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer has neither {END_OF_TURN!r} nor an EOS token")
    return int(tokenizer.eos_token_id)


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of templated text (the template has every special token; no length warning)."""
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def tokenize_example(
    messages: Messages, tokenizer: Any, max_tokens: int, decision_weight: float = 1.0
) -> dict[str, Any]:
    """Token ids and labels (-100 except the assistant's content and closing token) of a chat.

    Returns ``input_ids``, ``labels``, ``n_target`` (labelled positions) and ``truncated``
    (the example was longer than ``max_tokens`` and was cut from the end). With a
    ``decision_weight`` other than 1, also ``weights``: per position, the loss weight of its
    label (0 where there is none; ``decision_weight`` on the assistant's tokens where its
    Markdown departs from the user's plain text, ``backends.local.decisions``; else 1).
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's (the training target)")
    prefix_text = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    prefix, full = _encode(tokenizer, prefix_text), _encode(tokenizer, full_text)
    if not full_text.startswith(prefix_text) or full[: len(prefix)] != prefix:
        raise ValueError(
            "the chat template's generation prompt does not tokenize to a prefix of the full "
            f"conversation (prefix ends {prefix_text[-40:]!r}); cannot find where the "
            "assistant's turn starts"
        )
    stop = end_of_turn_id(tokenizer)
    turn = full[len(prefix) :]
    if stop not in turn:
        raise ValueError(f"the assistant's turn has no closing token (id {stop})")
    end = len(prefix) + len(turn) - turn[::-1].index(stop)  # one past the last closing token
    labels = [IGNORE] * len(prefix) + full[len(prefix) : end] + [IGNORE] * (len(full) - end)
    truncated = len(full) > max_tokens
    input_ids, labels = full[:max_tokens], labels[:max_tokens]
    n_target = sum(label != IGNORE for label in labels[1:])  # position 0 is never predicted
    example = {"input_ids": input_ids, "labels": labels, "n_target": n_target}
    if decision_weight != 1.0:
        weights = _decision_weights(messages, tokenizer, prefix_text, full_text, decision_weight)
        kept = zip(weights[:max_tokens], labels, strict=True)
        example["weights"] = [w if label != IGNORE else 0.0 for w, label in kept]
    return example | {"truncated": truncated}


def _decision_weights(
    messages: Messages, tokenizer: Any, prefix_text: str, full_text: str, weight: float
) -> list[float]:
    """Each token's loss weight in ``full_text``: ``weight`` where the assistant decides."""
    from backends.local.decisions import decision_chars, token_weights

    plain = next(m["content"] for m in reversed(messages[:-1]) if m["role"] == "user")
    markdown = messages[-1]["content"]
    start = len(prefix_text)  # the assistant's content starts here in full_text
    offsets = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    spans = [
        (a - start, b - start) if a >= start else (-1, -1) for a, b in offsets["offset_mapping"]
    ]
    return token_weights(spans, decision_chars(plain, markdown), weight)


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Batches of indices of similar length, in shuffled order; a pure function of its inputs.

    As HF's LengthGroupedSampler: shuffle, sort each chunk of ``MEGA_CHUNK`` batches by length
    (longest first), cut it into batches, then shuffle the batches. Every index appears once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    rng = random.Random(f"length-grouped:{seed}:{epoch}")  # str seeds are stable across runs
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = MEGA_CHUNK * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def split_by_tokens(batch: list[int], lengths: list[int], max_tokens: int) -> list[list[int]]:
    """``batch`` (indices into ``lengths``) as micro-batches of <= ``max_tokens`` padded tokens.

    Longest first, each micro-batch as many rows as fit (a micro-batch pads to its longest
    row, so rows x that width <= ``max_tokens``); a row longer than the bound goes alone.
    ``max_tokens`` 0 keeps the batch whole. Every index appears once.
    """
    if max_tokens <= 0:
        return [list(batch)]
    micro: list[list[int]] = []
    for i in sorted(batch, key=lambda i: -lengths[i]):
        if micro and (len(micro[-1]) + 1) * lengths[micro[-1][0]] <= max_tokens:
            micro[-1].append(i)
        else:
            micro.append([i])
    return micro


def collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on padding) tensors,
    and ``weights`` (0 on padding) when every example has them."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    weighted = all("weights" in e for e in examples)
    weights = torch.zeros((len(examples), width)) if weighted else None
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[row, :n] = torch.tensor(e["input_ids"], dtype=torch.long)
        labels[row, :n] = torch.tensor(e["labels"], dtype=torch.long)
        attention_mask[row, :n] = 1
        if weights is not None:
            weights[row, :n] = torch.tensor(e["weights"])
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return batch | ({"weights": weights} if weights is not None else {})
