"""The evaluation metrics: exact values on small hand-made documents, chrF against sacrebleu."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.markdown import markdown_to_plain
from tasks.clean import html_to_markdown
from tasks.evaluate.ceiling import without_invisible
from tasks.evaluate.metrics import (
    INVISIBLE_KINDS,
    KINDS,
    SUMMARY_KEYS,
    VISIBLE_KINDS,
    bootstrap_interval,
    bootstrap_ratio,
    cer,
    chrf,
    f1_interval,
    gap_closed,
    paired_comparisons,
    paired_difference,
    score_example,
    structure_by_kind,
    structure_counts,
    structure_elements,
    structure_f1,
    summarize_scores,
    text_cer,
    with_gap_closed,
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

---
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
        "visible_f1",
        "invisible_f1",
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
    assert plain == "Title\n\nFirst sentence. Second sentence."
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


def test_bootstrap_interval_is_the_percentile_bootstrap_by_its_definition():
    """Each end against a reference written from the definition (resample n values with
    replacement, the mean of each, the (1 - c) / 2 and 1 - (1 - c) / 2 quantiles of those
    means, interpolated): a tail of 1 - c, n - 1 values a resample, or a percentile that does
    not interpolate all give other numbers."""
    import random
    import statistics

    for confidence, samples, seed in ((0.95, 2000, 0), (0.9, 999, 7), (0.5, 101, 3)):
        rng = random.Random(seed)
        means = [statistics.fmean(rng.choices(VALUES, k=len(VALUES))) for _ in range(samples)]
        cuts = statistics.quantiles(means, n=200, method="inclusive")  # every 0.5 %
        tail = round((1 - confidence) / 2 * 200)
        got = bootstrap_interval(VALUES, samples=samples, confidence=confidence, seed=seed)
        assert got["low"] == pytest.approx(cuts[tail - 1], abs=1e-12)
        assert got["high"] == pytest.approx(cuts[200 - tail - 1], abs=1e-12)


def test_percentile_interpolates_between_values():
    from core.intervals import percentile

    assert percentile([0.0, 10.0], 0.25) == 2.5
    assert percentile([1.0, 2.0, 4.0], 0.75) == 3.0
    assert percentile([5.0], 0.3) == 5.0


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
        score_example("# A\n\ntext", "# A\n\ntext", "A\n\ntext"),
        score_example("A\n\ntext", "# A\n\ntext", "A\n\ntext"),
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


# ---------------------------------------------------------------------------------------------
# Visible / invisible structure, the ceiling, gap closed, paired intervals


def test_visible_and_invisible_kinds_split_every_kind():
    assert set(VISIBLE_KINDS) | set(INVISIBLE_KINDS) == set(KINDS)
    assert not set(VISIBLE_KINDS) & set(INVISIBLE_KINDS)
    assert set(INVISIBLE_KINDS) == {"emphasis", "strong", "code_inline"}


def test_a_thematic_break_is_a_visible_element():
    assert structure_elements("a\n\n---\n\nb\n\n***\n") == Counter({("hr", "", ""): 2})
    assert structure_f1("a\n\nb\n", "a\n\n---\n\nb\n")["hr"] == 0.0
    assert score_example("a\n\n* * *\n\nb", "a\n\n---\n\nb", "a\nb")["visible_f1"] == 1.0


def test_visible_and_invisible_f1_by_hand():
    reference = "# Title\n\nSome *soft* and **bold** `code`.\n\n- one\n- two\n\n> Quote.\n"
    # heading right, one of two items, the quote missed, a heading invented;
    # emphasis right, strong missed, the code span as emphasis
    prediction = "# Title\n\nSome *soft* and bold *code*.\n\n- one\n\ntwo\n\nQuote.\n\n## New\n"
    scores = score_example(prediction, reference, markdown_to_plain(reference))
    # visible: matched 2 (heading, "one"); predicted 3 (2 headings, 1 item); reference 4
    assert scores["visible_f1"] == 2 * 2 / (3 + 4)
    # invisible: matched 1 (emphasis "soft"); predicted 2 (two emphases); reference 3
    assert scores["invisible_f1"] == 2 * 1 / (2 + 3)
    assert scores["structure_f1"] == 2 * 3 / (5 + 7)  # overall: the two together
    nothing = score_example("Just text.", "Just text.", "Just text.")
    assert nothing["visible_f1"] == nothing["invisible_f1"] == 1.0  # as structure_f1
    plain_only = score_example("Some soft.", "Some *soft*.", "Some soft.")
    assert (plain_only["visible_f1"], plain_only["invisible_f1"]) == (1.0, 0.0)


def test_f1_interval_is_micro_over_the_chunks():
    scores = [
        score_example("# A", "# A", "A"),  # 1 of 1
        score_example("B", "# B\n\n- c\n- d", "B\nc\nd"),  # 0 of 3
        score_example("Text.", "Text.", "Text."),  # nothing either side: counts for nothing
    ]
    micro = f1_interval(scores, VISIBLE_KINDS, samples=500)
    assert micro["mean"] == 2 * 1 / (1 + 4)  # not the mean of 1, 0 and 1
    assert micro["low"] == 0.0 and micro["high"] == 1.0  # resamples of chunk 2 only, of chunk 1
    assert f1_interval(scores, INVISIBLE_KINDS) == {"mean": 1.0, "low": 1.0, "high": 1.0}


TRICKY = [  # (reference, its ceiling)
    ("A **bold** and *light* word, ***both***.", "A bold and light word, both."),
    (r"Escaped \*not\* and \_not\_, 2 * 3 * 4.", r"Escaped \*not\* and \_not\_, 2 * 3 * 4."),
    ("Run `rm *.txt` and `a*b*c` now.", r"Run rm \*.txt and a\*b\*c now."),
    ("`*` and *`x`*", r"\* and x"),
    ("**a *b* c** _d_ __e__ snake_case_name", "a b c d e snake_case_name"),
    ("*1.* is a number.", r"1\. is a number."),
    ("`# not a heading`", r"\# not a heading"),
    ("## A *b* ##\n\n> quote **c**\n> more\n", "## A b ##\n\n> quote c\n> more\n"),
    ("- item *x*\n  next `y`\n", "- item x\n  next y\n"),
    ("| a | `b\\|c` |\n| - | - |\n| *d* | e |\n", "| a | b\\|c |\n| - | - |\n| d | e |\n"),
    (
        "[`Vec`][vec] and [*x*]\n\n[vec]: /v\n[*x*]: /x\n",
        "[Vec][vec] and [x][*x*]\n\n[vec]: /v\n[*x*]: /x\n",
    ),
    (
        "See [`a[0]`](/a) and `[ref]`.\n\n[ref]: /r\n",
        "See [a\\[0\\]](/a) and \\[ref\\].\n\n[ref]: /r\n",
    ),
    ("```\n*not* `code`\n```\n\n    *indented*\n", "```\n*not* `code`\n```\n\n    *indented*\n"),
    ("<span>*html*</span> `x`", "<span>html</span> x"),
    ("No markup at all.\n", "No markup at all.\n"),
]


@pytest.mark.parametrize(("reference", "expected"), TRICKY)
def test_without_invisible_on_tricky_inputs(reference, expected):
    ceiling = without_invisible(reference)
    assert ceiling == expected
    # what a perfect model could write from the plain text: the same plain text, every visible
    # element, no invisible one
    assert markdown_to_plain(ceiling) == markdown_to_plain(reference)
    elements = structure_elements(ceiling)
    assert not [e for e in elements if e[0] in INVISIBLE_KINDS]
    visible = Counter(
        {e: n for e, n in structure_elements(reference).items() if e[0] in VISIBLE_KINDS}
    )
    assert elements == visible


def test_without_invisible_of_the_sample_articles():
    for post in sorted((SAMPLE / "posts").glob("*.html")):
        markdown = html_to_markdown(post.read_text(encoding="utf-8"))
        ceiling = without_invisible(markdown)
        assert markdown_to_plain(ceiling) == markdown_to_plain(markdown), post.name
        assert structure_f1(ceiling, markdown)["heading"] in (None, 1.0)
        assert score_example(ceiling, markdown, "")["visible_f1"] == 1.0, post.name


def chunk_models(identity, model, ceiling):
    """Scored models as with_gap_closed reads them: per-chunk CERs only."""
    return {
        name: {"scores": [{"cer": c} for c in cers]}
        for name, cers in (("identity", identity), ("finetuned", model), ("ceiling", ceiling))
    }


def test_gap_closed_is_exactly_one_for_the_ceiling_and_zero_for_identity():
    identity, ceiling = [0.3, 0.07, 0.011, 0.2], [0.1, 0.0, 0.003, 0.2]
    models = with_gap_closed(chunk_models(identity, [0.2, 0.05, 0.02, 0.1], ceiling))
    assert models["ceiling"]["gap_closed"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert models["identity"]["gap_closed"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert 0 < models["finetuned"]["gap_closed"]["mean"] < 1


def test_gap_closed_is_a_ratio_of_means():
    gap = gap_closed([0.1, 0.4], [0.2, 0.4], [0.0, 0.0], samples=500)
    assert gap["mean"] == pytest.approx(0.1 / 0.6)  # the mean of per-chunk ratios: 0.25
    # resamples: chunk 0 twice (1/4): 0.5; chunk 1 twice (1/4): 0; one of each: 1/6
    assert gap["low"] == 0.0 and gap["high"] == 0.5


def test_gap_closed_interval_by_hand():
    """Three chunks of equal gap, the first closed, the others not: a resample's ratio is the
    share of draws of chunk 0: 0 (8/27), 1/3 (12/27), 2/3 (6/27) or 1 (1/27 = 3.7 %).
    The 95 % interval's tails are 2.5 % each: [0, 1]. A 90 % interval (tails of 5 %): [0, 2/3].
    """
    gap = gap_closed([0.0, 0.3, 0.3], [0.3, 0.3, 0.3], [0.0, 0.0, 0.0], samples=20000)
    assert gap["mean"] == pytest.approx(1 / 3)
    assert gap["low"] == 0.0 and gap["high"] == pytest.approx(1.0)
    narrower = gap_closed(
        [0.0, 0.3, 0.3], [0.3, 0.3, 0.3], [0.0, 0.0, 0.0], samples=20000, confidence=0.9
    )
    assert narrower["low"] == 0.0 and narrower["high"] == pytest.approx(2 / 3)


def test_gap_closed_resamples_the_chunks_of_all_models_together():
    """Chunks of very different CERs where the model closes exactly half of each chunk's gap:
    every paired resample closes half, so the interval has no width. Resampling the models
    independently would mix unrelated chunks and give a wide interval."""
    identity = [0.02, 0.5, 0.11, 0.9, 0.3, 0.05, 0.7, 0.25]
    ceiling = [c / 4 for c in identity]
    model = [(i + c) / 2 for i, c in zip(identity, ceiling, strict=True)]
    gap = gap_closed(model, identity, ceiling)
    assert gap["mean"] == pytest.approx(0.5)
    assert gap["low"] == pytest.approx(0.5, abs=1e-12)
    assert gap["high"] == pytest.approx(0.5, abs=1e-12)


def test_gap_closed_without_a_gap_has_no_value():
    assert gap_closed([0.1], [0.2], [0.2]) == {"mean": None, "low": None, "high": None}


def test_bootstrap_ratio_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ratio([], [])


def test_paired_difference_is_paired():
    """Strongly correlated arms: the challenger is the champion less 0.01 on every chunk. The
    paired interval is that exact difference; unpaired resampling would span the spread of
    the chunks' CERs (0.02 to 0.9), far wider."""
    champion = [0.02, 0.5, 0.11, 0.9, 0.3, 0.05, 0.7, 0.25]
    challenger = [c - 0.01 for c in champion]
    diff = paired_difference(challenger, champion)
    assert diff["mean"] == pytest.approx(-0.01)
    assert diff["low"] == pytest.approx(-0.01, abs=1e-12)
    assert diff["high"] == pytest.approx(-0.01, abs=1e-12)


