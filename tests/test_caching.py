"""A task's cache key follows the code of the helpers its result comes from (core/caching.py)
and the values of the settings it is given."""

from __future__ import annotations

from prefect.cache_policies import INPUTS

import core.chunks
import core.inline
import core.markdown
import tasks.clean
import tasks.clean.render
import tasks.examples
from config.settings import CleanSettings, load_settings
from core.caching import SourceOf
from core.markdown import markdown_to_plain
from tasks.evaluate import ModelSpec, Runtime


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
    assert core.chunks in source.functions


def test_cleaned_pages_follow_every_step_of_the_cleaner() -> None:
    """clean_page's own lines are a few; the records come from its steps' modules."""
    policies = tasks.clean.clean_page.cache_policy.policies
    functions = {f for p in policies if isinstance(p, SourceOf) for f in p.functions}
    assert {tasks.clean, tasks.clean.render, core.markdown, core.inline} <= functions


def inputs_key(**inputs: object) -> str | None:
    """The part of a task's cache key that its arguments make (``INPUTS``)."""
    return INPUTS.compute_key(task_ctx=None, inputs=inputs, flow_parameters={})


def test_settings_objects_are_hashed_by_their_values() -> None:
    """Tasks take the settings objects themselves: an equal object (another run, another
    process) hits the cache, a changed setting misses it."""
    settings = load_settings()
    assert inputs_key(clean=CleanSettings()) == inputs_key(clean=settings.clean)
    assert inputs_key(clean=CleanSettings(min_words=10)) != inputs_key(clean=settings.clean)
    runtime = Runtime.of(settings)
    spec = ModelSpec("local", "a-model")
    assert inputs_key(model=spec, runtime=runtime) == inputs_key(
        model=ModelSpec("local", "a-model"), runtime=Runtime.of(load_settings())
    )
    assert inputs_key(model=spec, runtime=runtime) != inputs_key(
        model=ModelSpec("local", "another-model"), runtime=runtime
    )
    # answers depend on no training hyperparameter: a new learning rate keeps them cached
    retuned = load_settings()
    retuned.finetune.learning_rate = 0.5
    assert inputs_key(runtime=Runtime.of(retuned)) == inputs_key(runtime=runtime)
