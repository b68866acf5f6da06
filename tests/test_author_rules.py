"""The author's rules (core/author_rules.py): the general rules corrected by the author's habits.

Exact output on hand-made authors, faithful on every sample chunk, and the same after a save
and a load (the fine-tuned model's adapter carries them).
"""

from __future__ import annotations

import doctest

from test_rules import no_repair, sample_chunks  # noqa: F401 (no_repair: a fixture)

import core.author_rules
from core.author_rules import MIN_COUNT, AuthorRules, line_kinds
from core.markdown import markdown_to_plain
from core.rules import rules_markdown

# An author who numbers the long items after a colon and writes sections as ###.
STEP_1 = "Install the toolchain with the installer of your system, which takes a minute or two."
STEP_2 = "Build the project once, which takes a few minutes on a laptop and less on a desktop."
NUMBERED = [
    (
        f"A project of {n} parts.\n\nSetup\n\nYou need these steps, in order:\n\n"
        f"{STEP_1}\n{STEP_2}",
        f"A project of {n} parts.\n\n### Setup\n\nYou need these steps, in order:\n\n"
        f"1. {STEP_1}\n2. {STEP_2}",
    )
    for n in range(4)
]
TAG = "Tag the commit that passed every test on the main branch, after the last review of it."
PUSH = "Push the tag, and the pipeline uploads the artifacts to the registry and the website."
NEW = f"The release, step by step.\n\nDeploy\n\nThe release goes out in two steps:\n\n{TAG}\n{PUSH}"


def test_module_doctests() -> None:
    assert doctest.testmod(core.author_rules).failed == 0


def test_line_kinds_give_each_plain_line_its_block() -> None:
    markdown = (
        "# Title\n\nProse.\n\n### Sub\n\n- a\n- b\n\n3. c\n\n> Quoted.\n\n"
        "```rust\nfn f() {}\n\nlet x;\n```\n\n| h | i |\n|---|---|\n| 1 | 2 |\n\n<div>\nraw\n</div>"
    )
    found = line_kinds(markdown)
    assert [line for line, _ in found] == [x for x in markdown_to_plain(markdown).split("\n") if x]
    assert found == [
        ("Title", "h1"), ("Prose.", "para"), ("Sub", "h3"), ("a", "bullet"), ("b", "bullet"),
        ("c", "ordered"), ("Quoted.", "quote"), ("fn f() {}", "code"),
        ("let x;", "code"), ("h\ti", "table"), ("1\t2", "table"), ("<div>", "html"),
        ("raw", "html"), ("</div>", "html"),
    ]  # fmt: skip


def test_the_authors_habits_win_over_the_general_rules() -> None:
    general = rules_markdown(NEW)
    assert "\n## Deploy" in general and "1. " not in general  # the rules: ## and bullets
    author = AuthorRules.fit(NUMBERED)
    assert author(NEW) == (
        "The release, step by step.\n\n### Deploy\n\nThe release goes out in two steps:\n\n"
        f"1. {TAG}\n2. {PUSH}"
    )


def test_an_author_of_verse_keeps_runs_of_lines_as_lines() -> None:
    """The rules make a run of lines a list; an author whose runs are verses (a paragraph's
    line breaks) gets verses, and their ## headings."""
    verse = "Roses are red,\nviolets are blue."
    poems = [(f"Poem {n}\n\n{verse}", f"## Poem {n}\n\n{verse}") for n in range(4)]
    text = "Song\n\nThe sun is up,\nthe sky is wide."
    assert rules_markdown(text) == "# Song\n\n- The sun is up,\n- the sky is wide."
    assert AuthorRules.fit(poems)(text) == "## Song\n\nThe sun is up,\nthe sky is wide."


def test_an_author_of_hard_line_breaks_keeps_them() -> None:
    """A paragraph whose lines end in hard breaks (``\\``) is a verse; an author who writes
    them gets them where the rules would write a list."""
    assert line_kinds("One\\\ntwo\n\nThree\nfour") == [
        ("One", "verse"), ("two", "verse"), ("Three", "para"), ("four", "para")
    ]  # fmt: skip
    poems = [(f"Poem {n}:\n\nroses are red\nviolets are blue", f"Poem {n}:\n\n"
              "roses are red\\\nviolets are blue") for n in range(4)]  # fmt: skip
    text = "Song:\n\nthe sun is up\nthe sky is wide"
    assert rules_markdown(text) == "Song:\n\n- the sun is up\n- the sky is wide"
    markdown = AuthorRules.fit(poems)(text)
    assert markdown == "Song:\n\nthe sun is up\\\nthe sky is wide"
    assert markdown_to_plain(markdown) == text