def test_paired_comparisons_of_the_finetune_against_each_baseline():
    cers = {"finetuned": [0.1, 0.2], "identity": [0.3, 0.4], "rules": [0.1, 0.2], "x": [0.0, 0.0]}
    models = {name: {"scores": [{"cer": c} for c in cs]} for name, cs in cers.items()}
    compared = paired_comparisons(models, samples=200)
    assert [(c["model"], c["against"]) for c in compared] == [
        ("finetuned", "identity"),
        ("finetuned", "rules"),
    ]
    assert compared[0]["mean"] == pytest.approx(-0.2) and compared[1]["mean"] == 0.0
    assert compared[0]["high"] < 0
    assert paired_comparisons({"identity": models["identity"]}) == []


# The intervals' rules one at a time (``make mutate`` runs these for every mutant of them)

SPREAD = [0.12, 0.5, 0.33, 0.91, 0.07, 0.64, 0.28, 0.45, 0.8, 0.19, 0.38, 0.71]


def test_percentile_interpolates_between_neighbours():
    from core.intervals import percentile

    assert percentile([0.0, 10.0, 20.0, 30.0], 0.5) == 15.0
    assert percentile([0.0, 10.0, 20.0, 40.0], 0.9) == pytest.approx(34.0)
    assert percentile([0.0, 10.0, 20.0, 40.0], 0.0) == 0.0
    assert percentile([0.0, 10.0, 20.0, 40.0], 1.0) == 40.0


