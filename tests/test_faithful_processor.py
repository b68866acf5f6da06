"""The faithful decoder's rules on their own (backends/local/faithful.py), without a model: a
fake byte-level tokenizer and scripted logits, so each limit is tested at its exact boundary.

The limits are written here as numbers (48 bytes of markup in a row, 8 once the input is used
up, 16 at a line start; 8 candidates a step, 16 a side at a line start), not as the module's
constants: a test that reads the constant follows it wherever it is changed to. They run in
milliseconds, so `make mutate` runs them for every mutant of the decoder."""

from __future__ import annotations

import pytest
import torch

from backends.local.faithful import (
    FaithfulProcessor,
    Matcher,
    Vocabulary,
    at_line_start,
    biased,
    byte_alphabet,
    line_start_options,
    markup_budget,
    markup_token_ids,
    token_bytes,
    vocabulary,
)

EOS, END = 256, 257  # the fake tokenizer's two stop tokens: one token a byte, then these
ALPHABET = byte_alphabet()
FILLERS = b"fgjkmquvzFGJKMQU"  # 16 letters that none of the inputs below holds


class FakeTokenizer:
    """A byte-level BPE tokenizer in GPT-2's alphabet: one token per byte (but ``missing``),
    two special stop tokens, then ``words`` (multi-byte tokens), each with the next id.
    Encoding is greedy, longest token first."""

    def __init__(self, words: tuple[bytes, ...] = (), missing: bytes = b"") -> None:
        self.vocab = {ALPHABET[b]: b for b in range(256) if b not in missing}
        self.vocab |= {"<eos>": EOS, "<end>": END}
        for data in words:
            self.vocab["".join(ALPHABET[b] for b in data)] = 258 + words.index(data)
        self.all_special_ids = [EOS, END]
        self.size = 258 + len(words)

    def __len__(self) -> int:
        return self.size

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def id(self, data: bytes) -> int:
        return self.vocab["".join(ALPHABET[b] for b in data)]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        """Token ids, after a BOS (``END`` here) unless ``add_special_tokens`` is False."""
        assert isinstance(add_special_tokens, bool)
        data, ids = text.encode(), [END] if add_special_tokens else []
        while data:
            k = next(k for k in range(len(data), 0, -1) if self.known(data[:k]))
            ids.append(self.id(data[:k]))
            data = data[k:]
        return {"input_ids": ids}

    def known(self, data: bytes) -> bool:
        return "".join(ALPHABET[b] for b in data) in self.vocab


def logits(tokenizer: FakeTokenizer, width: int | None = None, **by_token: float) -> torch.Tensor:
    """Scores 0 everywhere but for the given tokens (``EOS=``, ``END=``, or a token's text:
    ``H=2.0``; ``by_bytes`` for any bytes)."""
    scores = torch.zeros(width or len(tokenizer))
    for name, value in by_token.items():
        scores[{"EOS": EOS, "END": END}.get(name) or tokenizer.id(name.encode())] = value
    return scores


def scored(
    tokenizer: FakeTokenizer, pairs: list[tuple[bytes, float]], width=None, base: float = 0.0
) -> torch.Tensor:
    """Scores ``base`` everywhere but for the given tokens (by their bytes)."""
    scores = torch.full((width or len(tokenizer),), base)
    for data, value in pairs:
        scores[tokenizer.id(data)] = value
    return scores


def processor(tokenizer, plains, **options) -> FaithfulProcessor:
    options = {"stops": [EOS, END], "width": 1} | options
    return FaithfulProcessor(tokenizer, plains, **options)


def decode(plain: str, script, tokenizer=None, steps: int = 400, **options) -> bytes:
    """Greedy decoding of ``plain`` with logits ``script(step)``: the bytes until a stop."""
    tokenizer = tokenizer or FakeTokenizer()
    chooser = processor(tokenizer, [plain], **options)
    table = token_bytes(tokenizer)
    ids = torch.zeros((1, 1), dtype=torch.long)
    for step in range(steps):
        chosen = int(chooser(ids, script(step)[None, :]).argmax())
        if chosen in (EOS, END):
            return b"".join(table[i] for i in ids[0, 1:].tolist())
        ids = torch.cat([ids, torch.tensor([[chosen]])], dim=1)
    raise AssertionError("no end of turn")


def text_of(data: bytes) -> bytes:
    """The bytes that are not whitespace."""
    return bytes(b for b in data if b not in b" \t\n")


