"""The logger to write to: Prefect's run logger inside a flow or task run (its lines reach the
Prefect UI with the run), else the module's own logger (a script, a test, a subprocess).

Prefect is imported when the logger is asked for, not when this module is: the trainer
subprocess and the server import their modules without it.

>>> run_logger("pgpt.example").name  # outside any run
'pgpt.example'
"""

from __future__ import annotations

import logging


def run_logger(name: str) -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run, else the logger called ``name``."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)
