"""The loss weight on the author's decisions (finetune.decision_weight): where it falls, and
that at its default (1) training is exactly what it was."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
from test_local_train import FAST, chat, write_jsonl

import backends.local.decisions as decisions_module
from backends.local.data import IGNORE, collate, tokenize_example
from backends.local.model import load_model
from backends.local.steps import target_loss
from backends.local.train import hashed_settings, run_fingerprint, train
from config.settings import FinetuneSettings

from tinymodel import make_tiny_model

PLAIN = "Tools\nUse small tools:\nhammers\nsaws"
MARKDOWN = "## Tools\n\nUse small tools:\n\n- hammers\n- saws"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    folder = make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return folder, *load_model(folder, threads=1)


def test_module_doctests() -> None:
    assert doctest.testmod(decisions_module).failed == 0


def test_weights_fall_on_markup_and_line_starts(tiny) -> None:
    _, _, tokenizer = tiny
    plainly = tokenize_example(chat(PLAIN, MARKDOWN), tokenizer, 512)
    assert "weights" not in plainly  # the default: every target alike
    example = tokenize_example(chat(PLAIN, MARKDOWN), tokenizer, 512, decision_weight=4.0)
    assert {k: v for k, v in example.items() if k != "weights"} == plainly
    weights, labels = example["weights"], example["labels"]
    assert len(weights) == len(labels)
    assert all((w == 0.0) == (label == IGNORE) for w, label in zip(weights, labels, strict=True))
    heavy = [tokenizer.decode([labels[i]]) for i, w in enumerate(weights) if w == 4.0]
    light = [tokenizer.decode([labels[i]]) for i, w in enumerate(weights) if w == 1.0]
    assert "".join(heavy).count("#") == 2 and "".join(heavy).count("-") == 2
    assert "aws" in "".join(light)  # the item's copied text after "- s"
    assert "<|im_end|>" in light  # the end of the turn: its own weight, 1


def test_weighted_loss_is_the_plain_loss_when_every_weight_is_one(tiny) -> None:
    import torch

    _, model, tokenizer = tiny
    example = tokenize_example(chat(PLAIN, MARKDOWN), tokenizer, 512)
    batch = collate([example], 0)
    ones = collate([example | {"weights": [float(x != IGNORE) for x in example["labels"]]}], 0)
    with torch.no_grad():
        plain_loss, count = target_loss(model, batch)
        ones_loss, ones_count = target_loss(model, ones)
        heavy = collate([tokenize_example(chat(PLAIN, MARKDOWN), tokenizer, 512, 3.0)], 0)
        heavy_loss, _ = target_loss(model, heavy)
    assert count == ones_count and torch.allclose(plain_loss, ones_loss)
    assert heavy_loss > ones_loss  # the decisions count 3 times


def test_the_default_keeps_old_job_names_and_another_weight_forks_them() -> None:
    settings = FinetuneSettings(epochs=2, learning_rate=1e-3)
    old = run_fingerprint("data", "/base", settings)
    assert settings.decision_weight == 1.0  # the default: not hashed, as before it existed
    assert "decision_weight" not in hashed_settings(settings)
    heavier = settings.model_copy(update={"decision_weight": 3.0})
    assert run_fingerprint("data", "/base", heavier) != old


def test_training_with_a_decision_weight_runs_and_differs(tiny, tmp_path: Path) -> None:
    folder, _, _ = tiny
    pairs = [(PLAIN, MARKDOWN), ("Notes\nA line.", "# Notes\n\nA line.")] * 2
    data = write_jsonl(tmp_path / "train.jsonl", pairs)
    base = FAST | {"epochs": 1, "batch_size": 2}
    losses = {}
    for weight in (1.0, 5.0):
        settings = FinetuneSettings(**base, decision_weight=weight)
        run = train(tmp_path / f"run-{weight}", data, None, folder, settings)
        losses[weight] = run["final_train_loss"]
    assert losses[1.0] != losses[5.0]
