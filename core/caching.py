"""A cache key part for Prefect tasks: the source of the helpers a task's result depends on.

``INPUTS + TASK_SOURCE`` keys a task by its arguments and its own code only; a task whose
result is made by a helper elsewhere (examples by :func:`core.markdown.markdown_to_plain`) would
keep returning results of the helper's old code. Adding ``SourceOf(functions=(helper,))`` to its
policy makes a change to any of those helpers a new key.

>>> from prefect.cache_policies import INPUTS, TASK_SOURCE
>>> policy = INPUTS + TASK_SOURCE + SourceOf(functions=(len,))
>>> type(policy).__name__
'CompoundCachePolicy'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.utilities.hashing import hash_objects


@dataclass(kw_only=True)  # CachePolicy's own fields come first
class SourceOf(CachePolicy):
    """The hash of the source code of ``functions`` (or modules; their compiled code where
    there is no source)."""

    functions: tuple[Callable[..., Any] | ModuleType, ...] = ()

    def compute_key(self, task_ctx: Any, inputs: Any, flow_parameters: Any, **kwargs: Any) -> str:
        sources = []
        for function in self.functions:
            try:
                sources.append(inspect.getsource(function))
            except (OSError, TypeError):  # a builtin, or code without a file
                sources.append(repr(getattr(function, "__code__", function)))
        return hash_objects(*sources, raise_on_failure=True)
