"""Tests for core/faithful.py: repair keeps the model's markup where its text is right, restores
the input's text elsewhere, and always reads back as the input: markdown_to_plain(repair(o, p))
== p for every output o and every plain text p without NUL."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import faithful
from core.faithful import is_faithful, repair
from core.markdown import markdown_to_plain
from tasks.clean import html_to_markdown, split_front_matter

ROOT = Path(__file__).resolve().parents[1]
POSTS = sorted((ROOT / "data" / "sample" / "posts").glob("*.html"))
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "clean").iterdir())


@cache
def real() -> dict[str, str]:
    """Real Markdown: the sample posts and the clean fixtures (an author's .md file as is)."""
    pages = {path.name: html_to_markdown(path.read_text(encoding="utf-8")) for path in POSTS}
    for path in FIXTURES:
        text = path.read_text(encoding="utf-8")
        pages[path.name] = (
            split_front_matter(text)[1].strip("\n")
            if path.suffix == ".md"
            else html_to_markdown(text)
        )
    return pages


def test_real_pages_are_found():
    assert len(POSTS) == 12 and len(real()) == 12 + len(FIXTURES) >= 15


DOC = """\
# Title

Intro with *emphasis* and `code`.

- one
- two
- three

| Name | Value |
| --- | --- |
| a | 1 |
| b | 2 |

```python
def f(x):

    return x
```

> A quote.

1. first
   - nested a
   - nested b
2. second

Last paragraph."""
PLAIN = markdown_to_plain(DOC)


def check(output: str, plain: str = PLAIN) -> str:
    """The repair, after checking the guarantee."""
    result = repair(output, plain)
    assert markdown_to_plain(result) == plain
    assert is_faithful(result, plain)
    return result


def paragraph_blocks(markdown: str) -> list[int]:
    """Indexes of the top-level paragraphs among the blank-line-separated blocks."""
    blocks = markdown.split("\n\n")
    fenced = [sum(line.startswith("```") for line in b.split("\n")) % 2 for b in blocks]
    return [
        k
        for k, block in enumerate(blocks)
        if k and block[:1].isalpha() and sum(fenced[:k]) % 2 == 0 and not fenced[k]
    ]


# --- correct outputs --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [path.name for path in POSTS + FIXTURES])
def test_correct_output_is_returned_unchanged(name):
    markdown = real()[name]
    assert check(markdown, markdown_to_plain(markdown)) == markdown


@pytest.mark.parametrize("name", [path.name for path in POSTS + FIXTURES])
def test_loop_and_invented_paragraph_are_removed_and_everything_else_kept(name):
    markdown = real()[name]
    plain = markdown_to_plain(markdown)
    blocks = markdown.split("\n\n")
    assert paragraph_blocks(markdown)
    for k in paragraph_blocks(markdown):
        loop = blocks[: k + 1] + [blocks[k]] * 4 + blocks[k + 1 :]
        assert check("\n\n".join(loop), plain) == markdown
        invented = [*blocks[:k], "This sentence was never written.", *blocks[k:]]
        assert check("\n\n".join(invented), plain) == markdown


def test_changed_words_are_restored_with_the_models_spans():
    markdown = real()[POSTS[1].name]
    assert "It tells you the **type** of the exception" in markdown
    assert "`KeyError: 'retries'`, which means" in markdown
    assert "a key called `'retries'` and" in markdown  # the same text twice in one line
    output = markdown.replace("It tells you the **type**", "It says the **type**")
    assert check(output, markdown_to_plain(markdown)) == markdown
    assert check("Water is *a* thing, *a* lot!", "Water is a thing, a lot.") == (
        "Water is *a* thing, *a* lot."  # spans go around whole words, in order
    )


def test_dropped_paragraph_comes_back_without_markup():
    markdown = real()[POSTS[1].name]
    paragraph = next(b for b in markdown.split("\n\n") if "the **type** of" in b)
    text = markdown_to_plain(paragraph)
    assert "*" not in text and "`" not in text
    output = markdown.replace(paragraph + "\n\n", "")
    assert check(output, markdown_to_plain(markdown)) == markdown.replace(paragraph, text)


def test_identity_output_keeps_the_text():
    assert check("Just words.\nMore words.", "Just words.\nMore words.") == (
        "Just words.\nMore words."
    )
    assert check(PLAIN) == (
        "Title\n\nIntro with emphasis and code.\n\none\ntwo\nthree\n\nName\tValue\na\t1\nb\t2\n\n"
        "def f(x):\n\n```\n    return x\n```\n\n"
        "A quote.\n\nfirst\nnested a\nnested b\nsecond\n\nLast paragraph."
    )
    for name in real():
        plain = markdown_to_plain(real()[name])
        check(plain, plain)


# --- adversarial outputs ----------------------------------------------------------------------


def test_repeated_paragraph():
    intro = "Intro with *emphasis* and `code`."
    assert check(DOC.replace(intro, "\n\n".join([intro] * 5))) == DOC


def test_truncated_output_keeps_the_first_half_and_restores_the_rest_plainly():
    half = DOC[: DOC.index("```python")].rstrip()
    assert check(half) == (
        half + "\n\ndef f(x):\n\n```\n    return x\n```\n\n"
        "A quote.\n\nfirst\nnested a\nnested b\nsecond\n\nLast paragraph."
    )


def test_invented_sentence_is_dropped():
    assert check(DOC.replace("- one", "Invented sentence here.\n\n- one")) == DOC
    assert check(DOC.replace("`code`.", "`code`. And invented words.")) == DOC
    assert check(DOC + "\n\nA closing line nobody wrote.") == DOC


def test_invented_heading_is_dropped():
    assert check(DOC.replace("> A quote.", "## Invented Heading\n\n> A quote.")) == DOC


def test_invented_fence_around_markdown_is_removed():
    fenced = DOC.replace("> A quote.", "```\n> A quote.").replace("2. second\n", "2. second\n```\n")
    assert not is_faithful(fenced, PLAIN)
    assert check(fenced) == DOC


def test_invented_fence_around_exact_text_is_the_models_choice():
    fenced = DOC.replace("Last paragraph.", "```\nLast paragraph.\n```")
    assert is_faithful(fenced, PLAIN)  # the words are right: formatting is the model's call
    assert check(fenced) == fenced


def test_unclosed_fence_is_closed_where_the_markdown_resumes():
    assert check(DOC.replace("    return x\n```", "    return x")) == DOC


def test_kept_block_that_would_swallow_what_follows_is_rewritten():
    plain = "Intro text.\n\ncode\n\nMore."
    expected = "[Intro](http://x) text.\n\n```\ncode\n```\n\nMore."  # the link is kept
    assert check("[Intro](http://x) text.\n\n```\ncode", plain) == expected
    plain = "Intro text.\n\n<!-- c\n\nMore."
    expected = "[Intro](http://x) text.\n\n\\<!-- c\n\nMore."
    assert check("[Intro](http://x) text.\n\n<!-- c\n\nmore", plain) == expected
    plain = "Intro text.\n\n```\n\nMore."  # a fence the model opened but the text has
    expected = "[Intro](http://x) text.\n\n\\`\\`\\`\n\nMore."
    assert check("[Intro](http://x) text.\n\n```", plain) == expected


def test_dropped_list_item_is_restored_in_the_list():
    assert check(DOC.replace("- two\n", "")) == DOC


def test_changed_words_in_a_heading_keep_the_heading():
    assert check(DOC.replace("# Title", "# Titles")) == DOC
    assert check("## Intro to it\n\nBody.", "Intro to this\n\nBody.") == "## Intro to this\n\nBody."


def test_changed_nested_item_keeps_its_nesting():
    result = check(DOC.replace("nested b", "nested bee"))
    assert "1. first\n   - nested a\n   - nested b\n2. second" in result


def test_table_with_a_duplicated_row_or_a_changed_cell():
    assert check(DOC.replace("| a | 1 |\n", "| a | 1 |\n| a | 1 |\n")) == DOC
    assert check(DOC.replace("| a | 1 |", "| a | 11 |")) == DOC


def test_markup_row_repeated_50_times():
    assert check(DOC.replace("> A quote.", "> A quote.\n" + "| --- | --- |\n" * 50)) == DOC
    rules = DOC.replace("Last paragraph.", "* * *\n" * 50 + "\nLast paragraph. Invented.")
    assert check(rules) == DOC  # rules carry no text and are dropped with the broken part


def test_empty_output_renders_every_line_escaped():
    plain = "Title\n\n# not a heading\n\n1. not a list\n\n    code line\n\nmore code"
    assert check("", plain) == (
        "Title\n\n\\# not a heading\n\n1\\. not a list\n\n```\n    code line\n```\n\nmore code"
    )
    # the lines of one block stay one paragraph, each line escaped where it would be markup
    assert check("", "A line\n# not a heading\n- not an item") == (
        "A line\n\\# not a heading\n\\- not an item"
    )


def test_pure_garbage_output():
    garbage = "#### ``` ] [ ** zzz qqq\n\n> - > - 1.\n\n<div>yyy</div>\n\n| x |\n|---|\n| www |"
    result = check(garbage)
    for word in ("zzz", "qqq", "yyy", "www", "div", "####"):
        assert word not in result
    assert (
        result
        == check("")
        == (
            "Title\n\nIntro with emphasis and code.\n\none\ntwo\nthree\n\nName\tValue\n"
            "a\t1\nb\t2\n\ndef f(x):\n\n```\n    return x\n```\n\nA quote.\n\nfirst\n"
            "nested a\nnested b\nsecond\n\nLast paragraph."
        )
    )


# --- escaping and odd plain texts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# not a heading", "\\# not a heading"),
        ("1) nor a list", "1\\) nor a list"),
        ("- nor a bullet", "\\- nor a bullet"),
        ("> nor a quote", "\\> nor a quote"),
        ("<div>", "\\<div>"),
        ("&amp; &copy;", "\\&amp; \\&copy;"),
        ("```", "\\`\\`\\`"),
        ("---", "\\---"),
        ("===", "\\==="),
        ("a * b _c_ `d`", "a * b \\_c\\_ \\`d\\`"),
        ("[x]: /url", "[x\\]: /url"),
        ("\\", "\\\\"),
        ("trailing  ", "trailing &#32;"),
        ("    indented", "```\n    indented\n```"),
        ("\ttab", "```\n\ttab\n```"),
        (" ", "```\n \n```"),
        ("x\u2028", "x&#8232;"),
        ("a\rb", "a&#13;b"),
        ("\r", "| ![]()&#13;![]() |\n| --- |"),
        ("", ""),
    ],
)
def test_escaped_lines(line, expected):
    assert check("", line) == expected


