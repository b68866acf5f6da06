"""The errors a user fixes, not the code: an input that means nothing, or one a step needs
that is not there yet.

``pgpt`` checks a command's inputs before any flow starts and prints such an error as one line
(its message names the input and what to do), exit code 1. Raised inside a flow (a Prefect
worker, a deployment run), it is an ordinary failure with that message.
"""

from __future__ import annotations


class InputError(Exception):
    """An input the user gave or must make first is wrong; the message says which and what to
    do. pgpt prints it as one line."""


class BadInput(InputError):
    """An input given that means nothing (an empty source, a path that is not there).

    >>> str(BadInput("source '' is empty: give a URL, a feed, a folder or a file"))
    "source '' is empty: give a URL, a feed, a folder or a file"
    """


class MissingInput(InputError):
    """An input is not there yet; the message names it and what to run first.

    >>> str(MissingInput("data/jsonl/train.jsonl not found: run `pgpt export` first"))
    'data/jsonl/train.jsonl not found: run `pgpt export` first'
    """
