"""Constrained greedy decoding: the answer may add Markdown markup, never change the words.

At each step the model's most likely token is taken if its bytes are consistent with the
input: every non-whitespace byte either continues the input's own text (whitespace removed,
so ``a\\tb`` in a plain table row may become ``| a | b |``) or is a markup byte
(``#*_>`-+|:.\\`` and digits, or a code fence's language name). Otherwise the next most likely
of the top ``TOP_K`` is tried, and if none fits, the input's own next token. The end of the
turn is allowed only once the input is used up, and is forced when the answer runs on
with more than a closing fence's worth of markup (``END_RUN``) after that.

At the start of a line, where an answer begins a block with markup or not, the choice is
made between two sides: the best fitting token that is markup only (``#``, ``##``, ``-``, a
fence, ...) and the best fitting other token (text, a blank line). The markup wins when its
score plus ``markup_bias`` (logits) beats the other's, so a positive bias makes a timid model
start more blocks with markup; ``backends.local.calibrate`` chooses it on the valid split.
Before either choice, a bias (logits) is added to the tokens that go on as the text the
model read does (its scaffold, ``backends.local.follow``), so a model departs from its rules
only where it is that much surer; calibrated on the valid split too. There are two: where a
block's kind is decided (a line start, or where the scaffold breaks the line) the follower
gets ``block_bias``; inside a line ``scaffold_bias``, and a token that breaks the line there
is lowered by the difference. A model may so add inline markup (a code span) on its own
while its blocks stay its scaffold's, or the other way round.

Loops are impossible, not just unlikely: markup bytes without text between them are capped
per run (``RUN_LIMIT``; after text on the same line, ``INLINE_RUN``) and in total
(``markup_budget``), so an answer is at most the input plus a bounded amount of markup.
Which markup is *right* is not checked here; the repair pass (``core.faithful.repair``) makes
the text exact afterwards.

>>> state = Matcher("Hello world")
>>> state.feed(b"# Hello"), state.feed(b" wor"), state.done
(True, True, False)
>>> state.feed(b"xyz")
False
>>> state.feed(b"ld"), state.done
(True, True)
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

TOP_K = 8  # candidates tried per step before falling back to the input's own next token
LINE_START_K = 16  # at a line start: markup candidates, and other candidates, tried each
LINE_START_RUN = 16  # markup/space bytes since the last text after which a line start is not
# weighed as one (a fence with its language and blank lines takes ~10): an unsure model
# cannot open empty block after empty block
RUN_LIMIT = 48  # markup/whitespace bytes allowed in a row without input text (a table rule)
INLINE_RUN = 4  # markup bytes but pipes in a row after text on the same line (``***` ``
# closes three spans with 4): a model that stops following its text cannot fill a line
PIPE = ord("|")
END_RUN = 8  # and once the input is used up: enough to close a fence, a span or a table row
TAIL = 64  # answer bytes a matcher keeps: more than a run of markup (RUN_LIMIT) can be
MARKUP = frozenset(b"#*_>`-+|:.\\0123456789")  # what canonical Markdown adds to the text
SPACE = frozenset(b" \t\n")
BLOCK_START = frozenset(b"#*-+>`|0123456789")  # bytes a block's markup may start a line with
FENCE_LANGUAGE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-_#")


# input position -> (markup run, markup budget spent, inline run: markup bytes since the
# line's last text, -1 before the line has any)
States = dict[int, tuple[int, int, int]]


def markup_budget(text_bytes: int) -> int:
    """Non-whitespace markup bytes one answer may add: 64 plus half the input's bytes."""
    return 64 + text_bytes // 2