def fillers(n: int, value: float = 10.0) -> list[tuple[bytes, float]]:
    """``n`` letters the input does not hold (they never fit), all scored ``value``."""
    return [(bytes([b]), value) for b in FILLERS[:n]]


# --- the model's wishes, within the input ---------------------------------------------------


def test_the_end_of_turn_waits_for_the_whole_input():
    """A model that wants to stop at once still writes every word first."""
    tokenizer = FakeTokenizer()
    answer = decode("Two words.\nAnd a line.", lambda step: logits(tokenizer, EOS=10.0))
    assert text_of(answer) == b"Twowords.Andaline."  # spaces are the decoder's to place


def test_markup_a_model_prefers_is_kept_and_text_never_changes():
    """A model that loves '#' and 'x' gets its '#'s (markup) but never an 'x' (new text)."""
    tokenizer = FakeTokenizer()
    scores = scored(tokenizer, [(b"#", 5.0), (b"x", 9.0), (b" ", 4.0)])
    answer = decode("Tools", lambda step: scores)
    assert text_of(answer).replace(b"#", b"") == b"Tools" and answer.startswith(b"#")


def test_once_the_input_is_used_up_the_model_may_stop_or_add_eight_markup_bytes():
    """After the last word: the end of the turn when the model wants it; a model that wants
    markup forever gets 8 bytes of it (a closing fence, span or table row), then the end; on
    the line of the last word, only 4 of them (INLINE_RUN)."""
    tokenizer = FakeTokenizer()
    stops = scored(tokenizer, [(b"a", 10.0), (b"#", 4.0)]) + logits(tokenizer, EOS=5.0)
    assert decode("a", lambda step: stops) == b"a"
    second_stop = scored(tokenizer, [(b"a", 10.0), (b"#", 4.0)]) + logits(tokenizer, END=5.0)
    assert decode("a", lambda step: second_stop) == b"a"  # any stop token ends the turn
    markup = scored(tokenizer, [(b"a", 10.0), (b"#", 9.0)]) + logits(tokenizer, EOS=1.0)
    assert decode("a", lambda step: markup) == b"a" + b"#" * 4
    spaces = scored(tokenizer, [(b"a", 10.0), (b"\n", 9.0)]) + logits(tokenizer, EOS=1.0)
    assert decode("a", lambda step: spaces) == b"a" + b"\n" * 8


def test_after_text_a_line_takes_a_few_markup_bytes_in_a_row_a_new_line_more():
    """A model that loves backticks closes spans, not a line of them; at a line start a
    table rule or a fence still fits."""
    tokenizer = FakeTokenizer()
    ticks = scored(tokenizer, [(b"`", 9.0), (b"x", 2.0)])
    answer = decode("one two", lambda step: ticks)
    assert answer.replace(b"`", b"").split() == [b"one", b"two"]
    assert b"`" * 5 not in answer[answer.index(b"o") :]  # after the text
    matcher = Matcher("a\nb")
    assert matcher.feed(b"a" + b"`" * 4) and not matcher.fits(b"`")
    assert matcher.feed(b"\n" + b"|---" * 4) and matcher.feed(b"\nb")
    assert Matcher("a\t\t\t\t\tb").fits(b"| a |  |  |  |  | b |")  # empty cells: pipes


def test_a_forced_end_is_the_first_stop_token():
    tokenizer = FakeTokenizer()
    chooser = processor(tokenizer, ["a"], stops=[END, EOS])
    assert chooser.matchers[0].feed(b"a\n" + b"#" * 7)  # 8 bytes since the text
    assert chooser.choose(0, scored(tokenizer, [(b"#", 9.0)])) == END


# --- candidates: 8 a step, and the fallback -------------------------------------------------


def test_the_models_eight_best_tokens_are_tried_then_the_inputs_own():
    """Mid-line, the model's 8 best tokens are tried in order; a fitting 9th is not: the
    input's own next token is taken instead (and counted as a fallback)."""
    tokenizer = FakeTokenizer(words=(b"llo",))
    for rank, expected, fallbacks in ((8, b"l", 0), (9, b"llo", 1)):
        chooser = processor(tokenizer, ["Hello world"])
        chooser.matchers[0].feed(b"He")
        scores = scored(tokenizer, [*fillers(rank - 1), (b"l", 5.0)])
        assert chooser.choose(0, scores) == tokenizer.id(expected)
        assert chooser.fallbacks == fallbacks


