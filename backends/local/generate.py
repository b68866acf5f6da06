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

For a server (``server``) the same function also samples (``temperature`` >
0, ``top_p``, ``seed``), streams one conversation's tokens (``streamer``), stops early when
``should_stop()`` turns true, and reports token counts and why each answer ended
(``details``). Left at their defaults these change nothing.

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

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from typing_extensions import TypedDict

from backends.local.calibrate import DECODING_JSON
from backends.local.decode import DRAFT_TOKENS
from backends.local.merge import merge_adapter
from backends.local.model import load_model, quiet_peft
from backends.local.scaffold import Reader, Scaffold, load_scaffold, scaffolded
from core.chat_data import Message

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


class Usage(TypedDict):
    """What one conversation's answer took (:func:`generate`'s ``details``)."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "cancelled"]


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
    base_dir: Path,
    adapter_dir: Path | None,
    threads: int = 0,
    device: str = "cpu",
    light: bool = False,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` on ``device``: the base with the LoRA adapter merged in (faster),
    or the base. ``light``: without transformers where ``load_model`` can (greedy only); an
    adapter only PEFT can merge loads the base through transformers after all."""
    model, tokenizer = load_model(base_dir, threads=threads, device=device, light=light)
    if adapter_dir is None:
        return model, tokenizer
    adapter = Path(adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"no LoRA adapter in {adapter.resolve()} (adapter_config.json is missing)"
        )
    if merge_adapter(model, adapter):  # a plain LoRA: merged in place, without PEFT
        merged = model
    elif not hasattr(model, "generate"):  # the light model: PEFT needs transformers' own
        return load_for_inference(base_dir, adapter_dir, threads, device)
    else:
        from peft import PeftModel

        with quiet_peft():
            peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
            merged = peft_model.merge_and_unload()
    merged.eval()
    merged.fine_tuned = True  # it copies its input: copy-ahead pays in batches too (generate)
    decoding = adapter / DECODING_JSON
    if decoding.is_file():  # what it reads, and its markup bias (backends.local.calibrate)
        found = json.loads(decoding.read_text())
        merged.markup_bias = float(found["markup_bias"])
        merged.scaffold_bias = float(found.get("scaffold_bias", 0.0))  # older models: none
        merged.block_bias = float(found.get("block_bias", merged.scaffold_bias))  # ... or one
        merged.scaffold = load_scaffold(found.get("scaffold", "none"), adapter)
    return merged, tokenizer


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids that end an answer: the eos token, plus ``<|im_end|>``/``<|endoftext|>`` if known."""
    vocab = tokenizer.get_vocab()
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids += [vocab[tok] for tok in STOP_TOKENS if tok in vocab]
    return list(dict.fromkeys(ids))


def _budget(
    model: Any, tokenizer: Any, conversation: list[Message], prompt_len: int, fixed: int | None
) -> int:
    """New tokens for one conversation: from its last message's length (the text to format)."""
    if fixed is not None:
        return fixed
    text_tokens = len(tokenizer(conversation[-1]["content"], add_special_tokens=False)["input_ids"])
    budget = max_new_tokens_for(text_tokens)
    context = getattr(model.config, "max_position_embeddings", None)
    return min(budget, max(1, context - prompt_len)) if context else budget


def _stopping_criteria(should_stop: Callable[[], bool] | None) -> Any:
    """``StoppingCriteriaList`` that ends every row once ``should_stop()`` is true (or empty)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Callback(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = bool(should_stop()) if should_stop is not None else False
            return torch.full(
                (input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([_Callback()] if should_stop is not None else [])


def _sampling(temperature: float, top_p: float) -> dict[str, Any]:
    """``model.generate`` arguments: greedy (nothing to add) at 0, else OpenAI-style sampling."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, not {temperature}, {top_p}")
    if temperature == 0:
        return {}
    # top_k=0 turns off the top-k filter a generation config may carry: OpenAI has none
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}


def _until_stop(tokens: list[int], stops: list[int]) -> list[int]:
    """``tokens`` up to (without) the first stop token: the padding after it is dropped too."""
    ends = [tokens.index(stop) for stop in stops if stop in tokens]
    return tokens[: min(ends)] if ends else tokens


@dataclass
class Batch:
    """What decoding each batch of one ``generate`` call needs besides its rows."""

    tokenizer: Any
    faithful: bool
    stops: list[int]
    streamer: Any
    should_stop: Callable[[], bool] | None
    sampling: dict[str, Any]
    seed: int | None
    markup_bias: float = 0.0  # faithful only: logits added to markup tokens at a line start
    scaffold_bias: float = 0.0  # faithful only: logits added to tokens that follow the scaffold
    block_bias: float = 0.0  # ... where a block's kind is decided (``backends.local.faithful``)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.stops[0]


