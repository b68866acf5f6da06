"""core/caching.py: a task's cache key follows the code of the helpers its result comes from."""

from __future__ import annotations

import core.inline
import core.markdown
import tasks.clean
import tasks.clean.render
import tasks.examples
from core.caching import SourceOf
from core.markdown import markdown_to_plain


def one() -> int:
    return 1


def two() -> int:
    return 2


def test_the_key_is_the_helpers_source() -> None:
    key = SourceOf(functions=(one,)).compute_key(None, {}, {})
    assert key == SourceOf(functions=(one,)).compute_key(None, {}, {})
    assert key != SourceOf(functions=(two,)).compute_key(None, {}, {})
    assert key != SourceOf(functions=(one, two)).compute_key(None, {}, {})
    assert SourceOf(functions=(len,)).compute_key(None, {}, {})  # a builtin has no source


def test_examples_follow_the_plain_text_and_the_chunking_code() -> None:
    """Examples hold markdown_to_plain's output: a change to it (or to the chunker, outside
    the task's own lines) must not return examples cached from the old code."""
    policies = tasks.examples.build_examples.cache_policy.policies
    (source,) = [p for p in policies if isinstance(p, SourceOf)]
    assert markdown_to_plain in source.functions and tasks.examples in source.functions


def test_cleaned_pages_follow_every_step_of_the_cleaner() -> None:
    """clean_page's own lines are a few; the records come from its steps' modules."""
    policies = tasks.clean.clean_page.cache_policy.policies
    functions = {f for p in policies if isinstance(p, SourceOf) for f in p.functions}
    assert {tasks.clean, tasks.clean.render, core.markdown, core.inline} <= functions