def test_a_stop_before_the_input_is_used_up_is_passed_over():
    """The end of turn among the candidates, too early: the next candidate is tried."""
    tokenizer = FakeTokenizer(words=(b"llo",))
    chooser = processor(tokenizer, ["Hello world"])
    chooser.matchers[0].feed(b"He")
    scores = scored(tokenizer, [(b"l", 5.0)]) + logits(tokenizer, EOS=9.0, END=8.0)
    assert chooser.choose(0, scores) == tokenizer.id(b"l") and chooser.fallbacks == 0


def test_the_candidates_are_tried_best_first():
    tokenizer = FakeTokenizer(words=(b"llo",))
    chooser = processor(tokenizer, ["Hello world"])
    chooser.matchers[0].feed(b"He")
    scores = scored(tokenizer, [(b"x", 9.0), (b"l", 4.0), (b"llo", 5.0), (b"#", 3.0)])
    assert chooser.choose(0, scores) == tokenizer.id(b"llo")
    assert chooser.fallbacks == 0


def test_the_fallback_at_the_run_limit_is_the_next_text_byte():
    """48 bytes of markup in a row: the input's own next token (" world") starts with a space,
    which no longer fits, so the fallback is the next text byte's own token."""
    tokenizer = FakeTokenizer(words=(b" world",))
    chooser = processor(tokenizer, ["a world"])
    assert chooser.matchers[0].feed(b"a\n" + b"*" * 47)
    assert chooser.choose(0, scored(tokenizer, fillers(8))) == tokenizer.id(b"w")
    assert chooser.fallbacks == 1


def test_without_a_token_for_the_next_text_byte_the_fallback_is_the_end():
    tokenizer = FakeTokenizer(words=(b" w",), missing=b"w")
    chooser = processor(tokenizer, ["a w"], stops=[END, EOS])
    assert chooser.matchers[0].feed(b"a\n" + b"*" * 47)
    assert chooser.choose(0, scored(tokenizer, fillers(8))) == END


def test_when_nothing_fits_after_the_input_the_fallback_is_the_end():
    tokenizer = FakeTokenizer()
    chooser = processor(tokenizer, ["a \n"], stops=[END, EOS])
    chooser.matchers[0].feed(b"a")
    assert chooser.choose(0, scored(tokenizer, fillers(8))) == END  # EOS is not in the top 8
    assert chooser.fallbacks == 1
    assert chooser.choose(0, scored(tokenizer, fillers(8))) == END
    assert chooser.fallbacks == 2  # counted over the steps


def test_tokens_beyond_the_tokenizer_are_never_chosen():
    """The model's logits may be wider than the tokenizer (padded vocabulary)."""
    tokenizer = FakeTokenizer()
    width = len(tokenizer) + 2
    chooser = processor(tokenizer, ["Hello"])
    chooser.matchers[0].feed(b"He")
    scores = scored(tokenizer, [(b"l", 1.0)], width=width)
    scores[len(tokenizer)] = scores[len(tokenizer) + 1] = 9.0
    assert chooser.choose(0, scores) == tokenizer.id(b"l")
    start = processor(tokenizer, ["Hello"])  # at a line start too
    scores = scored(tokenizer, [(b"H", 1.0)], width=width)
    scores[len(tokenizer)] = scores[len(tokenizer) + 1] = 9.0
    assert start.choose(0, scores) == tokenizer.id(b"H")


# --- a line start: markup against the rest, 16 candidates a side ----------------------------


def test_at_a_line_start_markup_wins_by_its_score_plus_the_bias():
    tokenizer = FakeTokenizer()
    scores = scored(tokenizer, [(b"#", 1.0), (b"H", 2.0)])
    for bias, expected in ((0.0, b"H"), (1.0, b"H"), (1.5, b"#"), (-5.0, b"H")):
        chooser = processor(tokenizer, ["Hello"], markup_bias=bias)
        assert chooser.choose(0, scores) == tokenizer.id(expected), bias
    favourite = scored(tokenizer, [(b"#", 3.0), (b"H", 2.0)])
    assert processor(tokenizer, ["Hello"]).choose(0, favourite) == tokenizer.id(b"#")
    shy = processor(tokenizer, ["Hello"], markup_bias=-1.5)
    assert shy.choose(0, favourite) == tokenizer.id(b"H")


def test_at_a_line_start_sixteen_text_candidates_are_weighed_then_the_inputs_own():
    """The 16 best text tokens (markup aside) are weighed with the input's own next token: an
    'H' ranked 16th is taken over 'Hello', one ranked 17th is not."""
    tokenizer = FakeTokenizer(words=(b"Hello",))
    for rank, expected in ((16, b"H"), (17, b"Hello")):
        pairs = [*fillers(rank - 1), (b"H", 5.0), (b"Hello", -1.0)]
        scores = scored(tokenizer, pairs, base=-5.0)  # markup tokens too: below them all
        assert processor(tokenizer, ["Hello"]).choose(0, scores) == tokenizer.id(expected)