def test_bootstrap_interval_of_two_values_spans_them():
    assert bootstrap_interval([0.0, 1.0]) == {"mean": 0.5, "low": 0.0, "high": 1.0}


def test_the_bootstrap_defaults_are_2000_resamples_95_percent_and_seed_0():
    """What a caller that passes nothing gets (the settings' defaults are the same)."""
    explicit = {"samples": 2000, "confidence": 0.95, "seed": 0}
    assert bootstrap_interval(SPREAD) == bootstrap_interval(SPREAD, **explicit)
    for other in ({"samples": 2001}, {"seed": 1}, {"confidence": 0.951}):
        assert bootstrap_interval(SPREAD, **(explicit | other)) != bootstrap_interval(SPREAD)
    numerators, denominators = [1.0, 0.0, 2.0, 0.5, 1.5, 0.2, 0.9], [2, 2, 3, 1, 2.5, 1, 1.2]
    ratio = bootstrap_ratio(numerators, denominators)
    assert ratio == bootstrap_ratio(numerators, denominators, **explicit)
    for other in ({"samples": 2001}, {"seed": 1}, {"confidence": 0.951}):
        assert bootstrap_ratio(numerators, denominators, **(explicit | other)) != ratio
    assert bootstrap_ratio(numerators, denominators, seed=0) == ratio  # deterministic
    diffs = [a - b for a, b in zip(SPREAD, SPREAD[::-1], strict=True)]
    assert paired_difference(SPREAD, SPREAD[::-1]) == bootstrap_interval(diffs)


