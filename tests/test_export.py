"""core/chat_data.py (cookbook format checks, token counts, epochs, cost) and tasks/export.py
(the JSONL export)."""

from __future__ import annotations

import doctest
import json
import logging
import pickle
from pathlib import Path

import pytest

import core.chat_data as chat_data_module
from config.settings import ExportSettings
from core.chat_data import (
    DatasetError,
    dataset_stats,
    default_epochs,
    distribution,
    format_errors,
    num_assistant_tokens_from_messages,
    num_tokens_from_messages,
    read_jsonl,
    to_chat,
    validate_examples,
    write_jsonl,
)
from core.tokens import encoding
from tasks.export import export_jsonl, summary_markdown

SYSTEM = "You render plain text into markdown format."
ASSISTANT = {"role": "assistant", "content": "a"}
EXPORT = ExportSettings()


def good(i: int = 0) -> dict:
    """A valid chat example."""
    return to_chat(f"Plain {i}.", f"**Plain** {i}.", SYSTEM)


def row(article_id: str, chunk: int, split: str, markdown: str | None = None) -> dict:
    """An input row as the examples stage produces it."""
    md = markdown if markdown is not None else f"# {article_id} {chunk}\n\n*text* {chunk}"
    return {
        "split": split,
        "plain": f"{article_id} {chunk}\n\ntext {chunk}",
        "markdown": md,
        "article_id": article_id,
        "chunk": chunk,
    }


def msgs(*pairs: tuple[str, str]) -> dict:
    """An example from (role, content) pairs."""
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


# --- format checks --------------------------------------------------------------------------


def test_to_chat_shape() -> None:
    assert to_chat("a b", "*a* b", SYSTEM) == {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "a b"},
            {"role": "assistant", "content": "*a* b"},
        ]
    }


def test_valid_example_passes() -> None:
    assert format_errors(good()) == []
    validate_examples([good(i) for i in range(5)], "train.jsonl")  # no exception
    # the cookbook also accepts name, weight and function messages
    ok = {
        "messages": [
            {"role": "user", "content": "hi", "name": "bob"},
            {"role": "assistant", "content": "hello", "weight": 1},
        ]
    }
    assert format_errors(ok) == []


BAD_CASES = [
    # (example, its categories, the reason in the error message)
    (["not", "a", "dict"], ["data_type"], "example is an array, not an object"),
    ("just text", ["data_type"], "example is a string, not an object"),
    ({"prompt": "x"}, ["missing_messages_list"], "no 'messages' list"),
    ({"messages": []}, ["missing_messages_list"], "'messages' is empty"),
    (
        {"messages": [{"role": "user"}, ASSISTANT]},
        ["message_missing_key", "missing_content"],  # cookbook: no content is also missing
        "message 1 has no 'content'",
    ),
    (
        {"messages": [{"role": "user", "content": "q", "tone": "x"}, ASSISTANT]},
        ["message_unrecognized_key"],
        "message 1 has unrecognized key 'tone'",
    ),
    (
        msgs(("user", "q"), ("bot", "a")),
        ["unrecognized_role", "example_missing_assistant_message"],
        "message 2 has unrecognized role 'bot'",
    ),
    (
        msgs(("system", SYSTEM), ("bot", "a"), ("assistant", "b")),
        ["unrecognized_role"],
        "message 2 has unrecognized role 'bot'",
    ),
    (msgs(("user", ""), ("assistant", "a")), ["missing_content"], "message 1 content is empty"),
    (
        {"messages": [{"role": "user", "content": 5}, ASSISTANT]},
        ["missing_content"],
        "message 1 content is a number, not a string",
    ),
    (
        msgs(("system", SYSTEM), ("user", "q")),
        ["example_missing_assistant_message"],
        "no assistant message",
    ),
]


