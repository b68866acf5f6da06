"""The errors a user fixes, not the code: an input a step needs is not there yet.

``pgpt`` checks a command's inputs before any flow starts and prints such an error as one line
(its message names the input and the command that makes it), exit code 1. Raised inside a
flow (a Prefect worker, a deployment run), it is an ordinary failure with that message.
"""

from __future__ import annotations


class MissingInput(Exception):
    """An input is not there yet; the message names it and what to run first.

    >>> str(MissingInput("data/jsonl/train.jsonl not found: run `pgpt export` first"))
    'data/jsonl/train.jsonl not found: run `pgpt export` first'
    """
