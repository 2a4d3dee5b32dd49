"""Stall detection (aurora_streams.progress): pure, fed offsets and times."""

from __future__ import annotations

from aurora_streams.progress import StallDetector


def test_lag_without_progress_for_the_threshold_is_a_stall_and_progress_ends_it() -> None:
    d = StallDetector(60)
    assert d.observe(0, {0: 100, 1: 50}, {0: 90, 1: 50}) == []
    assert d.observe(59, {0: 200, 1: 50}, {0: 90, 1: 50}) == []
    [stall] = d.observe(61, {0: 300, 1: 50}, {0: 90, 1: 50})
    assert (stall.partition, stall.lag, stall.idle_s) == (0, 210, 61)
    assert "no progress on raw partitions 0 (lag 210" in d.describe()
    assert d.observe(70, {0: 300, 1: 50}, {0: 95, 1: 50}) == []  # the committed offset moved
    assert d.describe() == "progressing"


def test_an_idle_partition_with_no_lag_is_never_stalled() -> None:
    d = StallDetector(10)
    for t in range(0, 1000, 5):
        assert d.observe(t, {0: 42}, {0: 42}) == []


def test_a_partition_that_never_committed_and_has_input_stalls() -> None:
    # The broker says 798 messages; the worker committed nothing (the retention case in
    # DESIGN.md: records deleted unread looked like this, and /readyz said ready).
    d = StallDetector(30)
    d.observe(0, {2: 798}, {})
    [stall] = d.observe(31, {2: 798}, {})
    assert (stall.partition, stall.lag) == (2, 798)


def test_a_revoked_partition_is_forgotten_and_a_new_one_starts_its_clock() -> None:
    d = StallDetector(10)
    d.observe(0, {0: 10}, {0: 5})
    assert d.observe(11, {0: 10}, {0: 5}) != []
    assert d.observe(12, {1: 10}, {1: 5}) == []
    assert d.observe(21, {1: 10}, {1: 5}) == []
    assert d.observe(23, {1: 10}, {1: 5}) != []
