"""The rules baseline (core/rules.py): exact output on hand-made texts, always faithful."""

from __future__ import annotations

import pytest

import core.rules
from config.settings import Settings
from core.chunks import chunk_markdown
from core.markdown import markdown_to_plain
from core.rules import rules_markdown
from tasks.clean import html_to_markdown

from conftest import SAMPLE

LONG = "A line over eighty characters is never a list item, so it ends the list that came before."
FIXTURES = {
    "title and heading": (
        "On Tools\n\nA longer first paragraph follows the title here.\n\n"
        "Some prose, and then a section.\n\nWhy small?\n\n"
        "Because small tools are easy to understand and to replace.",
        "# On Tools\n\nA longer first paragraph follows the title here.\n\n"
        "Some prose, and then a section.\n\n## Why small?\n\n"
        "Because small tools are easy to understand and to replace.",
    ),
    "heading right after a heading": (
        "Intro sentence.\n\nWhat's new\n\nFaster builds\n\nBuilds take half the time they took.",
        "Intro sentence.\n\n## What's new\n\n### Faster builds\n\n"
        "Builds take half the time they took.",
    ),
    "list after a colon": (
        "You need three things:\n\nhammer\nsaws, two of them.\n1. ruler\n\n"
        "A line over eighty characters is never a list item, so it ends the list that came before.",
        "You need three things:\n\n- hammer\n- saws, two of them.\n- 1\\. ruler\n\n"
        "A line over eighty characters is never a list item, so it ends the list that came before.",
    ),
    "terse lines are a list": (
        "Intro sentence.\n\nFast builds\nSmall binaries\nNo runtime",
        "Intro sentence.\n\n- Fast builds\n- Small binaries\n- No runtime",
    ),
    "code with a blank line": (
        'Run this:\n\nfn main() {\n    let x = 1;\n\n    println!("{x}");\n}\n\nIt prints 1.',
        'Run this:\n\n```rust\nfn main() {\n    let x = 1;\n\n    println!("{x}");\n}\n'
        "```\n\nIt prints 1.",
    ),
    "shell prompt and its output, no language": (
        "Install it with:\n\n$ cargo install ripgrep\nwarning: 1 crate yanked\n\nThen search.",
        "Install it with:\n\n```\n$ cargo install ripgrep\nwarning: 1 crate yanked\n```\n\n"
        "Then search.",
    ),
    "two blank lines are code, and so are their neighbours": (
        "The poem:\n\nRoses are red.\n\n\nViolets are blue.\n\nThe end, said the poet, is near.",
        "The poem:\n\n```\nRoses are red.\n\n\nViolets are blue.\n```\n\n"
        "The end, said the poet, is near.",
    ),
    "backticks in code": (
        'Fence it:\n\nprint("```");',
        'Fence it:\n\n````\nprint("```");\n````',
    ),
    "table": (
        "The numbers.\n\nName\tAge\nAda\t36\nAlan\t\n\nThat is all.",
        "The numbers.\n\n| Name | Age |\n| --- | --- |\n| Ada | 36 |\n| Alan |  |\n\nThat is all.",
    ),
    "tables of two widths": (
        "Sizes.\n\na\tb\n1\t2\n\nx\ty\tz\n7\t8\t9",
        "Sizes.\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n| x | y | z |\n"
        "| --- | --- | --- |\n| 7 | 8 | 9 |",
    ),
    "prose left alone, escaped as the cleaner escapes": (
        "It costs 2 * 3 = 6 of *them*, see a_b and <b>.\n\n"
        "1. Not a list, just text that starts with a number.\n\n"
        "- Not an item either, only a dash that starts this sentence.",
        "It costs 2 * 3 = 6 of \\*them\\*, see a_b and \\<b>.\n\n"
        "1\\. Not a list, just text that starts with a number.\n\n"
        "\\- Not an item either, only a dash that starts this sentence.",
    ),
    "lists in a row keep apart: their markers alternate": (
        "Steps:\n\nfirst step\nsecond step\n\nthird list\nfourth item\n\nfifth\nsixth",
        "Steps:\n\n- first step\n- second step\n\n* third list\n* fourth item\n\n- fifth\n- sixth",
    ),
    "a comment among commands makes the block code": (
        'Setup:\n\n# once per computer\ngit config --global user.name "Sam"',
        'Setup:\n\n```\n# once per computer\ngit config --global user.name "Sam"\n```',
    ),
    "empty": (
        "",
        "",
    ),
    "a run of prose lines is a list too": (
        "Reasons:\n\nIt is fast, and it stays fast.\nIt is small.",
        "Reasons:\n\n- It is fast, and it stays fast.\n- It is small.",
    ),
    "one code-like line in a long run of words is no code": (
        "Lines:\n\nits attack were\nand get of transformation year\nfor the No on other\n"
        "teamsters helps we you watching\nnot deals his basic one",
        "Lines:\n\n- its attack were\n- and get of transformation year\n- for the No on other\n"
        "- teamsters helps we you watching\n- not deals his basic one",
    ),
    "prose that ends in a semicolon is no code": (
        "Who came:\n\nusers, novice to expert;\nmaintainers, big and small;\nstaff.",
        "Who came:\n\n- users, novice to expert;\n- maintainers, big and small;\n- staff.",
    ),
    "a semicolon after code punctuation is code": (
        "Then:\n\nlet x = 5;\nx.push(y);",
        "Then:\n\n```rust\nlet x = 5;\nx.push(y);\n```",
    ),
    "a long line before a short one is no heading": (
        "A short line\n\nShort.",
        "A short line\n\nShort.",
    ),
}


