"""Which answer tokens go on as the scaffold does: the text the model read, markup and all.

With a scaffold (``backends.local.scaffold``) the model reads the plain text already
formatted by rules and writes the author's Markdown. Where it writes something other than
what it read (a heading the rules did not make, a flat list nested, backticks around a word)
it departs from its scaffold. A model trained for minutes departs more often than it is
right to, so the faithful decoder may add a constant ``scaffold_bias`` to the logits of the
tokens that follow the scaffold: a departure then needs that much more of the model's
confidence. ``backends.local.calibrate`` chooses the constant on the valid split.

Where an answer stands against its scaffold: both hold the plain text's words, so after the
answer's last text byte (``pos`` bytes of the plain text, whitespace left out) the scaffold
goes on with its own bytes after that same text byte. If the answer's markup and whitespace
since then (``run``) begin those bytes, the answer is in step, and following means going on
with the scaffold's rest; otherwise the answer has departed, until its next text byte.

>>> follower = Follower("# Tools\\n\\n- saws", "Tools\\n\\nsaws")
>>> follower.rest(5, b"")  # after "Tools": the scaffold goes on with a blank line
b'\\n\\n- saws'
>>> follower.rest(5, b"\\n\\n")
b'- saws'
>>> follower.rest(5, b"\\n\\n* ") is None  # another marker: departed
True
>>> follower.rest(9, b"")  # the words used up: only the end follows
b''
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPACE = frozenset(b" \t\n")


@dataclass
class Follower:
    """One answer's scaffold, aligned with the plain text it formats."""

    scaffold: str
    plain: str
    bytes_: bytes = field(init=False, repr=False)  # the scaffold's UTF-8 bytes
    after: list[int] | None = field(init=False, repr=False)  # per text byte count: offset

    def __post_init__(self) -> None:
        self.bytes_ = self.scaffold.encode()
        target = bytes(b for b in self.plain.encode() if b not in SPACE)
        after, done = [0], 0  # after[p]: scaffold offset just past its p-th text byte
        for offset, byte in enumerate(self.bytes_):
            if done < len(target) and byte == target[done]:
                done += 1
                after.append(offset + 1)
        # a scaffold whose text is not the plain text's (it never is, but a caller may pass
        # any string) has no steps to follow
        self.after = after if done == len(target) else None

    def rest(self, pos: int, run: bytes) -> bytes | None:
        """The scaffold after ``pos`` text bytes and the answer's ``run`` of markup since, or
        None where the answer departed from it (or there is nothing to follow)."""
        if self.after is None or pos >= len(self.after):
            return None
        start = self.after[pos]
        if self.bytes_[start : start + len(run)] != run:
            return None
        return self.bytes_[start + len(run) :]


def scaffold_rest(follower: Follower, matcher: Any) -> bytes | None:
    """The scaffold's rest from where ``matcher`` stands (``Follower.rest``), or None where
    the answer has departed."""
    pos = max(matcher.states)
    run = matcher.states[pos][0]
    return follower.rest(pos, matcher.tail[len(matcher.tail) - run :] if run else b"")


def breaks_line(follower: Follower, matcher: Any) -> bool:
    """Whether the scaffold ends the answer's line here: its rest begins with a line break
    (spaces before it aside). Going on with text instead joins two of its blocks.

    >>> from backends.local.faithful import Matcher
    >>> follower, matcher = Follower("Tools\\n\\n- saws", "Tools saws"), Matcher("Tools saws")
    >>> matcher.feed(b"Tools"), breaks_line(follower, matcher)
    (True, True)
    >>> matcher.feed(b"\\n\\n- s"), breaks_line(follower, matcher)
    (True, False)
    """
    rest = scaffold_rest(follower, matcher)
    return rest is not None and rest.lstrip(b" \t").startswith(b"\n")


def following(follower: Follower, matcher: Any, vocab: Any, stops: list[int]) -> list[int]:
    """The token ids that go on as the scaffold does from where ``matcher`` stands: every
    token whose bytes begin the scaffold's rest, or the end of the turn once only whitespace
    is left. Empty where the answer has departed."""
    rest = scaffold_rest(follower, matcher)
    if rest is None:
        return []
    if not rest.strip():
        return list(stops)
    ids = vocab.ids
    return [ids[rest[:k]] for k in range(1, min(len(rest), vocab.longest) + 1) if rest[:k] in ids]