def test_blank_lines_and_empty_plain():
    assert check("anything", "") == ""
    assert check("", "\n") == "```\n\n\n```"
    assert check("x", "a\n\n\nb") == "```\na\n\n\nb\n```"  # only code holds two blank lines


def test_lists_in_a_row_stay_apart():
    """Two blocks of items: written with one marker they would be one loose list (each item a
    block of its own), so the second takes the other marker."""
    assert check("- a\n- b\n\n- c\n- d", "a\nb\n\nc\nd") == "- a\n- b\n\n* c\n* d"
    assert check("1. a\n2. b\n\n3. c\n4. d", "a\nb\n\nc\nd") == "1. a\n2. b\n\n3) c\n4) d"
    assert check("- a\n  - n\n\n- c", "a\nn\n\nc") == "- a\n  - n\n\n* c"
    assert check("- a\n\n- b", "a\n\nb") == "- a\n\n- b"  # a loose list reads right as it is


def test_nul_cannot_be_represented():
    with pytest.raises(ValueError, match="NUL"):
        repair("a", "a\0b")
    assert check("a\0b", "a\ufffdb") == "a\0b"  # markdown-it reads the output's NUL as U+FFFD


def test_fallbacks_when_pieces_do_not_compose(monkeypatch):
    monkeypatch.setattr(faithful.Plan, "pieces", lambda self, keep=True: ["<!--"])
    assert check(DOC.replace("one", "uno")) == check("")  # plain pieces
    monkeypatch.setattr(faithful, "plain_pieces", lambda lines: ["<!--"])
    assert check(DOC.replace("one", "uno")) == faithful.fence(PLAIN.split("\n"))
    with pytest.raises(ValueError, match="cannot render"):
        repair("x", "a\rb")  # no fenced code holds a carriage return