@dataclass
class Rows:
    """The conversations of one batch, in the batch's order."""

    prompts: list[list[int]]  # token ids: the chat template with the assistant prompt
    plains: list[str]  # each text to format: what a faithful answer keeps
    texts: list[str]  # each text as the model reads it (its scaffold)
    budgets: list[int]  # each answer's most new tokens


def _decode_copying(
    model: Any, batch: Batch, rows: Rows, draft_tokens: int
) -> list[tuple[list[int], str]]:
    """Greedy answers through ``backends.local.decode``: each row's tokens and why it ended."""
    import torch

    from backends.local.decode import Argmax, decode

    tokenizer, streamer = batch.tokenizer, batch.streamer
    prompts, plains, texts, budgets = rows.prompts, rows.plains, rows.texts, rows.budgets
    chooser = faithful_chooser(batch, plains, texts, 0) if batch.faithful else Argmax()
    sources = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    on_tokens = None
    if streamer is not None:  # as model.generate feeds a streamer: the prompt, then tokens
        streamer.put(torch.tensor(prompts[0]))

        def on_tokens(row: int, tokens: list[int]) -> None:
            streamer.put(torch.tensor(tokens))

    kept = decode(
        model, prompts, sources, budgets, chooser, stops=batch.stops, pad_id=batch.pad_id,
        draft_tokens=draft_tokens, on_tokens=on_tokens, should_stop=batch.should_stop,
    )  # fmt: skip
    if streamer is not None:
        streamer.end()
    return kept


def faithful_chooser(batch: Batch, plains: list[str], texts: list[str], width: int) -> Any:
    """The faithful decoder's rule for rows with inputs ``plains``, read as ``texts``."""
    from backends.local.faithful import FaithfulProcessor

    return FaithfulProcessor(
        batch.tokenizer, plains, batch.stops, width, batch.markup_bias, texts, batch.scaffold_bias,
        batch.block_bias,
    )  # fmt: skip


def _decode_one_by_one(model: Any, batch: Batch, rows: Rows) -> list[tuple[list[int], str]]:
    """Answers from ``model.generate`` (sampling, or greedy one token a pass)."""
    import torch
    from transformers import LogitsProcessorList

    prompts, budgets = rows.prompts, rows.budgets

    padded = batch.tokenizer.pad(
        {"input_ids": prompts},
        padding=True,
        padding_side="left",  # the next token of every row sits in the last column
        return_tensors="pt",
    )
    width = padded["input_ids"].shape[1]
    processors = LogitsProcessorList()
    if batch.faithful:
        processors.append(faithful_chooser(batch, rows.plains, rows.texts, width))
    extra: dict[str, Any] = {"do_sample": False, **batch.sampling}
    if batch.streamer is not None:
        extra["streamer"] = batch.streamer
    if batch.should_stop is not None:
        extra["stopping_criteria"] = _stopping_criteria(batch.should_stop)
    fork_devices: list = []  # CPU only: fork_rng must not touch (or initialise) CUDA
    with (
        torch.inference_mode(),
        torch.random.fork_rng(devices=fork_devices, enabled=batch.seed is not None),
    ):
        if batch.seed is not None:
            torch.manual_seed(batch.seed)
        out = model.generate(
            input_ids=padded["input_ids"].to(model.device),
            attention_mask=padded["attention_mask"].to(model.device),
            num_beams=1,
            use_cache=True,
            max_new_tokens=max(budgets),
            eos_token_id=batch.stops,
            pad_token_id=batch.pad_id,
            logits_processor=processors,
            **extra,
        )
    # Each row keeps at most its OWN budget, so an answer never depends on the batching.
    kept = []
    for j, budget in enumerate(budgets):
        row = out[j, width:].tolist()
        tokens = _until_stop(row, batch.stops)[:budget]
        ended = len(tokens) < min(len(row), budget) and row[len(tokens)] in batch.stops
        reason = "stop" if ended else "length" if len(tokens) >= budget else "cancelled"
        kept.append((tokens, reason))
    return kept


