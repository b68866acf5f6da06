"""What a local model reads: the plain text, or the plain text as the rules would format it.

A small model trained for half an hour on a CPU learns to copy its input long before it
learns where an author puts a heading, a list or a fence: the structure decisions are a few
tokens in hundreds. With ``finetune.scaffold: rules`` the user's text reaches the model
already formatted by the rule-based formatter (``tasks.rules``: general rules, no corpus in them),
and the model learns, from the author's own articles, where the author departs from them:
the rules' wrong headings removed, their missed lists added, the author's fence languages.
Copying is what the model does best, so an untrained step costs little, and every decision
it learns is the author's. The words never change: the scaffold adds markup only, and the
faithful decoder still holds the answer to the plain text.

The same function prepares a conversation for training, for the calibration on the valid
split and for generation (the evaluation, ``pgpt format``, ``pgpt serve``), so the model
always reads what it was trained on; a model records its scaffold next to its adapter.

>>> chat = [{"role": "user", "content": "Tools\\nUse small tools, all of them:\\nhammers\\nsaws"}]
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

from collections.abc import Callable
from typing import Literal

Scaffold = Literal["none", "rules"]
SCAFFOLDS: tuple[Scaffold, ...] = ("none", "rules")


def scaffold_function(scaffold: Scaffold) -> Callable[[str], str]:
    """plain text -> what the model reads."""
    if scaffold == "none":
        return lambda text: text
    if scaffold == "rules":
        from tasks.rules import rules_markdown  # pure Python; the rules own their module

        return rules_markdown
    raise ValueError(f"unknown scaffold {scaffold!r}: one of {', '.join(SCAFFOLDS)}")


def scaffolded(conversation: list[dict], scaffold: Scaffold) -> list[dict]:
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