@dataclass
class Matcher:
    """Where an answer stands against its input: the positions the bytes so far can reach."""

    plain: str
    target: bytes = field(init=False)  # the input's bytes without whitespace
    after: list[int] = field(init=False)  # raw byte offset just after each target byte
    raw: bytes = field(init=False)  # the input's UTF-8 bytes
    states: States = field(init=False)
    line: bytes = b""  # the answer's current line, for code fence languages
    tail: bytes = b""  # the answer's last ``TAIL`` bytes (its markup since the last text)
    budget: int = field(init=False)

    def __post_init__(self) -> None:
        self.raw = raw = self.plain.encode()
        self.target = bytes(b for b in raw if b not in SPACE)
        self.after = [i + 1 for i, b in enumerate(raw) if b not in SPACE]
        self.states = {0: (0, 0, -1)}
        self.budget = markup_budget(len(raw))

    @property
    def done(self) -> bool:
        """The input is used up (the end of the turn may come now)."""
        return len(self.target) in self.states

    def run(self) -> int:
        """Markup bytes since the last input text, in the best state."""
        return min(run for run, _, _ in self.states.values())

    def step(self, states: States, line: bytes, byte: int) -> States:
        """The states after one more answer byte (empty: the byte is not allowed)."""
        # equivalent mutant: b"XX`XX" also strips X, which is a language letter anyway
        tail = line.lstrip(b"`")  # pragma: no mutate
        fence = (
            line.startswith(b"```") and len(line) < 24 and all(b in FENCE_LANGUAGE for b in tail)
        )
        nxt: States = {}

        def keep(pos: int, *state: int) -> None:  # the least run (and spending) wins
            nxt[pos] = min(nxt.get(pos, state), state)

        for pos, (run, spent, inline) in states.items():
            if pos < len(self.target) and self.target[pos] == byte:
                keep(pos + 1, 0, spent, 0)
            if run >= RUN_LIMIT:
                continue
            if byte in SPACE:
                keep(pos, run + 1, spent, -1 if byte == 10 else inline)
                continue
            markup = byte in MARKUP or (fence and byte in FENCE_LANGUAGE)
            if markup and spent < self.budget and inline < INLINE_RUN:
                counted = inline >= 0 and byte != PIPE  # empty table cells are pipes in a row
                keep(pos, run + 1, spent + 1, inline + 1 if counted else inline)
        return nxt

    def advance(self, data: bytes) -> tuple[States, bytes] | None:
        """The states and line after ``data``, or None if it does not fit (nothing changes)."""
        states, line = self.states, self.line
        for byte in data:
            states = self.step(states, line, byte)
            if not states:
                return None
            line = b"" if byte == 10 else line + bytes([byte])
        return states, line

    def fits(self, data: bytes) -> bool:
        """Whether the answer may go on with ``data``."""
        return self.advance(data) is not None

    def feed(self, data: bytes) -> bool:
        """Take ``data`` into the answer if it fits; whether it did."""
        moved = self.advance(data)
        if moved is not None:
            self.states, self.line = moved
            self.tail = (self.tail + data)[-TAIL:]
        return moved is not None

    def rest(self) -> bytes:
        """The input's raw bytes after the furthest text matched so far (with its spaces)."""
        pos = max(self.states)
        return self.raw[self.after[pos - 1] if pos else 0 :]


def markup_token_ids(table: list[bytes | None]) -> list[int]:
    """Tokens that can only be markup at a line start: a block-start byte, then markup/space.

    >>> markup_token_ids([b"#", b"##", b" -", b"-based", b"```", None, b"1", b"x"])
    [0, 1, 4, 6]
    """
    allowed = MARKUP | SPACE
    return [
        token_id
        for token_id, data in enumerate(table)
        if data and data[0] in BLOCK_START and all(byte in allowed for byte in data)
    ]


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: each byte's stand-in character in token strings."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    alphabet = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in alphabet:
            alphabet[byte] = chr(256 + extra)
            extra += 1
    return alphabet


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """Each token id's bytes for a byte-level BPE tokenizer; None for special tokens."""
    decoder = {char: byte for byte, char in byte_alphabet().items()}
    special = set(tokenizer.all_special_ids)
    table: list[bytes | None] = [None] * len(tokenizer)
    for token, token_id in tokenizer.get_vocab().items():
        if token_id in special or token_id >= len(table):
            continue
        if all(char in decoder for char in token):
            table[token_id] = bytes(decoder[char] for char in token)
    return table