@pytest.mark.parametrize(("example", "categories", "reason"), BAD_CASES)
@pytest.mark.parametrize("line", [1, 7])
def test_each_error_category_names_file_and_line(
    example: object, categories: list[str], reason: str, line: int
) -> None:
    assert format_errors(example) == categories
    examples = [good(i) for i in range(9)]
    examples[line - 1] = example
    with pytest.raises(DatasetError) as info:
        validate_examples(examples, "train.jsonl")
    err = info.value
    counts = {c: categories.count(c) for c in categories}
    tally = ", ".join(f"{c}: {n}" for c, n in counts.items())
    assert str(err) == f"train.jsonl line {line}: {reason} (format errors: {tally})"
    assert (err.file, err.line, err.reason, err.counts) == ("train.jsonl", line, reason, counts)
    assert isinstance(err, ValueError)


def test_brief_example_message_exactly() -> None:
    examples = [good(i) for i in range(10)]
    examples[6] = msgs(("user", "q"), ("bot", "a"), ("assistant", "b"))
    with pytest.raises(DatasetError) as info:
        validate_examples(examples, "train.jsonl")
    assert str(info.value) == (
        "train.jsonl line 7: message 2 has unrecognized role 'bot' "
        "(format errors: unrecognized_role: 1)"
    )


def test_all_errors_counted_first_line_reported() -> None:
    examples = [good(0), good(1), 42, good(3), msgs(("user", "q"), ("bot", "")), 7]
    with pytest.raises(DatasetError) as info:
        validate_examples(examples, "valid.jsonl")
    assert info.value.line == 3
    assert info.value.counts == {
        "data_type": 2,
        "unrecognized_role": 1,
        "missing_content": 1,
        "example_missing_assistant_message": 1,
    }


def test_non_object_message_and_non_list_messages() -> None:
    assert format_errors({"messages": "hello"}) == ["missing_messages_list"]
    assert format_errors({"messages": ["hi", {"role": "assistant", "content": "a"}]}) == [
        "message_missing_key",
        "unrecognized_role",
        "missing_content",
    ]


def test_dataset_error_pickles() -> None:
    err = DatasetError("test.jsonl", 3, "no assistant message", {"data_type": 2})
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is DatasetError
    assert str(back) == str(err)
    assert (back.file, back.line, back.counts) == ("test.jsonl", 3, {"data_type": 2})


# --- tokens, warnings, distributions --------------------------------------------------------


def test_token_count_matches_cookbook_formula() -> None:
    enc = encoding()

    def n(text: str) -> int:
        return len(enc.encode(text))

    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "**hi**"},
    ]
    # per message: tokens_per_message (3) + tokens of each value (role and content); +3 reply
    expected = (
        (3 + n("system") + n(SYSTEM))
        + (3 + n("user") + n("hi"))
        + (3 + n("assistant") + n("**hi**"))
    ) + 3
    assert num_tokens_from_messages(messages) == expected
    # and by hand: "system", "user", "assistant", "hi" are one cl100k token each
    assert (n("system"), n("user"), n("assistant"), n("hi")) == (1, 1, 1, 1)
    assert expected == 3 * 3 + 3 + n(SYSTEM) + 1 + n("**hi**") + 3
    assert (n(SYSTEM), n("**hi**")) == (8, 3)
    assert num_tokens_from_messages(messages) == 27  # 9 + 3 roles + 8 + 1 + 3 + 3
    assert num_tokens_from_messages([{"role": "user", "content": "hello world"}]) == 3 + 1 + 2 + 3
    # a name costs its tokens plus tokens_per_name (1): 3 + user 1 + bob 1 + 1 + hi 1 + 3
    assert num_tokens_from_messages([{"role": "user", "name": "bob", "content": "hi"}]) == 10
    assert num_assistant_tokens_from_messages(messages) == n("**hi**")


