"""Batched greedy generation with the local model (base, or base + merged LoRA adapter).

Each conversation (OpenAI chat messages, normally system + user) is rendered with the
tokenizer's chat template plus the assistant prompt, then conversations are sorted by length
and generated in batches with LEFT padding (so every row's next token sits in the last
column) and an attention mask. Decoding is greedy (deterministic, the fair setting for an
evaluation) with the KV cache, and stops at ``<|im_end|>`` (and ``<|endoftext|>``). Only the
new tokens are decoded; results come back in the input order. A conversation's budget of
new tokens comes from the length of its last message (the text to format, not the system
message, which may hold a one-shot example); a batch generates for its largest budget, but
each answer is cut to its OWN budget, so it never depends on the batch or the others.

>>> max_new_tokens_for(100)
182
>>> max_new_tokens_for(5000)
2048
>>> model, tokenizer = load_for_inference(base_dir, adapter_dir)  # doctest: +SKIP
>>> system = {"role": "system", "content": "You render plain text into markdown format."}
>>> user = {"role": "user", "content": "Hello world"}
>>> generate(model, tokenizer, [[system, user]])  # doctest: +SKIP
['Hello world']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.local.model import load_model

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def max_new_tokens_for(
    prompt_tokens: int, *, ratio: float = 1.5, slack: int = 32, cap: int = 2048
) -> int:
    """A generation budget for a prompt of ``prompt_tokens`` tokens.

    The answer is the prompt's plain text plus a little Markdown markup (``#``, ``*``,
    backticks, list markers, link syntax), so it is about as long as the prompt, which also
    holds the system message and template tokens. ``ratio`` leaves room for markup-heavy text
    and ``slack`` for very short prompts; ``cap`` bounds a runaway (a model that never emits
    its end token) on long inputs.
    """
    if prompt_tokens < 0:
        raise ValueError(f"prompt_tokens must be >= 0, not {prompt_tokens}")
    return min(cap, math.ceil(prompt_tokens * ratio) + slack)


def load_for_inference(
    base_dir: Path, adapter_dir: Path | None, threads: int = 0
) -> tuple[Any, Any]:
    """``(model, tokenizer)``: the base with the LoRA adapter merged in (faster), or the base."""
    model, tokenizer = load_model(base_dir, threads=threads)
    if adapter_dir is None:
        return model, tokenizer
    adapter = Path(adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"no LoRA adapter in {adapter.resolve()} (adapter_config.json is missing)"
        )
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged, tokenizer


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids that end an answer: the eos token, plus ``<|im_end|>``/``<|endoftext|>`` if known."""
    vocab = tokenizer.get_vocab()
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids += [vocab[tok] for tok in STOP_TOKENS if tok in vocab]
    return list(dict.fromkeys(ids))


def _budget(
    model: Any, tokenizer: Any, conversation: list[dict], prompt_len: int, fixed: int | None
) -> int:
    """New tokens for one conversation: from its last message's length (the text to format)."""
    if fixed is not None:
        return fixed
    text_tokens = len(tokenizer(conversation[-1]["content"], add_special_tokens=False)["input_ids"])
    budget = max_new_tokens_for(text_tokens)
    context = getattr(model.config, "max_position_embeddings", None)
    return min(budget, max(1, context - prompt_len)) if context else budget


def _until_stop(tokens: list[int], stops: list[int]) -> list[int]:
    """``tokens`` up to (without) the first stop token: the padding after it is dropped too."""
    ends = [tokens.index(stop) for stop in stops if stop in tokens]
    return tokens[: min(ends)] if ends else tokens


def generate(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict]],
    *,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    faithful: bool = False,
) -> list[str]:
    """Greedy answers to ``conversations`` (assistant prompt added), in the input order.

    ``faithful``: decode under ``backends.local.faithful`` so each answer keeps the words of
    its conversation's last message (the plain text) and only adds markup.
    """
    import torch
    from transformers import LogitsProcessorList

    from backends.local.faithful import FaithfulProcessor

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    prompts = [
        tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        for conv in conversations
    ]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)  # longest first
    budgets = [
        _budget(model, tokenizer, conv, len(row), max_new_tokens)
        for conv, row in zip(conversations, ids, strict=True)
    ]
    stops = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    answers: list[str] = [""] * len(ids)
    done = 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad(
            {"input_ids": [ids[i] for i in rows]},
            padding=True,
            padding_side="left",  # the next token of every row sits in the last column
            return_tensors="pt",
        )
        width = batch["input_ids"].shape[1]
        processors = LogitsProcessorList()
        if faithful:
            plains = [conversations[i][-1]["content"] for i in rows]
            processors.append(FaithfulProcessor(tokenizer, plains, stops, width))
        with torch.inference_mode():
            out = model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                do_sample=False,
                num_beams=1,
                use_cache=True,
                max_new_tokens=max(budgets[i] for i in rows),
                eos_token_id=stops,
                pad_token_id=pad_id,
                logits_processor=processors,
            )
        # Each row keeps at most its OWN budget, so an answer never depends on the batching.
        new_tokens = [
            _until_stop(out[j, width:].tolist(), stops)[: budgets[i]] for j, i in enumerate(rows)
        ]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for i, text in zip(rows, texts, strict=True):
            answers[i] = text.strip()
        done += len(rows)
        if progress is not None:
            progress(done, len(ids))
    return answers