class FaithfulProcessor:
    """A ``transformers`` logits processor that keeps each row of a batch to its input."""

    def __init__(
        self,
        tokenizer: Any,
        plains: list[str],
        stops: list[int],
        width: int,
        markup_bias: float = 0.0,
        scaffolds: list[str] | None = None,
        scaffold_bias: float = 0.0,
        block_bias: float | None = None,
    ) -> None:
        from backends.local.follow import Follower

        self.vocabulary = vocabulary(tokenizer)
        self.table = self.vocabulary.table
        self.byte_ids = {data[0]: i for i, data in enumerate(self.table) if data and len(data) == 1}
        self.matchers = [Matcher(plain) for plain in plains]
        self.stops = stops
        self.width = width  # prompt columns: later columns are the answer's tokens
        self.ended = [False] * len(plains)
        self.fallbacks = 0  # steps where the model's top candidates all broke the input
        self.markup_bias = markup_bias  # logits added to markup tokens at a line start
        self.scaffold_bias = scaffold_bias  # logits added to the tokens that follow the scaffold
        # ... where a block's kind is decided (None: the scaffold bias there too)
        self.block_bias = scaffold_bias if block_bias is None else block_bias
        read = scaffolds or plains  # what each row's model read (backends.local.follow)
        self.followers = [Follower(s, plain) for s, plain in zip(read, plains, strict=True)]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if input_ids.shape[1] > self.width:
            for row, token_id in enumerate(input_ids[:, -1].tolist()):
                self.take(row, token_id)
        forced = scores.new_full(scores.shape, -math.inf)
        rows = scores.float().cpu()  # the rules read scores on the CPU (there: the same tensor)
        for row in range(scores.shape[0]):
            forced[row, self.choose(row, rows[row])] = 0.0
        return forced

    def choose(self, row: int, scores: Any) -> int:
        """The token for ``row`` from its next-token ``scores`` (``backends.local.decode``)."""
        import torch

        matcher = self.matchers[row]
        follow: list[int] = []
        if (self.scaffold_bias or self.block_bias) and not self.ended[row]:
            follow = self.follow_ids(row, scores.shape[-1])
            block = decides_block(matcher, self.followers[row])
            biases = (self.scaffold_bias, self.block_bias)
            scores = follow_biased(scores, follow, biases, block, self.vocabulary)
        if at_line_start(matcher) and not self.ended[row]:
            markup, other = line_start_options(matcher, scores, self.vocabulary, follow)
            if markup is not None and (other is None or markup[1] + self.markup_bias > other[1]):
                return markup[0]
            if other is not None:
                return other[0]
        top = torch.topk(scores, TOP_K).indices.tolist()
        extra = [i for i in follow if i not in top]  # a following token is always weighed
        return self._choose(row, sorted(top + extra, key=lambda i: -float(scores[i])))

    def follow_ids(self, row: int, width: int) -> list[int]:
        """The tokens (below ``width``) that go on as the row's scaffold does, if in step."""
        from backends.local.follow import following

        ids = following(self.followers[row], self.matchers[row], self.vocabulary, self.stops)
        return [i for i in ids if i < width]

    def take(self, row: int, token_id: int) -> None:
        """Move the row's matcher past the token it was given (a stop token ends the row)."""
        if self.ended[row]:
            return
        if token_id in self.stops:
            self.ended[row] = True
        elif token_id < len(self.table) and (data := self.table[token_id]):
            self.matchers[row].feed(data)

    def _choose(self, row: int, candidates: list[int]) -> int:
        """The first candidate that fits the row's input, else the input's own next token."""
        matcher = self.matchers[row]
        if self.ended[row]:
            return candidates[0]
        if matcher.done and matcher.run() >= END_RUN:
            return self.stops[0]
        for token_id in candidates:
            if token_id in self.stops:
                if matcher.done:
                    return token_id
                continue
            data = self.table[token_id] if token_id < len(self.table) else None
            if data and matcher.fits(data):
                return token_id
        self.fallbacks += 1
        return self._fallback(matcher)

    def _fallback(self, matcher: Matcher) -> int:
        """The token the input itself goes on with (or its next single byte; or the end)."""
        rest = matcher.rest()
        if not rest.strip():
            return self.stops[0]
        own = self.vocabulary.own_next(matcher)
        if own is not None and (data := self.table[own]) and matcher.fits(data):
            return own
        for byte in rest:
            if byte not in SPACE and (token_id := self.byte_ids.get(byte)) is not None:
                return token_id
        return self.stops[0]


@dataclass
class Vocabulary:
    """What the decoder needs of a tokenizer: each token's bytes, and which are markup only."""

    tokenizer: Any
    table: list[bytes | None]
    is_markup: Any  # bool tensor over the token ids: ``markup_token_ids``
    masks: dict[tuple[str, int], Any] = field(default_factory=dict)  # the two by scores' width
    ids: dict[bytes, int] = field(init=False)  # each token's id by its bytes
    breaks: Any = field(init=False)  # bool tensor over the token ids: holds a line break
    longest: int = field(init=False)  # the most bytes of one token

    def __post_init__(self) -> None:
        import torch

        self.breaks = torch.tensor([bool(data and b"\n" in data) for data in self.table])
        self.ids = {data: i for i, data in enumerate(self.table) if data}
        self.longest = max((len(data) for data in self.ids), default=0)

    def markup_mask(self, width: int) -> Any:
        """``is_markup`` cut or padded (False) to ``width`` ids: the model's vocabulary size."""
        return self._padded("markup", self.is_markup, width)

    def break_mask(self, width: int) -> Any:
        """``breaks`` cut or padded (False) to ``width`` ids, as ``markup_mask``."""
        return self._padded("breaks", self.breaks, width)

    def _padded(self, name: str, mask: Any, width: int) -> Any:
        import torch

        if (name, width) not in self.masks:
            padded = torch.zeros(width, dtype=torch.bool)
            padded[: len(mask)] = mask[:width]
            self.masks[name, width] = padded
        return self.masks[name, width]

    def own_next(self, matcher: Matcher) -> int | None:
        """The first token of the input's rest (the text itself goes on), if any."""
        text = matcher.rest()[:64].decode(errors="ignore")  # UTF-8, a character cut off left out
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []
        return ids[0] if ids else None