def test_missing_system_and_user_counted() -> None:
    examples = [
        good(0),
        msgs(("user", "q"), ("assistant", "a")),  # no system
        msgs(("user", "q"), ("assistant", "a")),  # no system
        msgs(("system", SYSTEM), ("assistant", "a")),  # no user
    ]
    stats = dataset_stats(examples, EXPORT)
    assert (stats["missing_system"], stats["missing_user"]) == (2, 1)
    assert stats["distributions"]["num_messages_per_example"]["min"] == 2
    assert stats["distributions"]["num_messages_per_example"]["max"] == 3


def test_dataset_stats_validates() -> None:
    with pytest.raises(DatasetError, match=r"^dataset line 2: "):
        dataset_stats([good(), {"messages": []}], EXPORT)


def test_distribution_known_values() -> None:
    d = distribution(list(range(21, 0, -1)))  # 1..21, unsorted
    assert d == {"min": 1, "max": 21, "mean": 11.0, "median": 11.0, "p5": 2.0, "p95": 20.0}
    assert distribution([]) == dict.fromkeys(["min", "max", "mean", "median", "p5", "p95"])
    assert distribution([4]) == dict(min=4, max=4, mean=4.0, median=4.0, p5=4.0, p95=4.0)


def test_distribution_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    values = [5, 1, 9, 9, 2, 40, 7, 3]
    d = distribution(values)
    assert d["p5"] == pytest.approx(float(np.quantile(values, 0.05)))
    assert d["p95"] == pytest.approx(float(np.quantile(values, 0.95)))
    assert d["median"] == float(np.median(values))
    assert d["mean"] == pytest.approx(float(np.mean(values)))


def test_too_long_and_billing_clip_at_limit() -> None:
    examples = [good(0), to_chat("x " * 200, "y " * 200, SYSTEM)]
    lens = [num_tokens_from_messages(e["messages"]) for e in examples]
    limit = 40
    assert lens[0] <= limit < lens[1]
    stats = dataset_stats(examples, ExportSettings(max_tokens_per_example=limit))
    assert stats["n_too_long"] == 1
    assert stats["billing_tokens"] == lens[0] + limit
    assert dataset_stats(examples, EXPORT)["billing_tokens"] == sum(lens)


# --- epochs and cost ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_train", "epochs"),
    [(1, 25), (3, 25), (10, 10), (33, 3), (34, 3), (40, 3), (8333, 3), (8334, 2), (10_000, 2)],
)
def test_default_epochs_rule(n_train: int, epochs: int) -> None:
    # n*3 < 100 -> min(25, 100 // n); n*3 > 25000 -> max(1, 25000 // n); else 3
    assert default_epochs(n_train, EXPORT) == epochs


def test_epochs_constants_come_from_settings() -> None:
    custom = ExportSettings(target_epochs=2, min_target_examples=200, max_default_epochs=4)
    assert default_epochs(40, custom) == 4  # 80 < 200 -> min(4, 200 // 40 = 5)
    assert default_epochs(150, custom) == 2
    assert default_epochs(0, EXPORT) == 0


def test_epochs_and_charged_tokens_in_stats() -> None:
    for n, epochs in ((10, 10), (40, 3)):
        stats = dataset_stats([good(i) for i in range(n)], EXPORT)
        assert stats["epochs"] == epochs
        assert stats["charged_tokens"] == epochs * stats["billing_tokens"]


@pytest.mark.parametrize("model", ["gpt-3.5-turbo", "gpt-4o-mini-2024-07-18"])
def test_cost_is_charged_tokens_times_price(model: str) -> None:
    settings = ExportSettings(price_model=model)
    stats = dataset_stats([good(i) for i in range(12)], settings)
    price = EXPORT.prices[model].training
    assert stats["est_cost_usd"] == stats["charged_tokens"] * price / 1e6
    assert stats["price_model"] == model
    assert stats["prices_as_of"] == "2024-12-01"
    assert json.loads(json.dumps(stats)) == stats  # JSON-serialisable as is