def test_lines_the_author_wrote_often_keep_the_authors_kind() -> None:
    """A footer the author quotes in every article is a quote, where the same context
    elsewhere is a paragraph."""
    prose = "\n\n".join(f"Paragraph {n}, a sentence." for n in range(3))
    footer = "Thanks for reading: see you next week."
    pairs = [(f"{prose}\n\n{footer}", f"{prose}\n\n> {footer}")] * 3
    author = AuthorRules.fit(pairs)
    assert author(f"A new paragraph, a sentence.\n\n{footer}") == (
        f"A new paragraph, a sentence.\n\n> {footer}"
    )
    assert author("A new paragraph, a sentence.\n\nAnother line, a sentence.") == (
        "A new paragraph, a sentence.\n\nAnother line, a sentence."
    )
    lines = {view: kinds for view, kinds in author.counts.items() if view.startswith("line=")}
    assert lines and all(sum(kinds.values()) >= MIN_COUNT for kinds in lines.values())


def test_a_line_written_fewer_than_min_count_times_is_no_habit() -> None:
    """Written twice, the footer teaches its context (kept) but not itself (dropped)."""
    prose = "\n\n".join(f"Paragraph {n}, a sentence." for n in range(3))
    footer = "Thanks for reading: see you next week."
    author = AuthorRules.fit([(f"{prose}\n\n{footer}", f"{prose}\n\n> {footer}")] * (MIN_COUNT - 1))
    assert author.counts and not any(view.startswith("line=") for view in author.counts)


def test_one_article_already_teaches_its_habits() -> None:
    """A context the author wrote once is evidence: a writer with one article gets it."""
    once = AuthorRules.fit(NUMBERED[:1])
    assert once(NEW) == AuthorRules.fit(NUMBERED)(NEW) != rules_markdown(NEW)
    assert AuthorRules()(NEW) == rules_markdown(NEW)  # nothing learnt: the general rules


def test_the_habit_seen_more_often_wins() -> None:
    """The same contexts, numbered once and bulleted four times: bullets."""
    bulleted = [(plain, markdown.replace("1. ", "- ").replace("2. ", "- "))
                for plain, markdown in NUMBERED]  # fmt: skip
    assert "1. " in AuthorRules.fit(NUMBERED[:1])(NEW)
    assert "- " in (mixed := AuthorRules.fit(NUMBERED[:1] + bulleted)(NEW))
    assert "1. " not in mixed and "### Deploy" in mixed


def test_code_stays_where_the_general_rules_put_it() -> None:
    """An author whose lines after a colon are always prose does not unfence code."""
    prose = [("Run this:\n\nThen it works.", "Run this:\n\nThen it works.")] * 5
    plain = "Run this:\n\nfn main() {\n}\n\nThen it works."
    assert AuthorRules.fit(prose)(plain) == rules_markdown(plain)
    assert "```rust\nfn main() {\n}\n```" in rules_markdown(plain)


def test_an_author_who_lists_what_looks_like_code_gets_a_list() -> None:
    """The rules fence a run of calls; an author who lists API names gets items."""
    pairs = [
        (f"New in {n}:\n\nVec::new()\nVec::with_capacity(n)",
         f"New in {n}:\n\n- Vec::new()\n- Vec::with_capacity(n)") for n in range(4)
    ]  # fmt: skip
    plain = "Stabilized:\n\nString::new()\nString::with_capacity(n)"
    assert rules_markdown(plain) == f"Stabilized:\n\n```\n{plain.split(chr(10) * 2)[1]}\n```"
    assert AuthorRules.fit(pairs)(plain) == (
        "Stabilized:\n\n- String::new()\n- String::with_capacity(n)"
    )


def test_an_edited_chunk_teaches_nothing() -> None:
    """A pair whose Markdown does not read as its plain text (an edit) is skipped."""
    edited = [(plain.replace("Setup", "Set up"), markdown) for plain, markdown in NUMBERED]
    assert AuthorRules.fit(edited).counts == {}


def test_saved_and_loaded_they_write_the_same(tmp_path) -> None:
    author = AuthorRules.fit(NUMBERED)
    author.save(tmp_path)
    assert AuthorRules.load(tmp_path) == author
    assert AuthorRules.load(tmp_path)(NEW) == author(NEW)


def test_faithful_on_every_sample_chunk(no_repair) -> None:  # noqa: F811
    chunks = sample_chunks()
    author = AuthorRules.fit((plain, rules_markdown(plain)) for plain in chunks[::2])
    assert author.counts
    for plain in chunks:
        assert markdown_to_plain(author(plain)) == plain


def test_the_bench_corrects_only_the_confusions_it_is_given() -> None:
    """bench/author_rules.py's worth of a confusion: its lines take the author's kind, the
    others keep the answer's; every line corrected gives the author's Markdown back."""
    from bench.author_rules import corrected

    plain = "Setup\n\nWise words.\n\nhammers\nsaws"
    reference = "### Setup\n\n> Wise words.\n\n1. hammers\n2. saws"
    answer = rules_markdown(plain)
    assert answer == "# Setup\n\nWise words.\n\n- hammers\n- saws"
    assert corrected(plain, reference, answer, None) == reference
    only_quotes = corrected(plain, reference, answer, {("quote", "para")})
    assert only_quotes == "# Setup\n\n> Wise words.\n\n- hammers\n- saws"
    assert corrected(plain, reference, answer, {("quote", "bullet")}) == answer
    assert corrected(plain, "edited", answer, None) == answer
    assert doctest.testmod(__import__("bench.author_rules").author_rules).failed == 0
