"""Evenly spaced subsets: a few items that still cover the whole of a sequence.

A split is written article by article, and an article chunk by chunk, so the first N items of
either come from one part of it; N items spaced evenly, the first and the last included, see
every part. Used for an article's chunks (``examples.max_chunks_per_article``), the valid
chunks training scores (``finetune.max_valid_examples``) and the test chunks the evaluation
scores (``evaluate.max_examples``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def spread(items: Sequence[T], limit: int | None) -> list[T]:
    """At most ``limit`` of ``items``, evenly spaced and in order, the first and last included.

    ``None`` (or a limit of at least ``len(items)``): all of them.

    >>> spread(range(10), 4), spread(range(3), 4), spread(range(5), 1), spread("abc", None)
    ([0, 3, 6, 9], [0, 1, 2], [0], ['a', 'b', 'c'])
    """
    if limit is None or limit >= len(items):
        return list(items)
    if limit == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (limit - 1))] for i in range(limit)]