@pytest.fixture
def no_repair(monkeypatch):
    """core.faithful.repair, the safety net, made to fail the test if it is ever called."""

    def refuse(answer, plain):
        raise AssertionError(f"the rules needed repair for {plain[:80]!r}")

    monkeypatch.setattr(core.rules, "repair", refuse)


@pytest.mark.parametrize("name", FIXTURES)
def test_rules_write_the_expected_markdown(name):
    plain, expected = FIXTURES[name]
    assert rules_markdown(plain) == expected


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_reads_back_as_its_plain_text(name, no_repair):
    plain, expected = FIXTURES[name]
    assert markdown_to_plain(expected) == plain
    assert markdown_to_plain(rules_markdown(plain)) == plain


@pytest.mark.parametrize(
    "plain",
    [
        "   indented\nprose after it.",  # leading spaces: only code keeps them
        "two  spaces inside a sentence, which a paragraph would collapse.",
        "trailing spaces   \nand a tab\tin prose that is not a table.",
        "```\nan open fence and a *star*",
        "\n\nblank lines at the start",
        "---\n===\n| a |\n<div>\n[x]: http://example.com",
    ],
)
def test_awkward_text_stays_faithful_by_the_rules_alone(plain, no_repair):
    assert markdown_to_plain(rules_markdown(plain)) == plain


def test_repair_is_the_last_resort_for_what_no_block_holds():
    answer = rules_markdown("a carriage\rreturn")  # markdown-it reads a CR as a line end
    assert answer == "a carriage&#13;return"
    assert markdown_to_plain(answer) == "a carriage\rreturn"


def sample_chunks() -> list[str]:
    budget = Settings().examples.chunk_tokens
    chunks = []
    for post in sorted((SAMPLE / "posts").glob("*.html")):
        markdown = html_to_markdown(post.read_text(encoding="utf-8"))
        chunks += [markdown, *chunk_markdown(markdown, budget)]
    return [markdown_to_plain(chunk) for chunk in chunks]


def test_faithful_by_the_rules_alone_on_every_sample_chunk(no_repair):
    chunks = sample_chunks()
    assert len(chunks) > 20
    for plain in chunks:
        assert markdown_to_plain(rules_markdown(plain)) == plain


def test_the_rules_find_structure_in_the_sample():
    answers = "\n\n".join(rules_markdown(plain) for plain in sample_chunks())
    for needle in ("\n# ", "\n## ", "\n- ", "\n```", "\n| --- |"):
        assert needle in "\n" + answers, needle
