"""The evaluation metrics: exact values on small hand-made documents, chrF against sacrebleu."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.clean import html_to_markdown, markdown_to_plain
from tasks.evaluate import (
    KINDS,
    SUMMARY_KEYS,
    bootstrap_interval,
    cer,
    chrf,
    score_example,
    structure_by_kind,
    structure_counts,
    structure_elements,
    structure_f1,
    summarize_scores,
    text_cer,
)

from conftest import SAMPLE

EVERY_KIND = """# Title

Some *emphasis*, some **strong** and `code`.

## Steps

1. first
2. second

- bullet

> A quote.

```python
print("hi")
```

| Name | Value |
| --- | --- |
| a | 1 |
"""


def test_every_kind_is_found_in_the_fixture():
    kinds = {kind for kind, _, _ in structure_elements(EVERY_KIND)}
    assert kinds == set(KINDS)


def test_identical_documents_score_perfectly():
    plain = markdown_to_plain(EVERY_KIND)
    scores = score_example(EVERY_KIND, EVERY_KIND, plain)
    assert scores["cer"] == 0.0
    assert scores["chrf"] == 1.0
    assert scores["structure_f1"] == 1.0
    assert scores["text_cer"] == 0.0
    assert scores["structure"] == dict.fromkeys(KINDS, 1.0)


def test_score_example_shape():
    scores = score_example("x", "y", "y")
    assert set(scores) == {
        "cer",
        "chrf",
        "structure_f1",
        "text_cer",
        "structure",
        "structure_counts",
    }
    assert set(scores["structure"]) == set(KINDS) == set(scores["structure_counts"])


def test_structure_by_kind_is_micro_over_the_examples():
    pairs = [  # (prediction, reference)
        ("## One\n\nText.", "## One\n\nText."),  # heading matched
        ("Two", "## Two"),  # heading missed
        ("- a\n- b\n- c", "- a\n- b"),  # 2 items matched, 1 invented
        ("*x* y", "x y"),  # emphasis invented: counted, with no reference element
    ]
    by_kind = structure_by_kind([score_example(p, r, "") for p, r in pairs])
    assert by_kind == {
        "heading": {"f1": 2 * 1 / (1 + 2), "reference": 2},
        "list_item": {"f1": 2 * 2 / (3 + 2), "reference": 2},
        "emphasis": {"f1": 0.0, "reference": 0},
    }


def test_cer_is_the_edit_distance_over_the_reference_length():
    assert cer("kitten", "sitting") == 3 / 7
    assert cer("sitting", "kitten") == 3 / 6
    assert cer("", "abcd") == 1.0


def test_cer_can_exceed_one():
    assert cer("abcdef", "ab") == 2.0


def test_cer_of_an_empty_reference_is_the_prediction_length():
    assert cer("", "") == 0.0
    assert cer("abc", "") == 3.0


def test_a_missing_heading_costs_one_third_of_heading_f1_only():
    reference = "## One\n\nText.\n\n## Two\n\n- a\n- b\n"
    prediction = "## One\n\nText.\n\nTwo\n\n- a\n- b\n"
    scores = structure_f1(prediction, reference)
    assert scores["heading"] == 2 / 3
    assert scores["list_item"] == 1.0
    assert all(scores[kind] is None for kind in KINDS if kind not in ("heading", "list_item"))
    assert scores["overall"] == 6 / 7  # 3 matched of 3 predicted and 4 reference elements
    assert structure_counts(prediction, reference)["heading"] == (1, 1, 2)


def test_elements_are_a_multiset():
    reference = "- same\n- same\n"
    prediction = "- same\n"
    assert structure_elements(reference) == Counter({("list_item", "bullet", "same"): 2})
    assert structure_f1(prediction, reference)["list_item"] == 2 / 3


def test_a_heading_at_the_wrong_level_does_not_match():
    assert structure_f1("### Setup\n", "## Setup\n")["heading"] == 0.0
    assert structure_elements("### Setup\n") == Counter({("heading", "h3", "Setup"): 1})


def test_a_heading_with_different_text_does_not_match():
    assert structure_f1("## Set up\n", "## Setup\n")["heading"] == 0.0


def test_ordered_and_bullet_lists_are_distinguished():
    ordered, bullet = "1. a\n2. b\n", "- a\n- b\n"
    assert structure_elements(ordered) == Counter(
        {("list_item", "ordered", "a"): 1, ("list_item", "ordered", "b"): 1}
    )
    assert structure_f1(bullet, ordered)["list_item"] == 0.0
    assert structure_f1(bullet, bullet)["list_item"] == 1.0


def test_a_list_item_text_includes_its_nested_items():
    assert structure_elements("- a\n  1. b\n- c\n") == Counter(
        {
            ("list_item", "bullet", "a b"): 1,
            ("list_item", "ordered", "b"): 1,
            ("list_item", "bullet", "c"): 1,
        }
    )


def test_emphasis_and_strong_are_distinguished():
    scores = structure_f1("Say *this*.", "Say **this**.")
    assert scores["emphasis"] == 0.0
    assert scores["strong"] == 0.0
    assert scores["overall"] == 0.0
    assert structure_elements("***both*** *a **b** c*") == Counter(
        {
            ("emphasis", "", "both"): 1,
            ("strong", "", "both"): 1,
            ("emphasis", "", "a b c"): 1,
            ("strong", "", "b"): 1,
        }
    )


def test_inline_code_and_quotes():
    assert structure_elements("> Run ` ls -l ` now.\n> Twice.") == Counter(
        {("blockquote", "", "Run ls -l now. Twice."): 1, ("code_inline", "", "ls -l"): 1}
    )
    assert structure_f1("Run `ls`.", "Run ls.")["code_inline"] == 0.0


def test_a_table_is_one_element_with_its_cells():
    table = "| Name | Value |\n| --- | --- |\n| a | *1* |\n"
    assert structure_elements(table) == Counter(
        {("table", "", "Name | Value | a | 1"): 1, ("emphasis", "", "1"): 1}
    )
    as_text = "Name Value\n\na *1*\n"
    assert structure_f1(as_text, table)["table"] == 0.0
    assert structure_f1(as_text, table)["emphasis"] == 1.0


def test_code_block_language_matters_fence_or_indent_does_not():
    python = "```python\nx = 1\n```\n"
    bare = "```\nx = 1\n```\n"
    indented = "    x = 1\n"
    assert structure_elements(python) == Counter({("code_block", "python", "x = 1"): 1})
    assert structure_f1(bare, python)["code_block"] == 0.0
    assert structure_f1(indented, bare)["code_block"] == 1.0


def test_documents_without_structure_score_one_overall():
    scores = structure_f1("Just text.", "Other text.")
    assert scores["overall"] == 1.0
    assert all(scores[kind] is None for kind in KINDS)


def test_text_cer_ignores_formatting_and_counts_dropped_text():
    reference = "# Title\n\nFirst sentence. Second sentence.\n"
    plain = markdown_to_plain(reference)
    assert plain == "Title\nFirst sentence. Second sentence."
    assert text_cer("Title\n\n*First* sentence. Second sentence.", plain) == 0.0
    dropped = "# Title\n\nFirst sentence.\n"
    assert text_cer(dropped, plain) == len(" Second sentence.") / len(plain)


def test_chrf_by_hand():
    # 1-grams: one of two match both ways; 2-grams: none match -> P = R = 1/4, F2 = 1/4.
    assert chrf("ab", "ac") == 0.25
    assert chrf("ab", "ab") == 1.0  # only orders 1 and 2 are effective
    assert chrf("a b", "ab") == 1.0  # whitespace is removed
    assert chrf("", "") == 0.0  # as sacrebleu: no effective order
    assert chrf("abc", "") == 0.0
    assert chrf("", "abc") == 0.0


def test_chrf_weights_recall_with_beta():
    reference = "abcdefgh"
    short = "abcd"  # precision 1, recall below 1
    assert chrf(short, reference, beta=1.0) > chrf(short, reference)
    assert chrf(short, reference) < 1.0


CHRF_PAIRS = [
    ("kitten", "sitting"),
    ("# On Tools\n\nUse *small* tools.", "# On Tools\n\nUse **small** tools!"),
    ("- one\n- two\n", "1. one\n2. two\n"),
    ("| a | b |\n| --- | --- |\n| 1 | 2 |", "a\tb\n1\t2"),
    ("Ça coûte 5 € — naïve café 🙂", "Ca coute 5 EUR - naive cafe :)"),
    ("", "reference only"),
    ("prediction only", ""),
    ("", ""),
    ("   ", "\n"),
    ("a", "a"),
    ("ab", "ba"),
    ("The same words in a different order.", "In a different order, the same words."),
]


@pytest.mark.parametrize(("prediction", "reference"), CHRF_PAIRS)
def test_chrf_equals_sacrebleu(prediction, reference):
    sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu (dev extra) checks chrF")
    expected = sacrebleu.sentence_chrf(prediction, [reference]).score / 100
    assert chrf(prediction, reference) == pytest.approx(expected, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet="ab *#\n-é", max_size=30),
    st.text(alphabet="ab *#\n-é", max_size=30),
)
def test_chrf_equals_sacrebleu_on_random_text(prediction, reference):
    sacrebleu = pytest.importorskip("sacrebleu", reason="sacrebleu (dev extra) checks chrF")
    expected = sacrebleu.sentence_chrf(prediction, [reference]).score / 100
    assert chrf(prediction, reference) == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= chrf(prediction, reference) <= 1.0


VALUES = [0.1, 0.4, 0.35, 0.8, 0.05, 0.6, 0.2, 0.9]


def test_bootstrap_is_deterministic_with_its_seed():
    first = bootstrap_interval(VALUES, seed=3)
    assert bootstrap_interval(VALUES, seed=3) == first
    assert bootstrap_interval(VALUES, seed=4) != first
    assert first["mean"] == pytest.approx(sum(VALUES) / len(VALUES))


def test_bootstrap_interval_contains_the_mean():
    interval = bootstrap_interval(VALUES)
    assert interval["low"] < interval["mean"] < interval["high"]
    assert min(VALUES) <= interval["low"] and interval["high"] <= max(VALUES)
    narrow = bootstrap_interval(VALUES, confidence=0.5)
    assert interval["low"] <= narrow["low"] <= narrow["high"] <= interval["high"]


def test_bootstrap_of_constant_values_has_zero_width():
    assert bootstrap_interval([0.3] * 7) == {"mean": 0.3, "low": 0.3, "high": 0.3}


def test_bootstrap_of_one_value_and_of_nones():
    assert bootstrap_interval([0.25]) == {"mean": 0.25, "low": 0.25, "high": 0.25}
    assert bootstrap_interval([None, 0.25, None]) == {"mean": 0.25, "low": 0.25, "high": 0.25}


@pytest.mark.parametrize("values", [[], [None, None]])
def test_bootstrap_of_nothing_raises(values):
    with pytest.raises(ValueError, match="no values"):
        bootstrap_interval(values)


def test_summarize_scores_shape():
    scores = [
        score_example("# A\n\ntext", "# A\n\ntext", "A\ntext"),
        score_example("A\n\ntext", "# A\n\ntext", "A\ntext"),
    ]
    summary = summarize_scores(scores)
    assert list(summary) == list(SUMMARY_KEYS)
    for interval in summary.values():
        assert set(interval) == {"mean", "low", "high"}
        assert interval["low"] <= interval["mean"] <= interval["high"]
    assert summary["structure_f1"]["mean"] == 0.5
    assert summary["text_cer"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert summary["cer"]["mean"] == pytest.approx((0 + 2 / 9) / 2)  # "# " added to 9 characters


def test_a_real_sample_article():
    post = sorted((SAMPLE / "posts").glob("*.html"))[0]
    markdown = html_to_markdown(post.read_text(encoding="utf-8"))
    plain = markdown_to_plain(markdown)
    perfect = score_example(markdown, markdown, plain)
    assert (perfect["cer"], perfect["chrf"], perfect["structure_f1"], perfect["text_cer"]) == (
        0.0,
        1.0,
        1.0,
        0.0,
    )
    assert perfect["structure"]["heading"] == 1.0
    identity = score_example(plain, markdown, plain)  # the model copies its input
    assert identity["cer"] > 0
    assert identity["chrf"] < 1
    assert identity["text_cer"] == 0.0
    assert identity["structure"]["heading"] == 0.0
    assert identity["structure_f1"] < 1