# --- properties -------------------------------------------------------------------------------

MARKUP = "#>-*_`|\\&;<![]()=+1.~: \t\n"
OPS = st.lists(
    st.tuples(
        st.sampled_from(["drop", "dup", "swap", "markup", "truncate"]),
        st.integers(0, 10**6),
        st.integers(0, 10**6),
        st.text(alphabet=MARKUP, max_size=6),
    ),
    max_size=6,
)


def mutate(markdown: str, ops: list[tuple[str, int, int, str]]) -> str:
    """The Markdown with lines dropped, duplicated, swapped, marked up or cut off."""
    lines = markdown.split("\n")
    for op, a, b, junk in ops:
        if not lines:
            break
        i, j = a % len(lines), b % len(lines)
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[j])
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "markup":
            k = b % (len(lines[i]) + 1)
            lines[i] = lines[i][:k] + junk + lines[i][k:]
        else:
            lines = lines[:i]
    return "\n".join(lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), OPS)
def test_property_mutated_real_markdown(data, ops):
    markdown = data.draw(st.sampled_from([DOC, *real().values()]))
    blocks = markdown.split("\n\n")
    start = data.draw(st.integers(0, len(blocks) - 1))
    markdown = "\n\n".join(blocks[start : start + data.draw(st.integers(1, 12))])
    check(mutate(markdown, ops), markdown_to_plain(markdown))


