"""The faithful decoder's rules on their own (backends/local/faithful.py), without a model: a
fake byte tokenizer and scripted logits, so each limit is tested at its exact boundary."""

from __future__ import annotations

import pytest
import torch

from backends.local.faithful import (
    RUN_LIMIT,
    FaithfulProcessor,
    Matcher,
    byte_alphabet,
    markup_budget,
)

EOS = 256  # the fake tokenizer's end of turn: one token a byte, then this


class ByteTokenizer:
    """A byte-level tokenizer with one token per byte (GPT-2's alphabet) and an end token."""

    def __init__(self) -> None:
        self.all_special_ids = [EOS]
        alphabet = byte_alphabet()
        self.vocab = {alphabet[b]: b for b in range(256)} | {"<eos>": EOS}

    def __len__(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": list(text.encode())}


def decode(plain: str, script, steps: int = 400) -> bytes:
    """Greedy decoding of ``plain`` with logits ``script(step)``: the bytes until EOS."""
    processor = FaithfulProcessor(ByteTokenizer(), [plain], stops=[EOS], width=1)
    ids = torch.zeros((1, 1), dtype=torch.long)
    for step in range(steps):
        chosen = int(processor(ids, script(step)[None, :]).argmax())
        if chosen == EOS:
            return bytes(ids[0, 1:].tolist())
        ids = torch.cat([ids, torch.tensor([[chosen]])], dim=1)
    raise AssertionError("no end of turn")


def text_of(data: bytes) -> bytes:
    """The bytes that are not whitespace."""
    return bytes(b for b in data if b not in b" \t\n")


def test_the_end_of_turn_waits_for_the_whole_input():
    """A model that wants to stop at once still writes every word first."""

    def wants_to_stop(step: int) -> torch.Tensor:
        scores = torch.zeros(len(ByteTokenizer()))
        scores[EOS] = 10.0
        return scores

    answer = decode("Two words.\nAnd a line.", wants_to_stop)
    assert text_of(answer) == b"Twowords.Andaline."  # spaces are the decoder's to place


def test_markup_a_model_prefers_is_kept_and_text_never_changes():
    """A model that loves '#' and 'x' gets its '#'s (markup) but never an 'x' (new text)."""

    def loves_hashes(step: int) -> torch.Tensor:
        scores = torch.zeros(len(ByteTokenizer()))
        scores[ord("#")], scores[ord("x")], scores[ord(" ")] = 5.0, 9.0, 4.0
        return scores

    answer = decode("Tools", loves_hashes)
    assert text_of(answer).replace(b"#", b"") == b"Tools" and answer.startswith(b"#")


def test_markup_budget_is_exact():
    plain = "a b"  # 3 bytes: 64 + 1 markup bytes
    budget = markup_budget(len(plain.encode()))
    assert budget == 65
    first = RUN_LIMIT - 1  # within one run
    assert Matcher(plain).fits(b"*" * first + b"a" + b"*" * (budget - first))
    assert not Matcher(plain).fits(b"*" * first + b"a" + b"*" * (budget - first + 1))


@pytest.mark.parametrize("filler", [b"#", b" "])
def test_a_run_without_text_is_cut_at_run_limit(filler):
    plain = "x" * 200  # a budget far above RUN_LIMIT
    assert Matcher(plain).fits(filler * RUN_LIMIT + b"x")
    assert not Matcher(plain).fits(filler * (RUN_LIMIT + 1))
