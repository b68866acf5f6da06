"""Champion/challenger: ``decide_promotion`` on scripted per-chunk CERs (no model, no flow).

The decision is the low end of the paired interval of the CER differences: a challenger is
refused only when the whole interval says it is worse. Each test pins one part of that rule,
so that changing an operator or a constant in it fails one of them (``make mutate``)."""

from __future__ import annotations

from tasks.evaluate import decide_promotion
from tasks.evaluate.metrics import paired_difference

NOISE = [+0.30, -0.20, +0.25, -0.15, +0.20, -0.10, +0.10, -0.05]  # mean +0.04375


def model(model_id: str, cers: list[float]) -> dict:
    return {"model_id": model_id, "scores": [{"cer": c} for c in cers]}


CHAMPION = model("old", [0.5] * len(NOISE))


def test_promotion_refuses_only_when_the_whole_interval_says_worse():
    """Noisy per-chunk differences: the challenger is worse on average, but the interval
    spans 0, so it is promoted; a mutant that decides on the mean or the high end refuses."""
    noisy = model("new", [0.5 + d for d in NOISE])
    verdict = decide_promotion(noisy, CHAMPION, samples=2000)
    diff = verdict["cer_difference"]
    assert diff["mean"] > 0 and diff["high"] > 0 and diff["low"] < 0
    assert verdict["promote"] and "is not worse than" in verdict["reason"]
    worse = model("new", [0.6 + d / 10 for d in NOISE])
    refused = decide_promotion(worse, CHAMPION, samples=2000)
    assert refused["cer_difference"]["low"] > 0 and not refused["promote"]


def test_a_tie_is_promoted():
    """Equal CERs on every chunk: the interval is exactly [0, 0], which is not worse (a
    decision on ``low >= 0`` would refuse the champion's own twin)."""
    twin = model("twin", [0.5] * len(NOISE))
    verdict = decide_promotion(twin, CHAMPION, samples=50)
    assert verdict["cer_difference"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert verdict["promote"] is True
    assert verdict["reason"] == (
        "twin is not worse than old: CER difference +0.0000 (95% interval +0.0000 to +0.0000)"
    )


def test_a_challenger_worse_on_every_chunk_is_refused_with_its_reason():
    """Worse by 0.25 on every chunk: the interval is that one value."""
    worse = model("new", [0.75] * len(NOISE))
    verdict = decide_promotion(worse, CHAMPION, samples=50, confidence=0.9)
    assert verdict["promote"] is False
    assert verdict["cer_difference"] == {"mean": 0.25, "low": 0.25, "high": 0.25}
    assert verdict["reason"] == (
        "new is worse than old: CER difference +0.2500 (90% interval +0.2500 to +0.2500)"
    )


def test_a_better_challenger_is_promoted():
    better = model("new", [0.25] * len(NOISE))
    verdict = decide_promotion(better, CHAMPION, samples=50)
    assert verdict["promote"] is True
    assert verdict["cer_difference"] == {"mean": -0.25, "low": -0.25, "high": -0.25}


def test_the_interval_is_the_paired_one_with_the_given_samples_and_confidence():
    """The decision's interval is ``paired_difference`` of the challenger's and the champion's
    CERs (in that order) with the samples and confidence it was given, not the defaults."""
    noisy = model("new", [0.5 + d for d in NOISE])
    for samples, confidence in ((37, 0.95), (2000, 0.5), (501, 0.8)):
        verdict = decide_promotion(noisy, CHAMPION, samples=samples, confidence=confidence)
        expected = paired_difference(
            [0.5 + d for d in NOISE], [0.5] * len(NOISE), samples=samples, confidence=confidence
        )
        assert verdict["cer_difference"] == expected
        low, high = expected["low"], expected["high"]
        assert verdict["reason"].endswith(f"({confidence:.0%} interval {low:+.4f} to {high:+.4f})")
    # the defaults: 2000 resamples, 95 % (on chunks where 2001 resamples give other ends)
    new = [0.623, 0.742, 0.795, 0.942, 0.74, 0.922, 0.029, 0.466, 0.943, 0.649]
    old = [0.901, 0.113, 0.469, 0.247, 0.544, 0.574, 0.013, 0.217, 0.279, 0.916]
    defaults = decide_promotion(model("new", new), model("old", old))["cer_difference"]
    assert defaults == paired_difference(new, old, samples=2000, confidence=0.95)
    assert defaults != paired_difference(new, old, samples=2001, confidence=0.95)


def test_the_confidence_decides_a_borderline_challenger():
    """Worse on average by a little: a narrow (50 %) interval is above 0, a wide (99 %) one
    spans 0. The same scores are refused at one confidence and promoted at the other."""
    borderline = model("new", [0.5 + 0.01 + d / 4 for d in NOISE])
    narrow = decide_promotion(borderline, CHAMPION, samples=2000, confidence=0.5)
    wide = decide_promotion(borderline, CHAMPION, samples=2000, confidence=0.99)
    assert narrow["cer_difference"]["low"] > 0 and not narrow["promote"]
    assert wide["cer_difference"]["low"] < 0 and wide["promote"]


def test_without_a_champion_or_against_itself_it_is_promoted_without_a_test():
    noisy = model("new", [0.5 + d for d in NOISE])
    assert decide_promotion(noisy, None) == {
        "promote": True,
        "reason": "no champion yet",
        "cer_difference": None,
    }
    worse_self = model("new", [0.9] * len(NOISE))  # the same id: scores are not compared
    assert decide_promotion(worse_self, noisy) == {
        "promote": True,
        "reason": "the challenger is the champion",
        "cer_difference": None,
    }
