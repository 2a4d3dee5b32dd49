"""Exit codes of a worker that stops without a commit (the integration tests see the
process end: ``test_failed_batch.py`` with 70, ``test_log_reset.py`` with 78)."""

from __future__ import annotations

from aurora_streams.errors import DeliveryFailed, LogReset
from aurora_streams.lifecycle import EX_CONFIG, EX_SOFTWARE, exit_code


def test_a_refused_log_reset_is_the_operators_call_and_anything_else_a_restart() -> None:
    assert exit_code(LogReset(0, 10, 99, 5)) == EX_CONFIG == 78
    assert exit_code(DeliveryFailed("1 records not delivered")) == EX_SOFTWARE == 70
    assert exit_code(RuntimeError("store failed")) == EX_SOFTWARE
