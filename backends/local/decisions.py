"""Where the author's Markdown makes a decision the plain text does not: the tokens to weigh.

Almost every target token of a (plain text -> Markdown) example copies the input, which the
model learns in minutes; what it must learn from the author are the rare places where the
Markdown departs from the plain text (a ``## `` before a line, a ``- `` before an item, a
fence around code) and, just as much, the places where it
could have but did not: the start of every line. Training weighs the loss of the tokens that
touch one of those characters (``finetune.decision_weight``), so a chunk's few decisions are
not drowned by its hundreds of copies.

>>> plain = "Tools\\n\\nUse small tools:\\n\\nhammers"
>>> markdown = "## Tools\\n\\nUse small tools:\\n\\n- hammers"
>>> sorted(decision_chars(plain, markdown))  # '## ', '- ', every line's start
[0, 1, 2, 9, 10, 27, 28, 29]
>>> token_weights([(0, 2), (2, 8), (8, 10), (10, 26), (26, 28), (28, 30), (30, 37)],
...               decision_chars(plain, markdown), 3.0)  # "hammers" is a copy
[3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 1.0]
>>> token_weights([(10, 14), (14, 26)], decision_chars(plain, markdown), 3.0)  # copies
[3.0, 1.0]
"""

from __future__ import annotations

from rapidfuzz.distance import Indel


def decision_chars(plain: str, markdown: str) -> set[int]:
    """Offsets in ``markdown`` of what the plain text does not have, and of each line's start.

    The added characters come from a minimal alignment (insertions and deletions only) of the
    plain text with the Markdown; a line's first character is where the author chose a
    block's kind, markup or none.
    """
    chosen = {0} if markdown else set()
    chosen |= {i + 1 for i, char in enumerate(markdown[:-1]) if char == "\n"}
    for op in Indel.opcodes(plain, markdown):
        if op.tag in ("insert", "replace"):
            chosen.update(range(op.dest_start, op.dest_end))
    return chosen


def token_weights(
    offsets: list[tuple[int, int]], decisions: set[int], weight: float
) -> list[float]:
    """``weight`` for each token whose characters (``[start, end)`` offsets into the Markdown)
    include a decision, else 1.0."""
    return [
        weight if any(i in decisions for i in range(start, max(end, start + 1))) else 1.0
        for start, end in offsets
    ]