@pytest.mark.parametrize("bounds", [{"samples": 0}, {"confidence": 0.0}, {"confidence": 1.0}])
def test_the_bootstraps_refuse_bad_samples_or_confidence(bounds):
    with pytest.raises(ValueError, match=r"^bootstrap_interval: bad samples=\d+ or confidence="):
        bootstrap_interval(SPREAD, **bounds)
    with pytest.raises(ValueError, match=r"^bootstrap_ratio: bad samples=\d+ or confidence="):
        bootstrap_ratio([1.0, 2.0], [1.0, 1.0], **bounds)


def test_the_bootstraps_take_one_resample_and_confidences_near_the_ends():
    assert bootstrap_interval([0.0, 1.0], samples=1)["mean"] == 0.5
    assert bootstrap_ratio([1.0, 2.0], [1.0, 1.0], samples=1)["mean"] == 1.5
    assert bootstrap_interval([0.0, 1.0], confidence=0.999)["high"] == 1.0
    assert bootstrap_ratio([1.0, 0.0], [1.0, 1.0], confidence=0.999)["low"] == 0.0
    assert bootstrap_interval([0.0, 1.0], confidence=0.001) == {
        "mean": 0.5,
        "low": 0.5,
        "high": 0.5,
    }


def test_the_messages_of_an_empty_bootstrap():
    with pytest.raises(ValueError, match=r"^bootstrap_interval: no values to summarize \("):
        bootstrap_interval([None])
    with pytest.raises(ValueError, match=r"^bootstrap_interval: .* \(empty or all None\)$"):
        bootstrap_interval([])
    with pytest.raises(
        ValueError, match=r"^bootstrap_ratio: numerators and denominators: same length, not empty$"
    ):
        bootstrap_ratio([], [])


def test_bootstrap_ratio_of_one_example_and_of_resamples_without_a_ratio():
    """One example: its ratio, with no width. Resamples whose denominators are not positive
    have no ratio; when none has one (here the only resample, of seed 0, draws examples 2, 2
    and 1), the interval is the ratio itself."""
    assert bootstrap_ratio([1.0], [2.0]) == {"mean": 0.5, "low": 0.5, "high": 0.5}
    none = bootstrap_ratio([1.0, 1.0, 1.0], [3.0, -1.0, -1.0], samples=1, seed=0)
    assert none == {"mean": 3.0, "low": 3.0, "high": 3.0}


def test_paired_difference_needs_the_same_chunks():
    with pytest.raises(ValueError, match=r"shorter|longer"):
        paired_difference([0.1, 0.2], [0.1])


def test_paired_difference_passes_its_samples_and_confidence_on():
    diffs = [a - b for a, b in zip(SPREAD, SPREAD[::-1], strict=True)]
    for bounds in ({"samples": 37}, {"confidence": 0.5}, {"samples": 101, "confidence": 0.8}):
        assert paired_difference(SPREAD, SPREAD[::-1], **bounds) == bootstrap_interval(
            diffs, **bounds
        )
