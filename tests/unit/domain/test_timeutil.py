"""Timestamps: parsing and formatting, including their hot-path caches (domain.timeutil)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aurora_streams.domain import timeutil
from aurora_streams.domain.timeutil import (
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    TimestampError,
    format_ms,
    parse_timestamp,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
instants = st.integers(min_value=MIN_EPOCH_MS, max_value=MAX_EPOCH_MS - 1)


def _reference(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(instants)
def test_format_matches_datetime_and_parses_back(ms: int) -> None:
    first = format_ms(ms)
    assert first == _reference(ms)
    assert format_ms(ms) == first  # from the cache
    assert parse_timestamp(first) == ms
    assert parse_timestamp(first) == ms  # from the cache


# No monkeypatching here: the compiled core (aurora_streams.native) binds its module globals.
def test_caches_stay_bounded_and_correct_after_being_emptied() -> None:
    timeutil.clear_caches()  # earlier tests have filled them
    base = 1_735_653_600_000
    n = timeutil._CACHE_MAX + 100
    for i in range(n):  # distinct whole seconds and minutes: every one is kept until full
        ms = base + i * 61_000
        assert format_ms(ms) == _reference(ms)
        assert max(len(timeutil._FORMATTED), len(timeutil._MINUTES)) <= timeutil._CACHE_MAX
    assert len(timeutil._FORMATTED) == n - timeutil._CACHE_MAX  # emptied once when full
    for i in range(n - 50, n):
        ms = base + i * 61_000
        assert format_ms(ms) == _reference(ms) and parse_timestamp(_reference(ms)) == ms


def test_the_caches_full_hold_a_few_mb() -> None:
    """Bounded in memory, not only in entries: all three full stay under 6 MB (a worker's
    RSS budget is a few hundred)."""
    import tracemalloc

    timeutil.clear_caches()
    base = 1_735_653_600_000
    tracemalloc.start()
    try:
        for i in range(timeutil._CACHE_MAX - 1):
            ms = base + i * 61_000
            parse_timestamp(format_ms(ms).replace("Z", "+10:00"))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert min(len(c) for c in (timeutil._PARSED, timeutil._FORMATTED, timeutil._MINUTES)) > 8_000
    assert held < 6 * 1024 * 1024
    timeutil.clear_caches()


def test_unique_instants_do_not_push_boundaries_out() -> None:
    # Broker timestamps are unique per message; interval boundaries repeat across a fleet.
    timeutil.clear_caches()
    boundary = 1_735_653_600_000
    format_ms(boundary)
    for i in range(1, 100):
        assert format_ms(boundary + i * 7) == _reference(boundary + i * 7)
    assert list(timeutil._FORMATTED) == [boundary]


def test_a_naive_time_is_cached_per_zone() -> None:
    text = "2025-01-15T12:00:00"
    sydney = parse_timestamp(text, naive_zone="Australia/Sydney")  # daylight saving: UTC+11
    brisbane = parse_timestamp(text, naive_zone="Australia/Brisbane")  # none: UTC+10
    assert brisbane - sydney == 3_600_000
    assert sydney == parse_timestamp("2025-01-15T01:00:00Z")
    assert parse_timestamp(text, naive_zone="Australia/Sydney") == sydney
    with pytest.raises(TimestampError) as info:
        parse_timestamp(text)  # cached for zones, still rejected without one
    assert info.value.reason == "naive_timestamp"


@pytest.mark.parametrize(
    ("wall", "reason"),
    [
        ("2025-04-06T02:30:00", "ambiguous_local_time"),  # Sydney's clocks go back at 03:00
        ("2025-10-05T02:30:00", "nonexistent_local_time"),  # ... and forward at 02:00
    ],
)
def test_a_naive_time_a_dst_change_makes_ambiguous_or_impossible_is_refused(wall: str, reason: str) -> None:
    # Before: the repeated hour's second half-hours took the first occurrence's instant and
    # were dropped as stale duplicates of the first: energy lost, nothing said.
    with pytest.raises(TimestampError) as info:
        parse_timestamp(wall, naive_zone="Australia/Sydney")
    assert info.value.reason == reason and "UTC offset" in str(info.value)


def test_naive_times_around_a_dst_change_are_read_in_their_offset() -> None:
    before = parse_timestamp("2025-04-06T01:30:00", naive_zone="Australia/Sydney")
    after = parse_timestamp("2025-04-06T03:30:00", naive_zone="Australia/Sydney")
    assert after - before == 3 * 3_600_000  # 01:30 +11:00 to 03:30 +10:00
