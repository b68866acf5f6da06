"""The scaffold (backends/local/scaffold.py): what a local model reads, the same everywhere.

Training, the valid-split calibration and generation must all show the model the text to
format the same way; the answer keeps the plain text's words whatever the model reads.
"""

from __future__ import annotations

import doctest

import pytest
from test_local_model import SYSTEM, prompt_ids

from backends.local import scaffold as scaffold_module
from backends.local.faithful import MARKUP, SPACE
from backends.local.generate import generate
from backends.local.model import load_model
from backends.local.plan import load_split
from backends.local.scaffold import scaffolded
from core.rules import rules_markdown

from tinymodel import chat

PLAIN = "Tools\n\nUse small tools, all of them:\n\nhammers\nsaws\n\nThat is all there is to it."
MARKDOWN = "## Tools\n\nUse small tools, all of them:\n\n- hammers\n- saws\n\nThat is all."


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return load_model(tiny_model, threads=1)


def test_module_doctests() -> None:
    assert doctest.testmod(scaffold_module).failed == 0


def test_only_the_text_to_format_is_scaffolded() -> None:
    one_shot = {"role": "system", "content": f"{SYSTEM['content']}\nFor example:\nTitle\nText"}
    conversation = [one_shot, {"role": "user", "content": PLAIN},
                    {"role": "assistant", "content": MARKDOWN}]  # fmt: skip
    out = scaffolded(conversation, "rules")
    assert out[1]["content"] == rules_markdown(PLAIN) != PLAIN
    assert out[0] == one_shot and out[2] == conversation[2]
    assert conversation[1]["content"] == PLAIN  # the caller's list is left alone
    assert scaffolded([one_shot], "rules") == [one_shot]  # no text to format
    with pytest.raises(ValueError, match="unknown scaffold"):
        scaffolded(conversation, "llm")  # type: ignore[arg-type]


def test_the_authors_rules_are_counted_from_the_train_split_and_travel_with_the_model(
    tmp_path,
) -> None:
    from backends.local.scaffold import fit_scaffold, load_scaffold, scaffold_name
    from core.author_rules import AuthorRules

    authors = "### " + rules_markdown(PLAIN).removeprefix("# ")  # the rules' answer, but ###
    pairs = [(PLAIN, authors)] * 3
    author = fit_scaffold("author", pairs)
    assert author == AuthorRules.fit(pairs) and scaffold_name(author) == "author"
    conversation = [SYSTEM, {"role": "user", "content": PLAIN}]
    assert scaffolded(conversation, author)[-1]["content"] == author(PLAIN) != PLAIN
    assert author(PLAIN).startswith("### Tools")  # the author's level, not the rules' ##
    assert fit_scaffold("rules", pairs) == "rules" == scaffold_name("rules")
    author.save(tmp_path)
    assert load_scaffold("author", tmp_path) == author
    assert load_scaffold("rules", tmp_path) == "rules"
    with pytest.raises(ValueError, match="counted from a train split"):
        scaffolded(conversation, "author")  # the name alone cannot read text


def test_training_reads_the_scaffold_and_learns_the_authors_markdown(tmp_path, tiny) -> None:
    _, tokenizer = tiny
    path = tmp_path / "train.jsonl"
    import json

    path.write_text(json.dumps({"messages": [*chat(PLAIN), _answer(MARKDOWN)]}) + "\n")
    [plain], _, _ = load_split(path, tokenizer, 1024)
    [ruled], _, _ = load_split(path, tokenizer, 1024, scaffold="rules")

    def parts(example: dict) -> tuple[str, str]:
        start = next(i for i, label in enumerate(example["labels"]) if label != -100)
        return (
            tokenizer.decode(example["input_ids"][:start]),
            tokenizer.decode([label for label in example["labels"] if label != -100]),
        )

    assert "- hammers" in parts(ruled)[0] and "- hammers" not in parts(plain)[0]
    assert parts(ruled)[1] == parts(plain)[1]  # the same target: the author's Markdown


def test_generation_reads_the_models_scaffold_and_keeps_the_words(tiny) -> None:
    model, tokenizer = tiny
    details: list[dict] = []
    [answer] = generate(
        model, tokenizer, [chat(PLAIN)], faithful=True, details=details, scaffold="rules",
        max_new_tokens=400,
    )  # fmt: skip
    assert details[0]["finish_reason"] == "stop"
    ruled = prompt_ids(tokenizer, scaffolded(chat(PLAIN), "rules"))
    assert details[0]["prompt_tokens"] == len(ruled) > len(prompt_ids(tokenizer, chat(PLAIN)))
    assert letters(answer) == letters(PLAIN)  # markup added, the plain text's words kept
    model.scaffold = "rules"  # what load_for_inference sets from decoding.json
    try:
        again: list[dict] = []
        generate(model, tokenizer, [chat(PLAIN)], faithful=True, details=again, max_new_tokens=400)
        assert again == details
    finally:
        del model.scaffold


def letters(text: str) -> bytes:
    """``text`` without whitespace and markup bytes."""
    return bytes(b for b in text.encode() if b not in MARKUP | SPACE)


def _answer(content: str) -> dict:
    return {"role": "assistant", "content": content}
