"""Ending the worker process when going on would lose input.

A checkpoint that cannot be stored (the broker refused a record, a store failed) must stop
the worker *without a commit*: going on would let later batches advance the device states
past the failed messages, whose re-delivery the replay fence would then drop. A graceful
stop is no use here: Faust's stop commits the acknowledged offsets and waits on the very
tasks that failed. So the process ends at once with an exit code an orchestrator can act
on, and a restart re-delivers from the last committed offset.
"""

from __future__ import annotations

import logging
import os
from typing import Final, NoReturn

from aurora_streams.errors import LogReset

__all__ = ["EX_CONFIG", "EX_SOFTWARE", "exit_code", "stop_without_commit"]

log = logging.getLogger(__name__)

EX_SOFTWARE: Final = 70
"""A checkpoint failed: the orchestrator (or the operator) restarts the worker."""
EX_CONFIG: Final = 78
"""The raw log was reset and ``AURORA_ON_LOG_RESET=refuse``: the operator decides."""


def exit_code(exc: BaseException) -> int:
    return EX_CONFIG if isinstance(exc, LogReset) else EX_SOFTWARE


def stop_without_commit(exc: BaseException) -> NoReturn:
    """Log ``exc`` and end the process now (:func:`exit_code`), committing nothing."""
    if isinstance(exc, LogReset):
        log.critical("%s", exc)
    else:
        log.critical("batch failed, stopping the worker so it is re-delivered: %r", exc, exc_info=exc)
    logging.shutdown()
    os._exit(exit_code(exc))
