"""Copy-ahead decoding (backends/local/decode.py) gives exactly plain greedy's tokens, faster.

"Plain greedy" is ``model.generate`` one token a pass (``generate(draft_tokens=0)``), an
implementation of its own; the tiny random model answers each prompt differently, and the
faithful constraint makes it copy its input (its own picks rarely fit), so both the
accepting and the rejecting paths of verification run. A chain model that copies its input
token by token shows how many forward passes copying takes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_local_model import chain_model, chat, prompt_ids

from backends.local.decode import Argmax, Drafter, _compact, decode
from backends.local.generate import generate
from backends.local.model import load_model

TEXTS = [
    "Hi there",
    "A much longer piece of plain text, which goes on and on about writing clearly.\n"
    "Tools\nKeep a journal: one file a day.\nuse grep to find things",
    "Medium length text here, with a list:\none\ntwo\nthree",
    "Short heading\nThen a paragraph that explains what the heading promised, in words.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model: Path):
    """The tiny model (conftest) and its tokenizer, loaded once for this module."""
    return load_model(tiny_model, threads=1)


def passes(model) -> list[int]:
    """A list that grows by one on every forward pass of ``model``."""
    seen: list[int] = []
    model.register_forward_hook(lambda *_: seen.append(1))
    return seen


@pytest.mark.parametrize("faithful", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_copy_ahead_gives_plain_greedys_tokens(tiny, faithful: bool, batch_size: int) -> None:
    model, tokenizer = tiny
    conversations = [chat(t) for t in TEXTS]
    assert len({len(prompt_ids(tokenizer, c)) for c in conversations}) == len(TEXTS)  # padded

    def answers(draft_tokens: int) -> tuple[list[str], list[dict]]:
        details: list[dict] = []
        out = generate(
            model, tokenizer, conversations, batch_size=batch_size, faithful=faithful,
            draft_tokens=draft_tokens, details=details, max_new_tokens=60, copy_ahead_rows=3,
        )  # fmt: skip
        return out, details

    plain, plain_details = answers(0)
    assert len(set(plain)) == len(TEXTS)
    for draft_tokens in (1, 4, 10, 40):  # 40: most columns rejected, so the cache compacts
        assert answers(draft_tokens) == (plain, plain_details)


def test_copying_takes_fewer_passes_under_the_constraint(tiny) -> None:
    model, tokenizer = tiny
    seen = passes(model)
    details: list[dict] = []
    generate(model, tokenizer, [chat(TEXTS[3])], faithful=True, details=details,
             copy_ahead_rows=1)  # fmt: skip
    tokens = details[0]["completion_tokens"]
    assert details[0]["finish_reason"] == "stop"
    # the random model adds junk markup between copied words and at line starts; the copies
    # are drafted
    assert len(seen) < 0.8 * tokens


def test_a_fine_tunes_batches_copy_ahead_and_a_base_models_do_not(tiny) -> None:
    """A fine-tune (``fine_tuned``, set when an adapter is merged) copies ahead, in batches
    too; a base model decodes a token a pass with ``model.generate``. Same answers."""
    model, tokenizer = tiny
    conversations = [chat(t) for t in TEXTS[1:]]
    seen = passes(model)

    def answers() -> tuple[list[str], int]:
        details: list[dict] = []
        out = generate(model, tokenizer, conversations, batch_size=3, faithful=True,
                       details=details)  # fmt: skip
        return out, max(d["completion_tokens"] for d in details)

    base, longest = answers()
    assert len(seen) >= longest  # one pass a token (and the prompt's)
    seen.clear()
    model.fine_tuned = True
    try:
        assert answers() == (base, longest)
    finally:
        del model.fine_tuned
    assert len(seen) < longest  # some passes kept drafted tokens


def test_a_copying_model_takes_one_pass_per_draft(tiny_model: Path) -> None:
    model, tokenizer = load_model(tiny_model, threads=1)
    prompt = prompt_ids(tokenizer, chat("Copy this"))
    source = [t for t in range(300, 313) if t != prompt[-1]][:12]  # 12 distinct tokens
    [stop] = tokenizer.convert_tokens_to_ids(["<|im_end|>"])
    chain = dict(zip([prompt[-1], *source], [*source, stop], strict=True))
    model, tokenizer = chain_model(tiny_model, chain)
    seen = passes(model)
    [(tokens, reason)] = decode(
        model, [prompt], [source], [100], Argmax(), stops=[stop], pad_id=0, draft_tokens=4
    )
    assert (tokens, reason) == (source, "stop")
    # the prompt's pass gives the first token; then 5 a pass (4 drafted + the model's own):
    # tokens 2-6, 7-11, then 12 and the end token
    assert len(seen) == 4
    seen.clear()
    assert decode(
        model, [prompt], [source], [100], Argmax(), stops=[stop], pad_id=0, draft_tokens=0
    ) == [(source, "stop")]
    assert len(seen) == 13  # one pass a token, the end token included


def test_budget_and_cancel_end_rows(tiny) -> None:
    model, tokenizer = tiny
    prompt = prompt_ids(tokenizer, chat(TEXTS[1]))
    source = tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]
    kept = decode(model, [prompt, prompt], [source, source], [5, 9], Argmax(), stops=[2],
                  pad_id=0)  # fmt: skip
    assert [(len(tokens), reason) for tokens, reason in kept] == [(5, "length"), (9, "length")]
    assert kept[0][0] == kept[1][0][:5]
    calls: list[int] = []
    [(tokens, reason)] = decode(
        model, [prompt], [source], [50], Argmax(), stops=[2], pad_id=0,
        should_stop=lambda: calls.append(1) or len(calls) > 2,
    )  # fmt: skip
    assert reason == "cancelled" and 2 <= len(tokens) < 50


def test_drafter_follows_the_copy() -> None:
    drafter = Drafter([1, 2, 3, 1, 2, 4, 5])
    assert drafter.propose([1, 2], 2) == [3, 1]
    assert drafter.propose([1, 2, 3, 1, 2], 3) == [4, 5]  # the later [1, 2], not the first
    assert drafter.propose([9, 9, 3], 5) == [1, 2, 4, 5]  # falls back to the last token alone
    assert drafter.propose([1, 2], 0) == []


def test_compact_drops_masked_columns_in_order() -> None:
    import torch

    class Layer:
        def __init__(self, keys):
            self.keys, self.values = keys, keys + 100

    keys = torch.arange(2 * 6, dtype=torch.float).reshape(2, 1, 6, 1)
    cache = type("Cache", (), {"layers": [Layer(keys)]})()
    mask = torch.tensor([[0, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 0]])
    new = _compact(cache, mask)
    assert new.tolist() == [[0, 1, 1], [1, 1, 1]]
    kept = cache.layers[0].keys[:, 0, :, 0].tolist()
    assert kept[0][1:] == [1.0, 4.0] and kept[1] == [6.0, 8.0, 10.0]
    assert cache.layers[0].values[:, 0, :, 0].tolist()[1] == [106.0, 108.0, 110.0]
    half = torch.tensor([[1, 1, 0, 0]])  # kept columns are not fewer than masked: untouched
    assert _compact(cache, half) is half
