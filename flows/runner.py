"""How the flows run: their settings, the task runner their fan-out uses, where results persist.

One piece of code for all of it, so a flow behaves the same from the CLI, as a plain call and
as a deployment run started by a worker:

- ``flow_settings``: the profile's settings with the flow's run-time overrides (``backend``).
- ``fan_out``: the task runner that ``runner.task_runner`` chooses, started for the duration
  of a ``with`` block: Prefect's thread pool, or ``DaskTaskRunner`` on a ``LocalCluster`` (or
  on the cluster at ``runner.dask_address``). Flows submit their parallel work through it, so
  changing the setting moves that work without changing any code.
- ``in_data_dir``: a task whose results persist under ``DATA/prefect/results`` whoever
  started the flow; the cross-run cache then works for scheduled runs too (the CLI also sets
  this for everything with ``config.runtime.results_in``).

>>> s = flow_settings("default", "/tmp/d", backend="openai")
>>> s.finetune.backend, str(s.data_dir)
('openai', '/tmp/d')
>>> results_dir("/tmp/d").as_posix()
'/tmp/d/prefect/results'
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from prefect import Task
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from config.settings import RunnerSettings, Settings, load_settings

Backend = Literal["local", "openai"]


def flow_settings(
    profile: str | None, data_dir: str | None, backend: Backend | None = None
) -> Settings:
    """The profile's settings; ``backend``, when given, overrides ``finetune.backend``.

    A flow takes a profile's name, not a ``Settings``: its parameters are JSON that the UI and
    deployments show and set. Its tasks are given the settings objects themselves.
    """
    settings = load_settings(profile, data_dir)
    if backend is not None:
        finetune = settings.finetune.model_copy(update={"backend": backend})
        settings = settings.model_copy(update={"finetune": finetune})
    return settings


def results_dir(data_dir: str | Path) -> Path:
    """``DATA/prefect/results``: where task results (the cross-run cache) are kept."""
    return Path(data_dir).resolve() / "prefect" / "results"


def in_data_dir(task: Task, data_dir: str | Path, **options: Any) -> Task:
    """``task`` with its results persisted under ``DATA/prefect/results`` (and ``options``)."""
    storage = results_dir(data_dir)  # a Path: a LocalFileSystem there, no block to save
    return task.with_options(result_storage=storage, persist_result=True, **options)


def make_task_runner(runner: RunnerSettings) -> TaskRunner:
    """The (not yet started) task runner that the ``runner`` settings choose."""
    if runner.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=runner.threads)
    from prefect_dask import DaskTaskRunner  # dask is imported only when it is asked for

    if runner.dask_address:
        return DaskTaskRunner(address=runner.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": runner.dask_workers,
            "threads_per_worker": runner.dask_threads_per_worker,
            "processes": True,
            "dashboard_address": None,  # no Bokeh server: nothing listens but the scheduler
        }
    )


@contextmanager
def fan_out(runner: RunnerSettings) -> Iterator[TaskRunner]:
    """Start the chosen task runner for a block; submit or map tasks with it there.

    ``runner.submit(task, parameters)`` and ``runner.map(task, parameters)`` return Prefect
    futures, as ``task.submit`` and ``task.map`` do; a LocalCluster stops with the block.
    """
    with make_task_runner(runner) as started:
        yield started


def one_machine(runner: RunnerSettings) -> bool:
    """Whether the fan-out shares this machine's cores (threads, or a LocalCluster)."""
    return runner.task_runner == "threads" or not runner.dask_address
