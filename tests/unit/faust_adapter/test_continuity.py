"""The raw topic's offsets are contiguous: a fetch that skips ahead is refused and its
partition sought again, unless the same jump is seen twice (the log lost those records)."""

from __future__ import annotations

import logging

import pytest
from faust.types import TP

from aurora_streams.faust_adapter import RawContinuity

RAW = TP("meter.readings.raw", 3)


def test_the_next_offset_and_the_offset_sought_are_delivered() -> None:
    c = RawContinuity()
    assert c.resume_at(RAW, last_read=10, offset=11) is None
    c.delivered(RAW)
    c.sought(RAW, 11763)  # after a seek, the read offset is the next one to read
    assert c.resume_at(RAW, last_read=11763, offset=11763) is None


def test_a_fetch_from_a_stale_position_is_sought_back() -> None:
    # What the owner-change soak saw: sought again to 11763, the next fetch began at 12757.
    c = RawContinuity()
    c.sought(RAW, 11763)
    assert c.resume_at(RAW, last_read=11763, offset=12757) == 11763
    c.sought(RAW, 11763)
    assert c.resume_at(RAW, last_read=11763, offset=11763) is None
    c.delivered(RAW)
    # Later, a skip past the record after the last delivered one.
    assert c.resume_at(RAW, last_read=11763, offset=11800) == 11764


def test_a_jump_seen_twice_from_the_same_offset_is_let_through_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = RawContinuity()
    c.sought(RAW, 100)
    assert c.resume_at(RAW, last_read=100, offset=5000) == 100
    c.sought(RAW, 100)  # retention removed 100-4999: the log starts at 5000
    with caplog.at_level(logging.WARNING):
        assert c.resume_at(RAW, last_read=100, offset=5000) is None
    assert "offsets 100-4999 are not in the log" in caplog.text
