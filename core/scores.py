"""The character error rate: how far an answer is from its reference.

One definition for the evaluation (``tasks.evaluate``) and for the decoder's calibration on
the valid split (``backends.local.calibrate``), so both choose by the same figure.

>>> round(cer("## Tools", "# Tools"), 4)  # one character added to seven
0.1429
"""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein


def cer(prediction: str, reference: str) -> float:
    """Levenshtein distance over the reference's length (an empty reference counts as 1)."""
    return Levenshtein.distance(prediction, reference) / max(1, len(reference))
