"""Day records: slot rules (newer version wins, in any arrival order), the encoding, windows."""

from __future__ import annotations

import random

import orjson

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
    assert d.slots[T0 + 2 * STEP] == [1.6, 1, 5]


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
    # The encoding is the one stored before rows were kept as rows: sorted [ts, delta, rev, upd].
    assert orjson.loads(expected.to_bytes())["s"][0] == [T0 + STEP, 1.0, 1, None]


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