CHUNK = st.characters(exclude_characters="\x00", exclude_categories=["Cs"]) | st.sampled_from(
    [*MARKUP, "\r", "\x0b", "\x1c", "\x85", "\xa0", "\u2028", "&amp;", "```", "    ", "- ", "1. "]
)
TEXT = st.lists(CHUNK, max_size=40).map("".join)  # any text without NUL, markup-heavy
# plain text as it reaches a model: markdown_to_plain's, or chunk_plain's, whose line breaks
# are all "\n" (a carriage return inside a line comes from Markdown: the test after next)
PLAIN_TEXT = TEXT.map(lambda text: text.replace("\r", ""))


@settings(max_examples=300, deadline=None)
@given(PLAIN_TEXT, TEXT)
def test_property_any_plain_text_any_output(plain, output):
    check(output, plain)
    check(plain, plain)


@settings(max_examples=200, deadline=None)
@given(TEXT, TEXT)
def test_property_plain_of_random_markdown(markdown, output):
    plain = markdown_to_plain(markdown)
    check(output, plain)
    check(markdown, plain)
    check(mutate(markdown, [("dup", 0, 1, ""), ("drop", 2, 0, "")]), plain)


@settings(max_examples=50, deadline=None)
@given(PLAIN_TEXT, TEXT)
def test_property_nul_is_exactly_what_raises(plain, output):
    with pytest.raises(ValueError, match="NUL"):
        repair(output, plain + "\0")
    check(output + "\0", plain)


@settings(max_examples=100, deadline=None)
@given(TEXT)
def test_property_units_cover_the_plain_text(markdown):
    units = faithful.parse_units(re.sub(r"\r\n?", "\n", markdown).split("\n"))
    lines = [line for unit in units for line in unit.lines if line]
    assert lines == [line for line in markdown_to_plain(markdown).split("\n") if line]


# --- the styles of the input's lines (plan step 2), one rule at a time ----------------------


def test_a_dropped_line_takes_its_neighbours_shared_style_but_never_a_heading():
    from core.faithful import Style, fill

    item, heading = Style("- "), Style("", "heading", "##")
    assert fill(["a", "b", "c"], [item, None, item]) == [item, item, item]
    assert fill(["a", "b", "c"], [heading, None, heading]) == [heading, Style(), heading]
    quoted = Style("> ", "heading", "#")
    assert fill(["a", "b", "c"], [quoted, None, quoted]) == [quoted, Style(), quoted]
    # the next paired line, however far: two dropped lines in a list stay in it
    assert fill(["a", "b", "c", "d"], [item, None, None, item]) == [item] * 4
    # neighbours that differ lend nothing; at either end there is no shared style
    assert fill(["a", "b", "c"], [item, None, Style("> ")]) == [item, Style(), Style("> ")]
    assert fill(["a", "b"], [None, item]) == [Style(), item]
    assert fill(["a", "b"], [item, None]) == [item, Style()]


def test_list_items_of_other_numbers_share_their_style():
    from core.faithful import Style, akin, fill

    assert akin(Style("1. "), Style("2. ")) and akin(Style("10. "), Style("9. "))
    assert akin(Style("  3) "), Style("  12) "))
    assert not akin(Style("1. "), Style("- ")) and not akin(Style("1. "), Style("1) "))
    assert not akin(Style("- "), Style("- ", "heading", "#"))  # same prefix, other kind
    assert not akin(Style("> ", "code"), Style("- ", "code"))  # same kind, other prefix
    first, tenth = Style("9. "), Style("10. ")
    assert fill(["a", "b", "c"], [first, None, tenth]) == [first, tenth, tenth]


def test_blank_and_indented_lines_are_code_in_the_code_next_to_them():
    from core.faithful import Style, fill

    heading, code = Style("", "heading", "##"), Style("> ", "code", "python")
    assert fill(["  indented"], [heading]) == [Style(kind="code")]
    assert fill(["", "x"], [Style(), Style()]) == [Style(kind="code"), Style()]
    assert fill(["  indented", "x = 1"], [None, code]) == [code, code]
    assert fill(["x = 1", ""], [code, None]) == [code, code]
    assert fill(["text", "  indented"], [Style(), None]) == [Style(), Style(kind="code")]
