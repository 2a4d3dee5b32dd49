"""Day records: slot rules (newer version wins, in any arrival order), the encoding, windows."""

from __future__ import annotations

import random

import orjson
import pytest

from aurora_streams.domain.aggregates import DayRecord, bucket_windows

T0 = 1_735_689_600_000  # 2025-01-01T00:00Z
STEP = 300_000


def test_appends_inserts_and_newer_versions_only() -> None:
    d = DayRecord()
    assert d.apply(T0 + 2 * STEP, 1.0, 0, None, "kWh")
    assert d.apply(T0 + 1 * STEP, 2.0, 0, None, "kWh")  # out of order: inserted in place
    assert d.apply(T0 + 3 * STEP, 3.0, 0, None, "kWh")
    assert [r[0] for r in d.rows] == [T0 + STEP, T0 + 2 * STEP, T0 + 3 * STEP]
    assert not d.apply(T0 + 2 * STEP, 9.0, 0, None, "kWh")  # same version: no change
    assert d.apply(T0 + 2 * STEP, 1.5, 1, None, "kWh")  # higher revision wins
    assert not d.apply(T0 + 2 * STEP, 7.0, 0, 10**13, "kWh")  # lower revision loses whatever its updated_at
    assert d.apply(T0 + 2 * STEP, 1.6, 1, 5, "kWh")  # same revision, an updated_at beats none
    assert d.slots[T0 + 2 * STEP] == [1.6, 1, 5, 0]


def test_result_does_not_depend_on_arrival_order_and_round_trips() -> None:
    records = [(T0 + i * STEP, float(i), rev, None) for i in range(1, 60) for rev in (0, 1)]
    expected = DayRecord()
    for r in records:
        expected.apply(*r, "kWh")
    for seed in range(5):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        d = DayRecord()
        for r in shuffled:
            d.apply(*r, "kWh")
        assert d.rows == expected.rows
    again = DayRecord.from_bytes(expected.to_bytes())
    assert again.rows == expected.rows and again.unit == "kWh"
    # Sorted rows of [ts, delta, rev, upd, excluded].
    assert orjson.loads(expected.to_json())["s"][0] == [T0 + STEP, 1.0, 1, None, 0]


def test_version_2_bytes_are_columns_and_version_1_json_is_read() -> None:
    """Stored as columns (version 2): decoding copies them. Records stored as JSON before
    (version 1), four-field rows of older ones included, read the same and are written as
    version 2; what does not match its header is refused."""
    from aurora_streams.domain.aggregates import DAY_VERSION
    from aurora_streams.errors import CorruptState

    d = DayRecord(direction="consumption")
    for i in range(1, 289):
        d.apply(
            T0 + i * 300_000, None if i == 7 else 0.001 * i, i % 3, T0 if i == 9 else None, "kWh", i == 11
        )
    data = d.to_bytes()
    assert data[0] == DAY_VERSION and len(data) == 10 + 3 + 11 + 288 * 33
    again = DayRecord.from_bytes(data)
    assert again.rows == d.rows and (again.unit, again.direction) == ("kWh", "consumption")
    assert again.rows[6][1] is None and again.rows[8][3] == T0 and again.rows[10][4] == 1
    assert DayRecord.from_bytes(d.to_json()).to_bytes() == data
    old = orjson.dumps({"u": "kWh", "s": [[T0 + STEP, 1.5, 0, None], [T0 + 2 * STEP, 0.5, 1, None, 1]]})
    legacy = DayRecord.from_bytes(old)
    assert legacy.rows == [[T0 + STEP, 1.5, 0, None], [T0 + 2 * STEP, 0.5, 1, None, 1]]
    assert DayRecord.from_bytes(legacy.to_bytes()).rows == legacy.rows
    assert legacy.to_json() == old
    for bad in (b"", b"\x07" + bytes(20), data[:-1]):
        with pytest.raises(CorruptState):
            DayRecord.from_bytes(bad)


def test_a_decoded_day_holds_its_rows_as_columns() -> None:
    """An epoch holds every day record it touched: a day of 5-minute rows decoded is about
    its encoded size (10 KB), where rows of Python lists and numbers took 46 KB."""
    import tracemalloc

    d = DayRecord()
    for i in range(1, 289):
        d.apply(T0 + i * 300_000, 0.1 + 0.001 * i, 0, None, "kWh")
    data = d.to_bytes()
    tracemalloc.start()
    try:
        decoded = [DayRecord.from_bytes(data) for _ in range(20)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded[0].rows == d.rows
    assert held / 20 < 12 * 1024


def test_between_and_windows() -> None:
    d = DayRecord()
    for i in range(1, 13):  # an hour of 5-minute readings
        d.apply(T0 + i * STEP, 1.0 if i != 4 else None, 0, None, "kWh")
    assert [r[0] for r in d.between(T0, T0 + 3 * STEP)] == [T0 + STEP, T0 + 2 * STEP, T0 + 3 * STEP]
    buckets = bucket_windows([d], 900_000, T0, T0 + 3_600_000)
    # Period-ending: 00:05, 00:10, 00:15 are the first 15-minute window.
    assert [(b.start - T0, b.count, b.sum) for b in buckets] == [
        (0, 3, 3.0),
        (900_000, 2, 2.0),  # the reading without a delta is not counted
        (1_800_000, 3, 3.0),
        (2_700_000, 3, 3.0),
    ]


def test_unvalidated_energy_is_left_out_of_the_sum_and_reported_beside_it() -> None:
    # Before: one injected spike made the fleet's hour 9,316 kWh against its usual 74, and
    # Scenario18's flagged jumps booked 310,060 kWh into the aggregates against 260.
    d = DayRecord()
    for i in range(1, 5):
        d.apply(T0 + i * STEP, 1.0, 0, None, "kWh")
    d.apply(T0 + 5 * STEP, 9_000.0, 0, None, "kWh", excluded=True)
    [hour] = bucket_windows([d], 3_600_000, T0, T0 + 3_600_000)
    assert (hour.sum, hour.count, hour.max) == (4.0, 4, 1.0)
    assert (hour.excluded_sum, hour.excluded_count) == (9_000.0, 1)
    assert hour.to_dict()["excluded_sum"] == 9_000.0


def test_a_window_with_only_excluded_energy_is_still_listed() -> None:
    d = DayRecord()
    d.apply(T0 + STEP, 50.0, 0, None, "kWh", excluded=True)
    [b] = bucket_windows([d], 900_000, T0, T0 + 900_000)
    assert (b.sum, b.count, b.min, b.max, b.excluded_sum) == (0, 0, None, None, 50.0)


def test_rows_stored_before_the_excluded_field_count_as_validated() -> None:
    old = DayRecord.from_bytes(orjson.dumps({"u": "kWh", "s": [[T0 + STEP, 2.0, 0, None]]}))
    [b] = bucket_windows([old], 900_000, T0, T0 + 900_000)
    assert (b.sum, b.excluded_sum) == (2.0, 0.0)


def test_validated_means_no_implausible_jump_and_no_future_stamp() -> None:
    from aurora_streams.domain.aggregates import is_validated

    assert is_validated(("gap", "rollover", "negative", "estimated"))
    assert not is_validated(("suspicious_jump",)) and not is_validated(("future_timestamp",))
    assert not is_validated(("quality_unresolved",))  # NEM12 V that no 400 record resolved