def test_at_a_line_start_sixteen_markup_candidates_are_weighed():
    """Markup tokens of 49 bytes never fit (48 in a row at most): with 15 of them above it a
    '#' is the markup side's choice, with 16 there is none and the text goes on."""
    long_markup = tuple(bytes([b]) * 49 for b in b"#*-+>`|0123456789"[:16])
    tokenizer = FakeTokenizer(words=long_markup)
    for above, expected in ((15, b"#"), (16, b"H")):
        scores = scored(tokenizer, [(m, 9.0) for m in long_markup[:above]])
        scores[tokenizer.id(b"#")], scores[tokenizer.id(b"H")] = 5.0, 4.0
        assert processor(tokenizer, ["Hello"]).choose(0, scores) == tokenizer.id(expected)


def test_at_a_line_start_a_tie_goes_to_the_first_candidate():
    """Every token that goes on as the scaffold does gets the same score: the first (the
    shortest) is taken, not the input's own token weighed after them."""
    tokenizer = FakeTokenizer(words=(b"He", b"Hello"))
    chooser = processor(tokenizer, ["Hello"], scaffolds=["Hello"], scaffold_bias=1.0)
    scores = scored(tokenizer, fillers(16, 5.0))
    assert chooser.choose(0, scores) == tokenizer.id(b"H")


def test_line_start_options_sides():
    tokenizer = FakeTokenizer(words=(b"##", b"Hello"))
    vocab = vocabulary(tokenizer)
    scores = scored(tokenizer, [(b"##", 3.0), (b"#", 2.0), (b"x", 9.0), (b"H", 1.0)])
    markup, other = line_start_options(Matcher("Hello"), scores, vocab)
    assert markup == (tokenizer.id(b"##"), 3.0) and other == (tokenizer.id(b"H"), 1.0)
    scores = scored(
        tokenizer, [(b"##", -3.0), (b"#", 2.0), (b"H", -4.0), (b"Hello", -1.0)], base=-5.0
    )
    markup, other = line_start_options(Matcher("Hello"), scores, vocab)
    assert markup == (tokenizer.id(b"#"), 2.0) and other == (tokenizer.id(b"Hello"), -1.0)


def test_a_text_token_is_never_weighed_as_markup():
    """The scaffold's following tokens are weighed on their own side only: text that follows
    does not win as markup (with the markup bias)."""
    tokenizer = FakeTokenizer()
    chooser = processor(
        tokenizer, ["Tools"], markup_bias=0.2, scaffolds=["Tools"], scaffold_bias=0.5
    )
    scores = scored(tokenizer, [(b"#", 2.0), (b"T", 1.6)])  # T follows: 2.1
    assert chooser.choose(0, scores) == tokenizer.id(b"#")  # 2.0 + 0.2 beats 2.1


def test_a_line_start_is_where_a_block_may_begin():
    """Not mid-line, not once the input is used up, not after 16 bytes without text."""
    assert at_line_start(Matcher("Hello"))
    matcher = Matcher("Hello")
    matcher.feed(b"He")
    assert not at_line_start(matcher)
    matcher.feed(b"llo\n")
    assert matcher.done and not at_line_start(matcher)
    fifteen = Matcher("Hello")
    fifteen.feed(b"-" * 14 + b"\n")
    assert fifteen.line == b"" and at_line_start(fifteen)
    sixteen = Matcher("Hello")
    sixteen.feed(b"-" * 15 + b"\n")
    assert sixteen.line == b"" and not at_line_start(sixteen)
    after_text = Matcher("Hi there")
    after_text.feed(b"Hi\n")
    assert at_line_start(after_text)


# --- the scaffold bias ----------------------------------------------------------------------


def test_the_scaffold_bias_makes_its_markup_win_only_when_large_enough():
    tokenizer = FakeTokenizer(words=(b"# ",))
    scores = scored(tokenizer, [(b"#", 1.0), (b"T", 2.0)])
    for bias, expected in ((0.0, b"T"), (1.0, b"T"), (1.5, b"#")):
        chooser = processor(tokenizer, ["Tools"], scaffolds=["# Tools"], scaffold_bias=bias)
        assert chooser.choose(0, scores) == tokenizer.id(expected), bias
    before = scores.clone()
    processor(tokenizer, ["Tools"], scaffolds=["# Tools"], scaffold_bias=1.5).choose(0, scores)
    assert torch.equal(scores, before)  # the caller's logits are left as they were


