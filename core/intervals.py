"""Bootstrap intervals: a mean, a ratio of means or a paired difference, with how sure it is.

One definition for the evaluation (``tasks.evaluate``: every figure of the report) and for
the decoder's calibration on the valid split (``backends.local.calibrate``: a fine-tune's
departures from its scaffold are kept only where they pay beyond the noise), so both judge
by the same interval. Percentile bootstrap over the examples, seeded: the same inputs give
the same interval.

>>> found = paired_difference([0.1, 0.2, 0.4], [0.2, 0.3, 0.3], samples=500)
>>> {bound: round(x, 3) for bound, x in found.items()}  # better on two, worse on one
{'mean': -0.033, 'low': -0.1, 'high': 0.1}
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

from typing_extensions import TypedDict


class Interval(TypedDict):
    """A mean with its bootstrap interval (None: nothing to measure, e.g. no gap to close)."""

    mean: float | None
    low: float | None
    high: float | None


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (exactly rounded sum)."""
    return math.fsum(values) / len(values)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, linearly interpolated."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def bootstrap_interval(
    values: Sequence[float | None],
    *,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean and percentile-bootstrap confidence interval of the values (None values skipped).

    The interval is widened to contain the mean if resampling noise ever leaves it outside.

    >>> bootstrap_interval([0.0, 1.0, None], samples=500)
    {'mean': 0.5, 'low': 0.0, 'high': 1.0}
    """
    kept = [value for value in values if value is not None]
    if not kept:
        raise ValueError("bootstrap_interval: no values to summarize (empty or all None)")
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap_interval: bad samples={samples} or confidence={confidence}")
    centre = mean(kept)
    if len(kept) == 1:
        return {"mean": centre, "low": centre, "high": centre}
    rng = random.Random(seed)
    means = sorted(mean(rng.choices(kept, k=len(kept))) for _ in range(samples))
    return around(centre, means, confidence)


def around(centre: float, resampled: list[float], confidence: float) -> Interval:
    """``centre`` with the central ``confidence`` share of its sorted bootstrap values, the
    interval widened to contain it (resampling noise can leave it just outside)."""
    tail = (1 - confidence) / 2
    return {
        "mean": centre,
        "low": min(centre, percentile(resampled, tail)),
        "high": max(centre, percentile(resampled, 1 - tail)),
    }


def bootstrap_ratio(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    empty: float | None = None,
) -> Interval:
    """Ratio of means ``sum(numerators) / sum(denominators)`` with a paired bootstrap interval.

    The ratio of the means over the examples, not the mean of per-example ratios: an example
    weighs by its denominator. Each bootstrap sample draws the example indices once and takes
    the ratio of the resampled sums, so an example's numerator and denominator stay together
    (paired). A resample whose denominator is not positive has no ratio and is left out; when
    the whole sample's is not, every bound is ``empty``. The interval is widened to contain
    the ratio.

    >>> bootstrap_ratio([1.0, 0.0], [2.0, 2.0], samples=500)  # 1/4, resampled: 0, 1/4, 1/2
    {'mean': 0.25, 'low': 0.0, 'high': 0.5}
    >>> bootstrap_ratio([0.0], [0.0], empty=1.0)
    {'mean': 1.0, 'low': 1.0, 'high': 1.0}
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("bootstrap_ratio: numerators and denominators: same length, not empty")
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ratio: bad samples={samples} or confidence={confidence}")

    def ratio(indices: Iterable[int]) -> float | None:
        picked = list(indices)
        den = math.fsum(denominators[i] for i in picked)
        return math.fsum(numerators[i] for i in picked) / den if den > 0 else None

    n = len(numerators)
    centre = ratio(range(n))
    if centre is None:
        return {"mean": empty, "low": empty, "high": empty}
    rng = random.Random(seed)
    resampled = (ratio(rng.choices(range(n), k=n)) for _ in range(samples))
    ratios = sorted(r for r in resampled if r is not None)
    if n == 1 or not ratios:
        return {"mean": centre, "low": centre, "high": centre}
    return around(centre, ratios, confidence)


def paired_difference(
    challenger: list[float], champion: list[float], *, samples: int = 2000, confidence: float = 0.95
) -> Interval:
    """Mean of challenger - champion per example, with a bootstrap interval (paired)."""
    diffs = [a - b for a, b in zip(challenger, champion, strict=True)]
    return bootstrap_interval(diffs, samples=samples, confidence=confidence)
