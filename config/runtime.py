"""Where Prefect keeps task results: under the data dir, so caches follow the data.

>>> from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
>>> with results_in("/tmp/d"):
...     print(PREFECT_LOCAL_STORAGE_PATH.value())
/tmp/d/prefect/results
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.settings import (
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_RESULTS_PERSIST_BY_DEFAULT,
    temporary_settings,
)


@contextmanager
def results_in(data_dir: str | Path) -> Iterator[None]:
    """Persist task results (the cross-run cache) under ``DATA/prefect/results``."""
    path = Path(data_dir).resolve() / "prefect" / "results"
    with temporary_settings(
        {PREFECT_LOCAL_STORAGE_PATH: path, PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}
    ):
        yield


def running(pid: int) -> bool:
    """Whether process ``pid`` of this machine runs (someone else's counts).

    >>> running(os.getpid())
    True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