def test_inside_a_line_the_inline_bias_weighs_a_code_span_the_block_bias_a_line_break():
    """Mid-line, a departure that keeps to the line (a backtick) needs the model to beat
    the follower plus the scaffold bias; one that breaks the line, plus the block bias."""
    tokenizer = FakeTokenizer()

    def choice(scores, **biases) -> bytes:
        chooser = processor(tokenizer, ["Use foo now"], scaffolds=["Use foo now"], **biases)
        assert chooser.matchers[0].feed(b"Use ") and not at_line_start(chooser.matchers[0])
        return token_bytes(tokenizer)[chooser.choose(0, scores)]

    span = scored(tokenizer, [(b"`", 2.0), (b"f", 1.0)])  # f follows
    assert choice(span, scaffold_bias=0.5, block_bias=8.0) == b"`"  # 1.5 < 2
    assert choice(span, scaffold_bias=1.5, block_bias=0.0) == b"f"  # 2.5 > 2
    line_break = scored(tokenizer, [(b"\n", 2.0), (b"f", 1.0)])
    assert choice(line_break, scaffold_bias=0.5, block_bias=8.0) == b"f"  # 9 > 2
    assert choice(line_break, scaffold_bias=1.5, block_bias=0.5) == b"\n"  # 1.5 < 2
    assert choice(line_break, scaffold_bias=0.5) == b"\n"  # one bias for both: 1.5 < 2
    assert choice(line_break, scaffold_bias=1.5) == b"f"


def test_where_a_blocks_kind_is_decided_the_block_bias_alone_weighs():
    """At a line start, and where the scaffold breaks the line, the follower gets the block
    bias whatever the inline one."""
    tokenizer = FakeTokenizer()
    markup = scored(tokenizer, [(b"#", 2.0), (b"T", 1.0)])  # T follows "Tools"
    for inline, block, expected in ((5.0, 0.5, b"#"), (-5.0, 1.5, b"T")):
        chooser = processor(
            tokenizer, ["Tools"], scaffolds=["Tools"], scaffold_bias=inline, block_bias=block
        )
        assert chooser.choose(0, markup) == tokenizer.id(expected), (inline, block)
    join = scored(tokenizer, [(b" ", 2.0), (b"\n", 1.0)])  # the scaffold breaks the line
    for inline, block, expected in ((5.0, 0.5, b" "), (-5.0, 1.5, b"\n")):
        chooser = processor(
            tokenizer, ["Tools saws"], scaffolds=["Tools\n\n- saws"], scaffold_bias=inline,
            block_bias=block,
        )  # fmt: skip
        assert chooser.matchers[0].feed(b"Tools")
        assert chooser.choose(0, join) == tokenizer.id(expected), (inline, block)


def test_a_following_token_beyond_the_models_width_is_left_out():
    """The tokenizer may know more tokens than the model scores: those are not biased."""
    tokenizer = FakeTokenizer(words=(b"# ",))
    width = tokenizer.id(b"# ")  # the logits stop just before it
    chooser = processor(tokenizer, ["Tools"], scaffolds=["# Tools"], scaffold_bias=1.5)
    assert chooser.follow_ids(0, width) == [tokenizer.id(b"#")]
    assert chooser.follow_ids(0, width + 1) == [tokenizer.id(b"#"), tokenizer.id(b"# ")]
    scores = scored(tokenizer, [(b"#", 1.0), (b"T", 2.0)], width=width)
    assert chooser.choose(0, scores) == tokenizer.id(b"#")


def test_a_following_token_below_the_eight_best_is_still_weighed():
    """Mid-line, the scaffold's next token is tried after the model's 8 best, before the
    fallback; without a scaffold bias it is not."""
    tokenizer = FakeTokenizer(words=(b" here",))
    scores = scored(tokenizer, fillers(8))
    for bias, expected, fallbacks in ((1.0, b"*", 0), (0.0, b" here", 1)):
        chooser = processor(
            tokenizer, ["Tools here"], scaffolds=["Tools *here*"], scaffold_bias=bias
        )
        chooser.matchers[0].feed(b"Tools ")
        assert chooser.choose(0, scores) == tokenizer.id(expected)
        assert chooser.fallbacks == fallbacks