def biased(scores: Any, ids: list[int], bias: float) -> Any:
    """``scores`` with ``bias`` added at ``ids`` (a copy; ``scores`` itself where none)."""
    if not ids or not bias:
        return scores
    scores = scores.clone()
    scores[ids] += bias
    return scores


def follow_biased(
    scores: Any, follow: list[int], biases: tuple[float, float], block: bool, vocab: Vocabulary
) -> Any:
    """``scores`` with the scaffold's ``follow`` tokens raised by ``biases`` (inside a line,
    where a block's kind is decided): at a ``block`` decision by the block bias; elsewhere by
    the inline one, with the tokens that break the line and do not follow lowered by the
    block bias minus the inline one, so breaking a line the scaffold does not break takes the
    block bias's confidence. A copy; ``scores`` itself where nothing changes.

    >>> import torch
    >>> vocab = Vocabulary(None, [b"a", b"\\n", b"b"], torch.zeros(3, dtype=torch.bool))
    >>> follow_biased(torch.zeros(3), [0], (1.0, 8.0), False, vocab).tolist()
    [1.0, -7.0, 0.0]
    >>> follow_biased(torch.zeros(3), [0], (1.0, 8.0), True, vocab).tolist()
    [8.0, 0.0, 0.0]
    """
    inline, block_bias = biases
    if block or not follow:
        return biased(scores, follow, block_bias)
    scores = biased(scores, follow, inline)
    if block_bias == inline:
        return scores
    breaking = vocab.break_mask(scores.shape[-1]).clone()
    breaking[follow] = False
    scores = scores.clone()
    scores[breaking] -= block_bias - inline
    return scores


def at_line_start(matcher: Matcher) -> bool:
    """Whether the answer is where a block may begin: a line start, with input left, and
    fewer than ``LINE_START_RUN`` markup bytes since the last text (no run of empty blocks).
    """
    return matcher.line == b"" and not matcher.done and matcher.run() < LINE_START_RUN


def decides_block(matcher: Matcher, follower: Any) -> bool:
    """Whether the answer's next token decides a block's kind: at a line start, or where the
    scaffold (``backends.local.follow.Follower``) breaks the line."""
    from backends.local.follow import breaks_line

    return at_line_start(matcher) or breaks_line(follower, matcher)


def line_start_options(
    matcher: Matcher,
    scores: Any,
    vocab: Vocabulary,
    extra: list[int] = (),  # type: ignore[assignment]
) -> tuple[tuple[int, float] | None, tuple[int, float] | None]:
    """At a line start, ``(token, score)`` of the best fitting markup token and of the rest.

    Each side is the best of its ``LINE_START_K`` highest scores and the ``extra`` tokens
    (those that follow the scaffold) that fits the input (the rest also tries the input's own
    next token); None where nothing fits. A line start is
    where an answer adds a block's markup or not: the decoder takes the markup when its score
    plus the markup bias beats the rest's (``backends.local.calibrate`` chooses the bias).
    """
    import torch

    is_markup = vocab.markup_mask(scores.shape[-1])

    def best(mask: Any, more: list[int | None]) -> tuple[int, float] | None:
        masked = torch.where(mask, scores, torch.full_like(scores, -math.inf))
        found = None
        for token in [*torch.topk(masked, LINE_START_K).indices.tolist(), *more]:
            if token is None or token >= len(vocab.table) or not mask[token]:
                continue
            data, score = vocab.table[token], float(scores[token])
            if data and matcher.fits(data) and (found is None or score > found[1]):
                found = (token, score)
        return found

    return best(is_markup, list(extra)), best(~is_markup, [*extra, vocab.own_next(matcher)])


_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def vocabulary(tokenizer: Any) -> Vocabulary:
    """The tokenizer's ``Vocabulary``, made once per tokenizer object (it walks every token)."""
    import torch

    if tokenizer not in _VOCABULARIES:
        table = token_bytes(tokenizer)
        is_markup = torch.zeros(len(table), dtype=torch.bool)
        is_markup[markup_token_ids(table)] = True
        _VOCABULARIES[tokenizer] = Vocabulary(tokenizer, table, is_markup)
    return _VOCABULARIES[tokenizer]
