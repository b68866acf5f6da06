"""What a local model reads: the plain text, or the plain text as rules would format it.

A small model trained for half an hour on a CPU learns to copy its input long before it
learns where an author puts a heading, a list or a fence: the structure decisions are a few
tokens in hundreds. With ``finetune.scaffold: rules`` the user's text reaches the model
already formatted by the rule-based formatter (``core.rules``: general rules, no corpus in them),
and the model learns, from the author's own articles, where the author departs from them:
the rules' wrong headings removed, their missed lists added, the author's fence languages.
Copying is what the model does best, so an untrained step costs little, and every decision
it learns is the author's. The words never change: the scaffold adds markup only, and the
faithful decoder still holds the answer to the plain text.

With ``finetune.scaffold: author`` the rules are the author's own (``core.author_rules``):
the general rules corrected by a table of the author's habits, counted from the train split
in seconds before training starts and saved next to the adapter. The model then starts from
the author's usual choices and learns what a table of line contexts cannot see.

The same function prepares a conversation for training, for the calibration on the valid
split and for generation (the evaluation, ``pgpt format``, ``pgpt serve``), so the model
always reads what it was trained on; a model records its scaffold next to its adapter.

>>> text = "Tools\\n\\nUse small tools, all of them:\\n\\nhammers\\nsaws"
>>> chat = [{"role": "user", "content": text}]
>>> print(scaffolded(chat, "rules")[-1]["content"])
# Tools
<BLANKLINE>
Use small tools, all of them:
<BLANKLINE>
- hammers
- saws
>>> scaffolded(chat, "none") == chat
True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from core.chat_data import Message

Scaffold = Literal["none", "rules", "author"]
SCAFFOLDS: tuple[Scaffold, ...] = ("none", "rules", "author")
Reader = Callable[[str], str]  # plain text -> what the model reads (a fitted scaffold)


def scaffold_function(scaffold: Scaffold | Reader) -> Reader:
    """plain text -> what the model reads; a fitted scaffold (the author's rules) is itself."""
    if callable(scaffold):
        return scaffold
    if scaffold == "none":
        return lambda text: text
    if scaffold == "rules":
        from core.rules import rules_markdown  # pure Python; the rules own their module

        return rules_markdown
    if scaffold == "author":
        raise ValueError("the author's rules are counted from a train split: use fit_scaffold")
    raise ValueError(f"unknown scaffold {scaffold!r}: one of {', '.join(SCAFFOLDS)}")


def fit_scaffold(scaffold: Scaffold, pairs: Iterable[tuple[str, str]]) -> Scaffold | Reader:
    """``scaffold`` ready to read text: "author" becomes the author's rules counted from the
    (plain text, Markdown) ``pairs`` of the train split; the others need nothing (and do not
    iterate ``pairs``, which may read a file)."""
    if scaffold != "author":
        return scaffold
    from core.author_rules import AuthorRules

    return AuthorRules.fit(pairs)


def scaffold_name(scaffold: Scaffold | Reader) -> str:
    """What a model's ``decoding.json`` records of its scaffold."""
    return str(getattr(scaffold, "name", scaffold))


def load_scaffold(name: str, adapter_dir: Path) -> Scaffold | Reader:
    """The scaffold a model recorded (``scaffold_name``), read back from its adapter folder."""
    if name != "author":
        return name  # type: ignore[return-value]
    from core.author_rules import AuthorRules

    return AuthorRules.load(adapter_dir)


def recorded_scaffold(adapter_dir: Path) -> Reader:
    """plain text -> what a fine-tune reads, as its adapter folder records it (``decoding.json``,
    and the author's rules beside it); plain text itself when nothing is recorded."""
    from backends.local.calibrate import DECODING_JSON

    decoding = Path(adapter_dir) / DECODING_JSON
    found = json.loads(decoding.read_text(encoding="utf-8")) if decoding.is_file() else {}
    return scaffold_function(load_scaffold(found.get("scaffold", "none"), adapter_dir))


def scaffolded(conversation: list[Message], scaffold: Scaffold | Reader) -> list[Message]:
    """``conversation`` with its text to format (the last user message) scaffolded.

    Only the last user message changes (there may be none: nothing changes); a system
    message (with a one-shot example) and the assistant's answer (a training target) stay
    as they are.
    """
    users = [i for i, message in enumerate(conversation) if message["role"] == "user"]
    if scaffold == "none" or not users:
        return conversation
    format_text, last_user = scaffold_function(scaffold), users[-1]
    out = list(conversation)
    out[last_user] = {**out[last_user], "content": format_text(out[last_user]["content"])}
    return out