def test_once_the_scaffold_is_used_up_its_end_of_turn_follows():
    """After the last word, the scaffold goes on with the end of the turn (any stop token):
    a model that would rather add markup stops, given the bias."""
    tokenizer = FakeTokenizer()
    scores = scored(tokenizer, [(b"#", 2.0)]) + logits(tokenizer, EOS=1.5, END=1.0)
    for bias, expected in ((0.0, ord("#")), (1.0, EOS)):
        chooser = processor(tokenizer, ["Tools"], scaffolds=["# Tools\n"], scaffold_bias=bias)
        assert chooser.matchers[0].feed(b"# Tools")
        assert chooser.follow_ids(0, len(tokenizer)) == [EOS, END]
        assert chooser.choose(0, scores) == expected


def test_an_ended_row_follows_nothing():
    tokenizer = FakeTokenizer()
    chooser = processor(tokenizer, ["Tools"], scaffolds=["# Tools"], scaffold_bias=5.0)
    chooser.take(0, EOS)
    scores = scored(tokenizer, [(b"x", 3.0), (b"#", 1.0)])
    assert chooser.choose(0, scores) == tokenizer.id(b"x")  # no line start, no bias: top


def test_biased():
    scores = torch.tensor([1.0, 2.0, 3.0])
    assert biased(scores, [], 5.0) is scores and biased(scores, [1], 0.0) is scores
    moved = biased(scores, [0, 2], 0.5)
    assert moved.tolist() == [1.5, 2.0, 3.5] and scores.tolist() == [1.0, 2.0, 3.0]


# --- the processor over a batch -------------------------------------------------------------


def test_the_processor_forces_one_token_per_row_and_reads_only_answer_columns():
    """Each row of the batch keeps to its own input: the forced logits are 0 at the chosen
    token, -inf elsewhere. The prompt's columns (``width``) are not part of the answer."""
    tokenizer = FakeTokenizer()
    chooser = processor(tokenizer, ["Hi", "Bye"], width=3)
    h, i, b = (tokenizer.id(c) for c in (b"H", b"i", b"B"))
    prompts = torch.tensor([[5, 6, h], [5, 6, b]])  # the prompt ends with the answer's text
    scores = torch.stack([logits(tokenizer, EOS=9.0, H=1.0), logits(tokenizer, EOS=9.0, B=1.0)])
    forced = chooser(prompts, scores)
    assert forced.shape == scores.shape and forced.dtype == scores.dtype
    assert forced[0, h] == 0.0 and forced[1, b] == 0.0
    assert torch.isinf(forced).sum() == 2 * (len(tokenizer) - 1)
    assert bool((forced[torch.isinf(forced)] < 0).all())
    scores = torch.stack([logits(tokenizer, EOS=9.0, i=2.0), logits(tokenizer, EOS=9.0, y=2.0)])
    forced = chooser(torch.cat([prompts, torch.tensor([[h], [b]])], dim=1), scores)
    assert forced[0, i] == 0.0 and forced[1, tokenizer.id(b"y")] == 0.0
    assert chooser.matchers[0].line == b"H" and chooser.matchers[1].line == b"B"


def test_one_scaffold_per_input():
    with pytest.raises(ValueError, match=r"shorter|longer"):
        processor(FakeTokenizer(), ["a", "b"], scaffolds=["a"])


def test_take_moves_the_row_past_its_token_and_a_stop_ends_it():
    tokenizer = FakeTokenizer()
    chooser = processor(tokenizer, ["Hi", "Yo"])
    chooser.take(0, tokenizer.id(b"H"))
    chooser.take(0, len(tokenizer))  # a token the tokenizer does not have: nothing moves
    assert chooser.matchers[0].line == b"H" and chooser.ended == [False, False]
    chooser.take(0, END)
    chooser.take(0, tokenizer.id(b"i"))  # after the end, nothing moves
    assert chooser.ended == [True, False] and chooser.matchers[0].line == b"H"
    chooser.take(1, EOS)
    assert chooser.ended == [True, True]


def test_an_ended_row_takes_the_models_best():
    """After its end of turn a row's tokens are padding: the model's best, unchecked."""
    tokenizer = FakeTokenizer()
    chooser = processor(tokenizer, ["Hello"])
    chooser.take(0, EOS)
    scores = scored(tokenizer, [(b"x", 3.0), (b"#", 2.0), (b"H", 1.0)])
    assert chooser.choose(0, scores) == tokenizer.id(b"x") and chooser.fallbacks == 0


# --- the matcher ----------------------------------------------------------------------------


