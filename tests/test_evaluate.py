"""The evaluation stage end to end: retrain on the sample with the tiny model, then the report,
runs.parquet and champion/challenger; and faithful decoding with the tiny model."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import shutil
import sys
import types

import duckdb
import pandas as pd
import pytest
from PIL import Image

from backends.local.faithful import Matcher
from backends.local.generate import generate
from backends.local.model import load_model
from config.runtime import results_in
from config.settings import load_settings
from core.chat_data import to_chat, write_jsonl
from core.markdown import markdown_to_plain
from core.runs import current_model
from flows.evaluate import evaluate
from tasks.evaluate import (
    computed_model,
    computing_function,
    decide_promotion,
    models_to_compare,
    read_test_examples,
)
from tasks.evaluate.ceiling import without_invisible
from tasks.store import read_runs

from conftest import SAMPLE, task_states
from tinymodel import chat

N_SAMPLE = len(list((SAMPLE / "posts").glob("*.html")))
KEYS = {"model_id", "cer", "chrf", "structure_f1", "text_cer", "seconds_per_example", "cost_usd"}
NEW_KEYS = {"visible_f1", "invisible_f1", "gap_closed"}


def test_retrain_writes_every_output(retrained):
    tmp_path, _, result = retrained
    assert result["ingest"]["total"] == N_SAMPLE >= 12
    assert result["ingest"]["failures"] == [] and result["ingest"]["skipped"] == []
    articles = pd.read_parquet(tmp_path / "parquet" / "articles.parquet")
    assert len(articles) == N_SAMPLE and articles["author"].eq("Maren Holt").all()
    examples = duckdb.sql(
        f"SELECT split, count(DISTINCT article_id) AS n FROM "
        f"'{tmp_path}/parquet/examples.parquet' GROUP BY split ORDER BY split"
    ).fetchall()
    assert {name for name, _ in examples} == {"test", "train", "valid"}
    stats = json.loads((tmp_path / "jsonl" / "stats.json").read_text())
    for split in ("train", "valid", "test"):
        lines = (tmp_path / "jsonl" / f"{split}.jsonl").read_text().splitlines()
        assert len(lines) == stats["splits"][split]["n_examples"] > 0
        first = json.loads(lines[0])["messages"]
        assert [m["role"] for m in first] == ["system", "user", "assistant"]
        assert first[0]["content"] == "You render plain text into markdown format."
    assert stats["cost_estimate"]["usd"] > 0
    job = result["finetune"]
    run_dir = tmp_path / "models" / job["model_id"]
    assert job["status"] == "succeeded" and job["metrics"]["steps"] == 3
    assert (run_dir / "adapter" / "adapter_config.json").exists()
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + 3


def test_report_files_exist_and_parse(retrained):
    data, _, result = retrained
    report_dir = data / "reports" / result["evaluate"]["run_id"]
    assert (data / "reports" / "latest").resolve() == report_dir.resolve()
    metrics = json.loads((report_dir / "metrics.json").read_text())
    models = metrics["models"]
    assert set(models) == {
        "identity",
        "ceiling",
        "rules",
        "author_rules",
        "base",
        "base_raw",
        "finetuned",
        "finetuned_raw",
    }
    for name, row in models.items():
        assert set(row) >= KEYS | NEW_KEYS, name
        assert row["cer"]["low"] <= row["cer"]["mean"] <= row["cer"]["high"], name
        assert row["cost_usd"] == 0.0
        for key in NEW_KEYS:
            assert set(row[key]) == {"mean", "low", "high"}, (name, key)
    # the ceiling closes the whole gap, identity none of it; the ceiling has every visible
    # element and no invisible one
    assert models["ceiling"]["gap_closed"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert models["identity"]["gap_closed"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert models["ceiling"]["visible_f1"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert models["ceiling"]["model_id"] == "ceiling" and models["rules"]["model_id"] == "rules"
    assert [(c["model"], c["against"]) for c in metrics["paired_cer"]] == [
        ("finetuned", "identity"),
        ("finetuned", "base"),
        ("finetuned", "rules"),
        ("finetuned", "author_rules"),
    ]
    assert models["finetuned"]["model_id"] == result["finetune"]["model_id"]
    assert metrics["examples"] == 3
    faithful = ("identity", "ceiling", "rules", "base", "finetuned")
    for name in faithful:  # faithful mode keeps every word
        assert models[name]["text_cer"]["mean"] == 0.0, name
    report = (report_dir / "report.md").read_text()
    assert "| finetuned_raw |" in report and "## Worst examples" in report
    assert "| ceiling |" in report and "| rules |" in report and "gap closed" in report
    assert "## Paired comparisons" in report and "finetuned − rules: CER" in report
    by_kind = report.split("## Structure F1 by element kind")[1].split("##")[0]
    expected = models["identity"]["structure_by_kind"]
    assert expected  # the sample has headings
    for kind, value in expected.items():  # identity adds no markup: F1 0 for every kind
        assert value == {"f1": 0.0, "reference": value["reference"]} and kind in by_kind
    assert "| (in the references) |" in by_kind and "| finetuned |" in by_kind
    assert report.count("### Test chunk") == 3
    for png in ("metrics.png", "loss.png"):
        assert Image.open(report_dir / png).size[0] > 300
    answers = [json.loads(line) for line in (report_dir / "answers.jsonl").read_text().splitlines()]
    assert len([a for a in answers if a]) == 3


def test_faithful_answers_keep_the_input_text(retrained):
    data, _, result = retrained
    examples = read_test_examples(data, 3)
    report_dir = data / "reports" / result["evaluate"]["run_id"]
    rows = [json.loads(line) for line in (report_dir / "answers.jsonl").read_text().splitlines()]
    for row, example in zip(rows, examples, strict=True):
        assert row["plain"] == example["plain"]
        for name in ("identity", "base", "finetuned", "rules"):
            assert markdown_to_plain(row[name]) == example["plain"], name
        # the ceiling is not repaired: its text is the plain text already
        assert markdown_to_plain(row["ceiling"]) == example["plain"]
        assert row["ceiling"] == without_invisible(example["reference"])


def test_first_run_promotes_and_records(retrained):
    data, _, result = retrained
    decision = result["evaluate"]["decision"]
    assert decision == {"promote": True, "reason": "no champion yet", "cer_difference": None}
    assert current_model(data) == result["finetune"]["model_id"]
    runs = read_runs(data)
    assert [r["model_id"] for r in runs] == [result["finetune"]["model_id"]]
    assert runs[0]["promoted"] and runs[0]["champion_id"] is None
    assert pd.read_parquet(data / "parquet" / "runs.parquet")["cer"].iloc[0] == pytest.approx(
        result["evaluate"]["models"]["finetuned"]["cer"]["mean"]
    )


def test_challenger_is_promoted_exactly_when_not_worse(retrained, tmp_path):
    """A second model (the same run under another id) meets the champion on the same examples."""
    data, profile, result = retrained
    champion = result["finetune"]["model_id"]
    twin = champion[:-12] + "0" * 12
    shutil.copytree(data / "models" / champion, data / "models" / twin)
    with results_in(data):
        state = evaluate(profile, str(data), model_id=twin, promote=True, return_state=True)
    report = state.result()
    assert set(report["models"]) >= {"finetuned", "champion"}
    # only the new model generates: identity, base and the champion's answers are cached
    states = task_states(state)
    assert states[("generate_answers", "Completed")] == 2  # the twin, faithful and raw
    assert states[("generate_answers", "Cached")] == 8  # with identity, ceiling, both rules
    new, old = report["models"]["finetuned"], report["models"]["champion"]
    assert [s["cer"] for s in new["scores"]] == [s["cer"] for s in old["scores"]]
    decision = report["decision"]
    assert decision["cer_difference"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert decision["promote"] and current_model(data) == twin
    runs = read_runs(data)
    assert [r["model_id"] for r in runs][-1] == twin and runs[-1]["champion_id"] == champion
    # the same comparison the other way round, with the champion made better by 0.1 a chunk
    better = {**old, "scores": [{**s, "cer": s["cer"] - 0.1} for s in old["scores"]]}
    verdict = decide_promotion(new, better, samples=200)
    assert not verdict["promote"] and "is worse than" in verdict["reason"]


def test_matcher_allows_markup_and_refuses_new_words():
    state = Matcher("Title\nSome text\ta\tb")
    assert state.feed(b"## Title\n\nSome *text*\n\n| a | b |")
    assert state.done
    assert not Matcher("Title").fits(b"Titles")
    looping = Matcher("x")
    assert looping.feed(b"x") and not looping.fits(b"#" * 200)  # runs of markup are bounded


def test_faithful_generation_keeps_words_with_a_random_model(tiny_model):
    """The tiny model is untrained noise; constrained decoding still only adds markup."""
    model, tokenizer = load_model(tiny_model)
    texts = ["Hello world, this is plain text.", "Second one\nwith two lines"]
    chats = [chat(t) for t in texts]
    answers = generate(model, tokenizer, chats, faithful=True, max_new_tokens=400)

    def words(s: str) -> str:
        return "".join(c for c in s if not c.isspace() and c not in "#*_>`-+|:.\\0123456789")

    for text, answer in zip(texts, answers, strict=True):
        assert words(answer) == words(text)


def stand_in_rules(plain: str) -> str:
    """A stand-in rule-based formatter: every line a paragraph."""
    return plain.replace("\n", "\n\n")


def test_computed_models_are_compared_and_follow_their_code(monkeypatch, tmp_path):
    rules = types.ModuleType("core.rules")
    rules.rules_markdown = stand_in_rules
    monkeypatch.setitem(sys.modules, "core.rules", rules)
    assert computing_function("rules")("a\nb") == "a\n\nb"
    assert computing_function("ceiling")("Some *soft* `x`.") == "Some soft x."
    assert computing_function("identity")("a *b*") == "a *b*"
    conf = load_settings(data_dir=tmp_path)
    models = models_to_compare("new", None, conf, {"plain": "a", "reference": "# a"})
    assert [(name, m.backend) for name, m in models.items()] == [
        ("identity", "computed"),
        ("ceiling", "computed"),
        ("rules", "computed"),
        ("base", conf.finetune.backend),
        ("finetuned", conf.finetune.backend),
    ]
    identity, ceiling, rules = models["identity"], models["ceiling"], models["rules"]
    # the cache key holds the source of the module that computes the answers: here this file
    assert rules.source_sha256 != identity.source_sha256
    ceiling_source = inspect.getsource(importlib.import_module("tasks.evaluate.ceiling"))
    assert ceiling.source_sha256 == hashlib.sha256(ceiling_source.encode()).hexdigest()
    assert identity.source_sha256 != ceiling.source_sha256  # identity: not ceiling.py
    assert computed_model("rules") == rules


def test_the_authors_rules_are_counted_from_the_train_split_and_follow_it(tmp_path) -> None:
    """With a train split, the author's rules are compared too; their cached answers follow
    the split they were counted from."""
    from core.author_rules import AuthorRules

    jsonl = tmp_path / "jsonl"
    jsonl.mkdir()
    pairs = [("Intro here.\n\nSetup\n\nLong text.", "Intro here.\n\n### Setup\n\nLong text.")] * 3
    lines = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": p},
                           {"role": "assistant", "content": m}]} for p, m in pairs]  # fmt: skip
    (jsonl / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    conf = load_settings(data_dir=tmp_path)
    models = models_to_compare("new", None, conf, {"plain": "a", "reference": "# a"})
    assert list(models)[:4] == ["identity", "ceiling", "rules", "author_rules"]
    author = computing_function("author_rules", tmp_path)
    assert author == AuthorRules.fit(pairs)
    assert author("Intro there.\n\nDeploy\n\nLong words.") == (
        "Intro there.\n\n### Deploy\n\nLong words."
    )
    before = computed_model("author_rules", tmp_path)
    assert before == models["author_rules"]
    (jsonl / "train.jsonl").write_text(json.dumps(lines[0]) + "\n")
    assert computed_model("author_rules", tmp_path).train_sha256 != before.train_sha256
    assert list(models_to_compare("new", None, conf, None))[3] != "author_rules"  # no one-shot


def test_at_most_max_examples_test_chunks_spread_over_the_split(tmp_path):
    # the split is written article by article: the first N chunks would be a few articles'
    chats = [to_chat(f"Chunk {i}.", f"# Chunk {i}.", "sys") for i in range(10)]
    write_jsonl(tmp_path / "jsonl" / "test.jsonl", chats)
    picked = [e["plain"] for e in read_test_examples(tmp_path, 4)]
    assert picked == ["Chunk 0.", "Chunk 3.", "Chunk 6.", "Chunk 9."]
    assert len(read_test_examples(tmp_path)) == len(read_test_examples(tmp_path, 10)) == 10
