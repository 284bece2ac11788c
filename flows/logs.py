"""The logger a step writes to: the Prefect run's, or loopline's own when the CLI calls it.

The command line calls the flows' task functions directly (`task.fn()`), outside any
Prefect run, so both paths run the same code and leave the same state.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from loopline import progress


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger in a flow or task run; loopline's own when the CLI calls a step."""
    try:
        return get_run_logger()
    except MissingContextError:
        return progress.logger