def generate(
    model: Any,
    tokenizer: Any,
    conversations: list[list[Message]],
    *,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
    faithful: bool = False,
    max_new_tokens_cap: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    streamer: Any = None,
    should_stop: Callable[[], bool] | None = None,
    details: list[Usage] | None = None,
    draft_tokens: int = DRAFT_TOKENS,
    copy_ahead_rows: int | None = None,
    markup_bias: float | None = None,
    scaffold: Scaffold | Reader | None = None,
    scaffold_bias: float | None = None,
    block_bias: float | None = None,
) -> list[str]:
    """Greedy answers to ``conversations`` (assistant prompt added), in the input order.

    ``faithful``: decode under ``backends.local.faithful`` so each answer keeps the words of
    its conversation's last message (the plain text) and only adds markup.
    ``max_new_tokens_cap``: upper bound on every budget (fixed or derived from the input).
    ``temperature`` > 0 samples (with nucleus ``top_p``; ``seed`` makes it reproducible
    without touching the caller's RNG); 0 is greedy. ``streamer``: a transformers streamer
    fed each new token (one conversation only). ``should_stop``: polled after every token;
    true ends generation. ``details``: if given, one dict per conversation is appended, in
    the input order: ``prompt_tokens``, ``completion_tokens`` and ``finish_reason`` ("stop":
    an end token; "length": the budget; "cancelled": ``should_stop``).
    ``draft_tokens``: greedy batches of at most ``copy_ahead_rows`` rows copy ahead
    (``backends.local.decode``), checking up to this many of the input's tokens per forward
    pass; 0, or a larger batch, decodes one token a pass with ``model.generate``. Both give
    the same tokens. ``copy_ahead_rows`` None: every batch of a fine-tune (it copies its
    input, so most drafts are kept) and none of a base model's (it adds markup and newlines
    between copied words, so few drafts are kept, and in a batch every row pays for the
    longest draft: bench/generate_speed.py measured ``model.generate`` faster for it).
    ``markup_bias``: faithful only, logits added to markup-only tokens at each line start;
    None takes the model's own (chosen on its valid split when it was trained, else 0).
    ``scaffold_bias``: faithful only, logits added to the tokens that follow what the model
    read (``backends.local.follow``) inside a line; None takes the model's own, as
    ``markup_bias``. ``block_bias``: the same where a block's kind is decided (a line start,
    a line break); None takes the model's own, else the scaffold bias.
    ``scaffold``: what the model reads of each text to format (``backends.local.scaffold``); None
    takes the model's own (what it was trained on, else the text itself). Answers keep the
    plain text's words whatever the scaffold.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if streamer is not None and len(conversations) != 1:
        raise ValueError(f"a streamer takes one conversation, not {len(conversations)}")
    sampling = _sampling(temperature, top_p)
    plain_texts = [conv[-1]["content"] for conv in conversations]
    conversations = [
        scaffolded(conv, scaffold or getattr(model, "scaffold", "none")) for conv in conversations
    ]
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
    if max_new_tokens_cap is not None:
        budgets = [min(budget, max(1, max_new_tokens_cap)) for budget in budgets]
    found: list[Usage] = [{} for _ in ids]  # type: ignore[typeddict-item]  # each row's, below
    answers: list[str] = [""] * len(ids)
    if markup_bias is None:
        markup_bias = getattr(model, "markup_bias", 0.0)
    if scaffold_bias is None:
        scaffold_bias = getattr(model, "scaffold_bias", 0.0)
    if block_bias is None:
        block_bias = getattr(model, "block_bias", scaffold_bias)
    batch = Batch(
        tokenizer,
        faithful,
        stop_token_ids(tokenizer),
        streamer,
        should_stop,
        sampling,
        seed,
        float(markup_bias),
        float(scaffold_bias),
        float(block_bias),
    )
    copy_rows = copy_ahead_rows
    if copy_rows is None:
        copy_rows = batch_size if getattr(model, "fine_tuned", False) else 0
    light = not hasattr(model, "generate")  # backends.local.llama: decode's greedy only
    if light and sampling:
        raise ValueError("the light model answers greedily: load it with light=False")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        these = Rows(
            [ids[i] for i in rows],
            [plain_texts[i] for i in rows],
            [conversations[i][-1]["content"] for i in rows],  # as the model reads them
            [budgets[i] for i in rows],
        )
        if light or (draft_tokens > 0 and not sampling and len(rows) <= copy_rows):
            kept = _decode_copying(model, batch, these, draft_tokens)
        else:
            kept = _decode_one_by_one(model, batch, these)
        texts = tokenizer.batch_decode([tokens for tokens, _ in kept], skip_special_tokens=True)
        for i, text, (tokens, reason) in zip(rows, texts, kept, strict=True):
            answers[i] = text.strip()
            found[i] = {
                "prompt_tokens": len(ids[i]),
                "completion_tokens": len(tokens),
                "finish_reason": reason,
            }
        if progress is not None:
            progress(start + len(rows), len(ids))
    if details is not None:
        details.extend(found)
    return answers
