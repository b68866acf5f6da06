"""The markup bias: chosen on the valid split (backends/local/calibrate.py), used by the decoder.

``choose_bias`` is checked on hand-made margins with exact values; the margins themselves on
the tiny model, against the faithful decoder they stand for: a line start whose margin plus
the bias is positive is one where the decoder writes markup.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
from rapidfuzz.distance import Levenshtein
from test_local_model import chat, prompt_ids

from backends.local import calibrate as calibrate_module
from backends.local import faithful as faithful_module
from backends.local import follow as follow_module
from backends.local.calibrate import Biases, answer_margins, calibrate, choose_bias
from backends.local.decode import decode
from backends.local.faithful import BLOCK_START, FaithfulProcessor, markup_token_ids, vocabulary
from backends.local.generate import generate, stop_token_ids
from backends.local.model import load_model
from core.markdown import markdown_to_plain

PLAIN = "Title\nSome text here, with words.\none\ntwo\nThe end of it."
ANSWER = "## Title\n\nSome text here, with words.\n\n- one\n- two\n\nThe end of it."


@pytest.fixture(scope="module")
def tiny(tiny_model: Path):
    return load_model(tiny_model, threads=1)


def test_module_doctests() -> None:
    for module in (calibrate_module, faithful_module, follow_module):
        assert doctest.testmod(module).failed == 0


def test_choose_bias_takes_the_middle_of_the_best_interval() -> None:
    # at 0: two of three line starts with markup are taken and one without: F1 2*2/(3+3)
    margins = [(1.5, True), (0.5, False), (0.25, True), (-0.5, True), (-2.5, False)]
    # taking the one below 0 too (b in (0.5, 2.5]) finds all three, with the one false: 6/7
    assert choose_bias(margins) == (1.5, 0.6667, 0.8571)
    # a timid model: the author's markup all scores below the text, by 3 to 4 logits
    timid = [(-3.0, True), (-4.0, True), (-6.0, False), (-7.0, False)]
    assert choose_bias(timid) == (5.0, 0.0, 1.0)  # b in (4, 6]: its middle
    assert choose_bias([(-1.0, False)]) == (0.0, 0.0, 0.0)  # nothing to find: no bias
    assert choose_bias([(-30.0, True), (-40.0, False)]) == (0.0, 0.0, 0.0)  # out of reach


def test_choose_bias_keeps_an_uninformed_model_at_zero() -> None:
    # the one line start with markup ranks second: F1 would take two (2/3), with one wrong;
    # taking none is also one wrong, and nearer 0
    assert choose_bias([(-1.0, False), (-2.0, True), (-3.0, False), (-4.0, False)]) == (
        0.0,
        0.0,
        0.0,
    )


def test_choose_bias_prefers_zero_on_a_tie() -> None:
    # F1 1 for any b in (-1, 2]: 0 is inside, so the model is left as it is
    assert choose_bias([(1.0, True), (-2.0, False)]) == (0.0, 1.0, 1.0)


def test_markup_tokens_are_markup_only_and_start_a_block(tiny) -> None:
    _, tokenizer = tiny
    table = vocabulary(tokenizer).table
    ids = markup_token_ids(table)
    assert ids and all(table[i][0] in BLOCK_START for i in ids)
    words = {data for data in table if data and data.isalpha()}
    assert not words & {table[i] for i in ids}
    for text in ("#", "-", "`"):
        [token] = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert token in ids


def test_the_bias_decides_whether_lines_start_with_markup(tiny) -> None:
    model, tokenizer = tiny

    def line_starts(bias: float) -> list[str]:
        [answer] = generate(model, tokenizer, [chat(PLAIN)], faithful=True, markup_bias=bias)
        return [line[:1] for line in answer.split("\n") if line]

    eager = [c.encode()[0] in BLOCK_START for c in line_starts(100.0)]
    shy = [c.encode()[0] in BLOCK_START for c in line_starts(-100.0)]
    # (a line start after LINE_START_RUN bytes of markup in a row is not weighed as one)
    assert sum(eager) / len(eager) > 0.5 > 0.25 > sum(shy) / len(shy)
    model.markup_bias = 100.0  # the model's own bias is the default
    try:
        assert line_starts(None) == line_starts(100.0)  # type: ignore[arg-type]
    finally:
        del model.markup_bias


@pytest.mark.parametrize("read, scaffold_bias", [(PLAIN, None), (ANSWER, 2.0)])
def test_margins_stand_for_the_decoders_choice(tiny, read: str, scaffold_bias) -> None:
    """Teacher-forced on the decoder's own tokens, each margin's sign is the choice it made
    (with a scaffold bias too: the line starts are weighed with it, as the decoder does)."""
    model, tokenizer = tiny
    stops = stop_token_ids(tokenizer)
    prompt = prompt_ids(tokenizer, chat(read))
    source = tokenizer(read, add_special_tokens=False)["input_ids"]
    for bias in (0.0, 1.0, -1.0):
        chooser = FaithfulProcessor(
            tokenizer, [PLAIN], stops, 0, bias, [read], scaffold_bias or 0.0
        )
        [(tokens, _)] = decode(model, [prompt], [source], [120], chooser, stops=stops, pad_id=0)
        _, margins = answer_margins(
            model, vocabulary(tokenizer), prompt, tokens, PLAIN, read, scaffold_bias
        )
        assert len(margins) > 5 and len({markup for _, markup in margins}) == 2
        assert all((margin + bias > 0) == markup for margin, markup in margins)


def test_calibrate_counts_the_valid_line_starts(tmp_path: Path, tiny) -> None:
    model, tokenizer = tiny
    valid = tmp_path / "valid.jsonl"
    example = {"messages": [*chat(PLAIN), _assistant(ANSWER)]}
    valid.write_text(json.dumps(example) + "\n" + json.dumps(example) + "\n")
    found = calibrate(model, tokenizer, valid)
    # line starts: the answer's start, then after each of its 7 newlines; markup at 3 of them
    assert found["valid_examples"] == 2
    assert (found["line_starts"], found["with_markup"]) == (16, 6)
    assert abs(found["markup_bias"]) <= 8.0
    assert calibrate(model, tokenizer, None)["markup_bias"] == 0.0


def _assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def test_the_answer_ends_soon_after_the_input_is_used_up(tiny) -> None:
    """Once every input word is written, a few bytes may close a fence or a table row; then
    the end of the turn is forced, however much the model wants to go on with markup."""
    import torch

    _, tokenizer = tiny
    stops = stop_token_ids(tokenizer)
    chooser = FaithfulProcessor(tokenizer, [PLAIN], stops, 0)
    for token_id in tokenizer(PLAIN, add_special_tokens=False)["input_ids"]:
        chooser.take(0, token_id)
    assert chooser.matchers[0].done
    dash = tokenizer("-", add_special_tokens=False)["input_ids"][0]
    scores = torch.zeros(len(chooser.table))
    scores[dash], scores[stops] = 10.0, -10.0  # markup first, the end last
    chosen = []
    while (token_id := chooser.choose(0, scores)) not in stops and len(chosen) < 100:
        chosen.append(token_id)
        chooser.take(0, token_id)
    # on the line of the last word: 4 of them (INLINE_RUN, fewer than END_RUN's 8)
    assert chosen == [dash] * 4


# --- the scaffold bias: how readily the decoder departs from what the model read --------------


def _read_as_answer(text: str) -> str:
    """A scaffold that reads PLAIN (or the answer's own plain text) as the author's answer."""
    assert text in (PLAIN, markdown_to_plain(ANSWER))
    return ANSWER


def test_the_scaffold_bias_holds_the_answer_to_what_the_model_read(tiny) -> None:
    model, tokenizer = tiny

    def answer(bias: float | None, **options) -> str:
        [out] = generate(
            model, tokenizer, [chat(PLAIN)], faithful=True, scaffold=_read_as_answer,
            scaffold_bias=bias, **options,
        )  # fmt: skip
        return out

    assert answer(100.0) == ANSWER  # every token follows the scaffold
    alone = answer(0.0)
    assert alone != ANSWER  # the tiny model alone departs from it
    assert answer(100.0, draft_tokens=0) == ANSWER  # one token a pass decodes alike
    assert answer(1.5) == answer(1.5, draft_tokens=0)
    model.scaffold_bias = 100.0  # the model's own bias is the default
    try:
        assert answer(None) == ANSWER
    finally:
        del model.scaffold_bias
    assert answer(None) == alone


def test_follow_margins_stand_for_the_decoders_choice(tiny) -> None:
    """Teacher-forced on the decoder's own tokens, a follow margin plus its kind's bias
    (inside a line, or where a block's kind is decided) is positive exactly where the
    decoder followed its scaffold."""
    model, tokenizer = tiny
    stops = stop_token_ids(tokenizer)
    prompt = prompt_ids(tokenizer, chat(ANSWER))  # the model reads the scaffold
    source = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    weighed: dict[str, list[bool]] = {"block": [], "inline": []}  # (the tiny model's own top
    # tokens seldom fit: few are weighed)
    for inline, block in ((0.0, 0.0), (1.5, 1.5), (-1.5, -1.5), (4.0, 4.0), (-1.5, 4.0)):
        chooser = FaithfulProcessor(tokenizer, [PLAIN], stops, 0, 0.0, [ANSWER], inline, block)
        [(tokens, _)] = decode(model, [prompt], [source], [120], chooser, stops=stops, pad_id=0)
        follows, _ = answer_margins(model, vocabulary(tokenizer), prompt, tokens, PLAIN, ANSWER)
        for kind, bias in (("inline", inline), ("block", block)):
            weighed[kind] += [followed for _, followed in follows[kind]]
            assert all((margin + bias > 0) == followed for margin, followed in follows[kind])
    for kind in ("block", "inline"):
        assert len(weighed[kind]) > 5 and set(weighed[kind]) == {True, False}, kind


def test_calibrate_chooses_the_scaffold_bias_from_the_authors_departures(
    tmp_path: Path, tiny
) -> None:
    model, tokenizer = tiny
    valid = tmp_path / "valid.jsonl"
    example = {"messages": [*chat(PLAIN), _assistant(ANSWER)]}
    valid.write_text(json.dumps(example) + "\n")
    # the author writes what the model reads: every departure of the model's is wrong
    found = calibrate(model, tokenizer, valid, _read_as_answer)
    assert found["tokens_weighed"] > 5 and found["author_departures"] == 0
    assert found["model_departures"] > 0
    assert found["scaffold_bias"] > 0

    def distance(bias: float) -> int:
        [out] = generate(
            model, tokenizer, [chat(PLAIN)], faithful=True, scaffold=_read_as_answer,
            scaffold_bias=bias, markup_bias=found["markup_bias"],
        )  # fmt: skip
        return Levenshtein.distance(out, ANSWER)

    assert distance(found["scaffold_bias"]) < distance(0.0)
    # decoded, the tiny model's answer is further from the author's than its scaffold (the
    # author's answer itself): its departures do not pay, and it follows the scaffold
    exact = {"messages": [*chat(markdown_to_plain(ANSWER)), _assistant(ANSWER)]}
    valid.write_text(json.dumps(exact) + "\n")
    seen: list[tuple[int, int, str]] = []
    checked = calibrate(
        model, tokenizer, valid, _read_as_answer, check=1,
        progress=lambda done, total, what: seen.append((done, total, what)),
    )  # fmt: skip
    assert seen == [(1, 1, "departing as chosen"), (1, 1, "inside lines only")]
    departing, inline_only = checked["checked"]  # as chosen, then with blocks held
    assert departing["scaffold_cer"] == 0.0 < departing["model_cer"]
    assert 0 < departing["scaffold_bias"] < calibrate_module.MAX_BIAS
    assert departing["block_bias"] < calibrate_module.MAX_BIAS
    assert (inline_only["scaffold_bias"], inline_only["scaffold_cer"]) == (
        departing["scaffold_bias"], 0.0,
    )  # fmt: skip
    assert inline_only["block_bias"] == calibrate_module.MAX_BIAS
    assert checked["scaffold_bias"] == checked["block_bias"] == calibrate_module.MAX_BIAS
    # read as the plain text itself, there is nothing to follow
    plain = calibrate(model, tokenizer, valid)
    assert (plain["scaffold_bias"], plain["tokens_weighed"]) == (0.0, 0)


def test_the_check_copies_ahead_as_a_fine_tune_decodes(tiny) -> None:
    """The check decodes with the training model, which is not marked ``fine_tuned``: it
    must copy ahead all the same (on the rust blog, one a pass took 35 s a chunk), with the
    answers decoding one token a pass gives."""
    from backends.local.calibrate import check_departures
    from core.faithful import repair
    from core.scores import cer

    model, tokenizer = tiny
    example = [*chat(markdown_to_plain(ANSWER)), _assistant(ANSWER)]
    seen: list[int] = []
    hook = model.register_forward_hook(lambda *_: seen.append(1))
    try:
        details: list[dict] = []
        [one_a_pass] = generate(
            model, tokenizer, [example[:-1]], faithful=True, scaffold=_read_as_answer,
            scaffold_bias=8.0, markup_bias=0.0, details=details, copy_ahead_rows=0,
        )  # fmt: skip
        tokens, seen[:] = details[0]["completion_tokens"], []
        held = Biases(8.0, 8.0, 0.0)
        model_cers, _ = check_departures(model, tokenizer, [example], _read_as_answer, held)
    finally:
        hook.remove()
    assert model_cers == [cer(repair(one_a_pass, markdown_to_plain(ANSWER)), ANSWER)]
    assert tokens > 10 and len(seen) < 0.8 * tokens


def test_departures_pay_only_beyond_the_noise() -> None:
    """A fine-tune leaves its scaffold only where its decoded valid answers are closer to the
    author's on the paired interval, not on a mean a hair lower: on the rust blog a model
    0.3 % better on 24 valid chunks (0.01389 against 0.01393) wrote 0.0016 worse on test."""
    from backends.local.calibrate import departures_pay

    scaffold = [0.010, 0.020, 0.030, 0.040, 0.050, 0.060]
    assert departures_pay([x - 0.005 for x in scaffold], scaffold)  # better on every chunk
    mixed = [0.000, 0.030, 0.020, 0.050, 0.040, 0.069]  # lower mean, worse on three
    assert sum(mixed) < sum(scaffold) and not departures_pay(mixed, scaffold)
    assert not departures_pay(scaffold, scaffold)  # a tie is no reason to depart


def test_the_first_try_whose_departures_pay_is_kept(tiny) -> None:
    """A try whose decoded answers beat the scaffold's is kept as it is, and no other is
    decoded: here the author writes what the tiny model writes departing freely from the
    scaffold (the author's answer). A try that would not depart at all is not decoded."""
    from backends.local.calibrate import MAX_BIAS, check_choices
    from core.faithful import repair

    model, tokenizer = tiny
    plain = markdown_to_plain(ANSWER)
    departing = Biases(-100.0, -100.0, 0.0)
    [answer] = generate(
        model, tokenizer, [chat(plain)], faithful=True, scaffold=_read_as_answer,
        scaffold_bias=-100.0, block_bias=-100.0, markup_bias=0.0, batch_size=1,
        copy_ahead_rows=1,
    )  # fmt: skip
    reference = repair(answer, plain)
    assert reference != ANSWER  # the model departed from its scaffold
    example = [*chat(plain), _assistant(reference)]
    checked, kept = check_choices(model, tokenizer, [example], _read_as_answer, departing)
    assert kept == departing and len(checked) == 1
    assert checked[0]["model_cer"] == 0.0 < checked[0]["scaffold_cer"]
    held = Biases(MAX_BIAS, MAX_BIAS, 0.0)
    assert check_choices(model, tokenizer, [example], _read_as_answer, held) == ([], held)