def test_markup_budget_is_exact():
    assert [markup_budget(n) for n in (0, 1, 3, 100)] == [64, 64, 65, 114]
    plain = "a b"  # 3 bytes: 64 + 1 markup bytes
    first = 47  # within one run
    rest = b"\n" + b"*" * (65 - first)  # after a line break: a new line's run
    assert Matcher(plain).fits(b"*" * first + b"a" + rest)
    assert not Matcher(plain).fits(b"*" * first + b"a" + rest + b"*")
    spaces = Matcher(plain)  # whitespace is not markup: it costs nothing of the budget
    assert spaces.fits(b"*" * 40 + b" " * 7 + b"a\n" + b"*" * 25)


@pytest.mark.parametrize("filler", [b"#", b" ", b"\n"])
def test_a_run_without_text_is_cut_at_48_bytes(filler):
    plain = "x" * 200  # a budget far above the run limit
    assert Matcher(plain).fits(filler * 48 + b"x")
    assert not Matcher(plain).fits(filler * 49)
    line = b"\n" + filler * 47  # after text, a run of 48 starts a line
    assert Matcher(plain).fits(b"x" + line + b"x" + line)  # text resets the run


def test_the_run_counts_from_the_last_text_in_the_best_state():
    """'##' read as its own text or as markup: the run is the shortest reading's."""
    matcher = Matcher("## a")
    assert matcher.feed(b"##") and matcher.run() == 0
    assert matcher.feed(b" *") and matcher.run() == 2


def test_the_cheapest_reading_of_markup_is_kept():
    """'#' that may be text or markup: whichever reading spent less of the run is the one
    kept, so a heading mark doubled as text still leaves a full run for what follows."""
    matcher = Matcher("#" + "b" * 10)
    assert matcher.feed(b"##")
    assert matcher.states[1] == (0, 1, 0)  # the second '#' is the text: run 0, one spent
    assert matcher.fits(b" " * 48 + b"b")


def test_step_keeps_the_least_run_at_each_position_whatever_the_order_of_the_states():
    """'#' is text at 0 and markup at 1: both readings reach 1, the one with no run is kept.
    (``feed`` gives the states furthest first, where the last reading kept is the least.)"""
    states = Matcher("#b").step({0: (0, 0, -1), 1: (5, 5, -1)}, b"", ord("#"))
    assert states == {1: (0, 0, 0), 0: (1, 1, -1)}


def test_a_reading_at_the_run_limit_does_not_stop_the_others():
    """'.' and '*' are text or markup: after ".*." the answer is read with '*#' of the input
    left and 1 byte of markup since, or with '**#' left and none. 47 spaces later the first
    reading is at the limit (48), the second is not, and takes a line break."""
    assert Matcher(".**#").fits(b".*." + b" " * 47 + b"\n")
    assert not Matcher(".**#").fits(b".*." + b" " * 48 + b"\n")


def test_a_code_fence_may_name_its_language():
    matcher = Matcher("print(1)")
    assert matcher.fits(b"```python\nprint(1)\n```")
    assert not Matcher("print(1)").fits(b"python")  # outside a fence, letters are text
    assert not Matcher("x").fits(b"``python")  # two backticks are no fence
    assert not Matcher("x").fits(b"```py thon")  # one word, no space
    assert Matcher("x").fits(b"```" + b"a" * 20 + b"\nx")
    assert Matcher("x").fits(b"```" + b"a" * 21)  # the 24th byte of the line
    assert not Matcher("x").fits(b"```" + b"a" * 22)
    assert not Matcher("x").fits(b"```py\nthon")  # the next line is no fence line


def test_the_answer_line_and_tail():
    matcher = Matcher("one two")
    assert matcher.feed(b"## one\n")
    assert matcher.line == b""
    assert matcher.feed(b"*tw")
    assert matcher.line == b"*tw" and matcher.tail == b"## one\n*tw"
    long = Matcher("x" * 100)
    assert long.feed(b"x" * 70) and long.tail == b"x" * 64
    assert not long.feed(b"y") and long.tail == b"x" * 64  # refused: nothing moves


def test_rest_is_the_input_after_the_furthest_text():
    matcher = Matcher("  Hi there \n")
    assert matcher.rest() == b"  Hi there \n"
    matcher.feed(b"H")
    assert matcher.rest() == b"i there \n"
    matcher.feed(b"i")
    assert matcher.rest() == b" there \n"
    matcher.feed(b" there")
    assert matcher.done and matcher.rest() == b" \n"


def test_done_only_once_every_text_byte_is_matched():
    matcher = Matcher("a b\n")
    assert not matcher.done
    matcher.feed(b"a ")
    assert not matcher.done
    matcher.feed(b"b")
    assert matcher.done
    assert Matcher("").done and Matcher(" \n").done