def test_unknown_price_model_is_an_error() -> None:
    with pytest.raises(ValueError, match="not in the price table"):
        dataset_stats([good()], ExportSettings(price_model="gpt-9"))


# --- files ----------------------------------------------------------------------------------


def test_read_jsonl_reports_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"^train\.jsonl line 3: not valid JSON"):
        read_jsonl(path)
    path.write_bytes(b'{"a": 1}\n"\xff"\n')
    with pytest.raises(DatasetError, match=r"^train\.jsonl line 2: not UTF-8"):
        read_jsonl(path)


def test_write_read_round_trip_utf8_unescaped(tmp_path: Path) -> None:
    text = "“Curly” quotes, an em dash — and an emoji 🎉; café"
    examples = [to_chat(text, f"*{text}*", SYSTEM), {"weird": "line\u2028sep\u2029x\x85y"}]
    path = tmp_path / "out" / "x.jsonl"
    write_jsonl(path, examples)
    raw = path.read_bytes()
    assert "“Curly”".encode() in raw and "🎉".encode() in raw and "café".encode() in raw
    assert b"\\u201c" not in raw and b"\\ud83c" not in raw
    assert raw.count(b"\n") == 2 and len(path.read_text(encoding="utf-8").splitlines()) == 2
    assert read_jsonl(path) == examples
    write_jsonl(path, [])
    assert path.read_bytes() == b"" and read_jsonl(path) == []


# --- export_jsonl ---------------------------------------------------------------------------


def sample_rows() -> list[dict]:
    """Input rows in shuffled order: three train articles, one test article, no valid."""
    rows = [
        row("b-post", 1, "train"),
        row("a-post", 0, "train", markdown="## “Quotes” — and 🎉\n\n- café"),
        row("c-post", 0, "test"),
        row("b-post", 0, "train"),
        row("a-post", 1, "train"),
        row("c-post", 1, "test"),
        row("d-post", 0, "train"),
    ]
    return rows


def test_export_writes_valid_files(tmp_path: Path) -> None:
    rows = sample_rows()
    result = export_jsonl.fn(rows, str(tmp_path), EXPORT)
    out = tmp_path / "jsonl"
    assert result["paths"] == {
        "train": str(out / "train.jsonl"),
        "valid": str(out / "valid.jsonl"),
        "test": str(out / "test.jsonl"),
        "stats": str(out / "stats.json"),
    }
    assert (out / "valid.jsonl").read_bytes() == b""  # written, empty
    for split in ("train", "valid", "test"):
        lines = (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        parsed = [json.loads(line) for line in lines]
        expected = sorted(
            (r for r in rows if r["split"] == split), key=lambda r: (r["article_id"], r["chunk"])
        )
        assert [e["messages"][2]["content"] for e in parsed] == [r["markdown"] for r in expected]
        assert [e["messages"][1]["content"] for e in parsed] == [r["plain"] for r in expected]
        assert all(e["messages"][0] == {"role": "system", "content": SYSTEM} for e in parsed)
        assert result["stats"]["splits"][split]["n_examples"] == len(expected)
    raw = (out / "train.jsonl").read_bytes()
    assert "“Quotes” — and 🎉".encode() in raw and b"\\u" not in raw
    assert sorted(p.name for p in out.iterdir()) == [
        "stats.json",
        "test.jsonl",
        "train.jsonl",
        "valid.jsonl",
    ]


def test_stats_json_matches_return(tmp_path: Path) -> None:
    result = export_jsonl.fn(sample_rows(), str(tmp_path), EXPORT)
    on_disk = json.loads((tmp_path / "jsonl" / "stats.json").read_text(encoding="utf-8"))
    assert on_disk == result["stats"]
    train = on_disk["splits"]["train"]
    assert on_disk["cost_estimate"] == {
        "model": "gpt-3.5-turbo",
        "epochs": 20,  # 5 examples: 100 // 5
        "charged_tokens": 20 * train["billing_tokens"],
        "usd": 20 * train["billing_tokens"] * 8.0 / 1e6,
        "prices_as_of": "2024-12-01",
    }
    assert train["epochs"] == 20 and on_disk["splits"]["valid"]["epochs"] == 0
    valid_tokens = on_disk["splits"]["valid"]["distributions"]["num_total_tokens_per_example"]
    assert valid_tokens["min"] is None
    assert set(train) == {
        "n_examples",
        "missing_system",
        "missing_user",
        "distributions",
        "n_too_long",
        "epochs",
        "billing_tokens",
        "charged_tokens",
        "est_cost_usd",
        "price_model",
        "prices_as_of",
    }
    assert on_disk["as_of"].endswith("+00:00")


def test_bad_example_leaves_previous_files_untouched(tmp_path: Path) -> None:
    """The JSONL, stats.json and examples.parquet are one unit (issue 15: a failed export
    rewrote examples.parquet and kept the old JSONL)."""
    export_jsonl.fn(sample_rows(), str(tmp_path), EXPORT)
    out, parquet = tmp_path / "jsonl", tmp_path / "parquet"
    assert [p.name for p in parquet.iterdir()] == ["examples.parquet"]
    stored = (parquet / "examples.parquet").read_bytes()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rows = [row("e-post", 0, "train"), *sample_rows()]  # new train content ...
    rows.append(row("c-post", 2, "test", markdown=""))  # ... but test line 3 has no Markdown
    with pytest.raises(DatasetError) as info:
        export_jsonl.fn(rows, str(tmp_path), EXPORT)
    assert str(info.value) == (
        "test.jsonl line 3: message 3 content is empty (format errors: missing_content: 1)"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp files left either
    assert [p.name for p in parquet.iterdir()] == ["examples.parquet"]
    assert (parquet / "examples.parquet").read_bytes() == stored


def test_empty_system_message_fails_on_first_train_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"^train\.jsonl line 1: message 1 content is empty"):
        export_jsonl.fn(sample_rows(), str(tmp_path), ExportSettings(system_message=""))
    assert not (tmp_path / "jsonl" / "train.jsonl").exists()


def test_bad_rows_rejected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        export_jsonl.fn([*sample_rows(), row("z", 0, "dev")], str(tmp_path), EXPORT)
    with pytest.raises(DatasetError, match="no training examples"):
        export_jsonl.fn([row("c-post", 0, "test")], str(tmp_path), EXPORT)
    broken = row("z", 0, "train")
    del broken["markdown"]
    with pytest.raises(DatasetError, match="row 0 lacks markdown"):
        export_jsonl.fn([broken], str(tmp_path), EXPORT)


def test_export_logs_outside_a_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tasks.export"):
        export_jsonl.fn(sample_rows(), str(tmp_path), EXPORT)
    text = caplog.text
    assert "charged tokens" in text and "2024-12-01" in text
    assert "OpenAI fine-tuning needs at least 10" in text  # 5 training examples


def test_summary_markdown(tmp_path: Path) -> None:
    stats = export_jsonl.fn(sample_rows(), str(tmp_path), EXPORT)["stats"]
    md = summary_markdown(stats)
    train = stats["splits"]["train"]
    assert "| train | 5 | 0 | 0 | 0 |" in md
    assert "| valid | 0 | 0 | 0 | 0 |" in md
    assert "| test | 2 | 0 | 0 | 0 |" in md
    assert "| valid | total | – | – | – | – | – | – |" in md
    assert "**Training:** 20 epochs" in md
    assert f"**{train['charged_tokens']:,} charged tokens**" in md
    assert "`gpt-3.5-turbo`" in md and "as of 2024-12-01" in md
    assert "**$0." in md  # a few thousand tokens cost cents or less


def test_module_doctests() -> None:
    result = doctest.testmod(chat_data_module)
    assert result.failed == 0 and result.attempted >= 8