# --- the tokenizer's side -------------------------------------------------------------------


def test_byte_alphabet_is_gpt2s():
    alphabet = byte_alphabet()
    assert len(set(alphabet.values())) == 256 and sorted(alphabet) == list(range(256))
    assert (alphabet[ord("!")], alphabet[ord("~")], alphabet[0xA9]) == ("!", "~", "©")
    assert (alphabet[0], alphabet[32], alphabet[10], alphabet[127]) == ("Ā", "Ġ", "Ċ", "ġ")
    assert (alphabet[160], alphabet[161], alphabet[172], alphabet[173]) == ("ł", "¡", "¬", "Ń")
    assert (alphabet[174], alphabet[255]) == ("®", "ÿ")


def test_token_bytes_decodes_tokens_and_leaves_special_ones_out():
    class Tokenizer:
        all_special_ids = (3,)

        def __len__(self) -> int:
            return 5

        def get_vocab(self) -> dict[str, int]:
            return {"Ġa": 0, "ĊĊ": 1, "▁x": 2, "<s>": 3, "##": 4, "late": 5}

    assert token_bytes(Tokenizer()) == [b" a", b"\n\n", None, None, b"##"]


def test_markup_token_ids_are_block_starts_of_markup_and_space_only():
    table = [b"#", b"##", b" -", b"-based", b"```", None, b"1", b"x", b"", b"> ", b"|-|", b".5"]
    assert markup_token_ids(table) == [0, 1, 4, 6, 9, 10]


def test_the_vocabulary_is_made_once_per_tokenizer_and_masks_by_width():
    tokenizer = FakeTokenizer(words=(b"##", b"Hello"))
    vocab = vocabulary(tokenizer)
    assert vocabulary(tokenizer) is vocab and vocabulary(FakeTokenizer()) is not vocab
    assert vocab.ids[b"##"] == tokenizer.id(b"##") and vocab.ids[b"\n"] == 10
    assert vocab.longest == 5
    assert vocab.is_markup.tolist() == [i in markup_token_ids(vocab.table) for i in range(260)]
    assert vocab.is_markup.dtype == torch.bool
    narrow = vocab.markup_mask(40)
    assert narrow.tolist() == [i == ord("#") for i in range(40)]  # the only markup below 40
    wide = vocab.markup_mask(300)
    assert wide.shape == (300,) and wide[tokenizer.id(b"##")] and not wide[260:].any()
    assert vocab.markup_mask(300) is wide
    assert Vocabulary(tokenizer, [None], torch.zeros(1, dtype=torch.bool)).longest == 0


def test_own_next_reads_64_bytes_of_the_rest():
    """A token longer than that is not proposed (it is the input's own text all the same)."""
    tokenizer = FakeTokenizer(words=(b"a" * 64, b"a" * 65))
    assert vocabulary(tokenizer).own_next(Matcher("a" * 70)) == tokenizer.id(b"a" * 64)


def test_own_next_is_the_first_token_of_the_rest():
    tokenizer = FakeTokenizer(words=(b"Hello", b" world"))
    vocab = vocabulary(tokenizer)
    matcher = Matcher("Hello world \n")
    assert vocab.own_next(matcher) == tokenizer.id(b"Hello")
    matcher.feed(b"Hello")
    assert vocab.own_next(matcher) == tokenizer.id(b" world")
    matcher.feed(b" world")
    assert vocab.own_next(matcher) is None  # only whitespace is left
    cut = Matcher("a" + "é" * 40)  # the first 64 bytes end inside an 'é'
    assert vocab.own_next(cut) == tokenizer.id(b"a")
    cut.feed(b"a")
    assert vocab.own_next(cut) == 0xC3  # 'é' is two byte tokens here


def test_a_model_that_loves_markup_gets_48_at_a_line_start_and_a_few_after_text():
    tokenizer = FakeTokenizer()
    scores = scored(tokenizer, [(b"#", 9.0), (b"a", 1.0)], base=-1.0) + logits(tokenizer, EOS=1.5)
    answer = decode("a b", lambda step: scores)
    assert answer.startswith(b"#" * 48 + b"a") and b"#" * 49 not in answer
    assert text_of(answer).replace(b"#", b"") == b"ab"
    assert answer.count(b"#") == 48 + 2 * 4  # then 4 after each word (INLINE_RUN)
    lines = decode("a\nb\nc", lambda step: scores)  # each line starts a run: the budget
    assert lines.count(b"#") == 64 + len("a\nb\nc") // 2  # the whole budget, and no more
