"""Fleet summaries kept by differences equal the summaries computed from scratch, whatever
the order of writes, replays and deletions."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from aurora_streams.domain.aggregates import SIZES, DayRecord, bucket_windows
from aurora_streams.domain.fleet import (
    DayBefore,
    DayTotals,
    DeviceCounts,
    OpenAnomalies,
    RecentAnomalies,
    anomaly_key,
    apply_anomaly,
    contribution_change,
    day_change,
    day_contributions,
    open_types,
)

DAY0 = 20_089 * 86_400_000  # 2025-01-01T00:00Z
HALF_HOUR = 1_800_000


def record(
    values: list[float | None], direction: str | None = None, excluded: set[int] = frozenset()
) -> DayRecord:  # type: ignore[assignment]
    r = DayRecord()
    for i, v in enumerate(values):
        r.apply(DAY0 + (i + 1) * HALF_HOUR, v, 0, None, "kWh", i in excluded, direction)
    return r


def test_a_days_contribution_is_its_windows_by_direction() -> None:
    r = record([1.0, 2.0, None, 4.0], excluded={3})
    got = day_contributions(r, "E1")
    hour = SIZES["1h"]
    assert got[(hour, DAY0)] == [3.0, 0.0, 0.0]
    assert got[(hour, DAY0 + hour)] == [0.0, 0.0, 4.0]  # the None delta counts nothing
    assert got[(SIZES["1d"], DAY0)] == [3.0, 0.0, 4.0]
    assert day_contributions(r, "B1")[(hour, DAY0)] == [0.0, 3.0, 0.0]
    assert day_contributions(r, "11") == {}  # no direction: in no column
    declared = record([1.0], direction="generation")
    assert day_contributions(declared, "11")[(hour, DAY0)] == [0.0, 1.0, 0.0]
    assert DayRecord.from_bytes(declared.to_bytes()).direction == "generation"
    other_unit = record([1.0])
    other_unit.unit = "kvarh"
    assert day_contributions(other_unit, "E1") == {}


def _from_scratch(records: dict[str, DayRecord]) -> dict[tuple[int, int], list[float]]:
    """What the consumption view computed by scanning every record."""
    out: dict[tuple[int, int], list[float]] = {}
    for key, r in records.items():
        channel = key.split("|")[1]
        column = 0 if channel.startswith("E") else 1
        for size in SIZES.values():
            for b in bucket_windows([r], size, DAY0, DAY0 + 86_400_000):
                row = out.setdefault((size, b.start), [0.0, 0.0, 0.0, 0.0])
                row[column] += b.sum
                row[2] += 1
                row[3] += b.excluded_sum
    return out


@pytest.mark.parametrize("seed", range(20))
def test_totals_kept_by_differences_equal_the_scan(seed: int) -> None:
    rnd = random.Random(seed)
    stored: dict[str, DayRecord] = {}
    totals = DayTotals()
    for _ in range(300):
        key = f"d{rnd.randrange(8)}|{rnd.choice(['E1', 'B1'])}|0"
        old_bytes = stored[key].to_bytes() if key in stored else None
        if rnd.random() < 0.05 and old_bytes is not None:  # retention deletes the day
            old = day_contributions(DayRecord.from_bytes(old_bytes), key.split("|")[1])
            totals.add(contribution_change(old, {}))
            del stored[key]
            continue
        r = DayRecord.from_bytes(old_bytes) if old_bytes else DayRecord()
        before = DayBefore(r if old_bytes else None)
        for _ in range(rnd.randrange(1, 4)):  # new slots, revisions, replays
            ts = DAY0 + (rnd.randrange(48) + 1) * HALF_HOUR
            before.touch(r, ts)
            r.apply(ts, round(rnd.uniform(0, 3), 3), rnd.randrange(3), None, "kWh", rnd.random() < 0.1)
        totals.add(day_change(r, key.split("|")[1], before))
        stored[key] = r
        totals = DayTotals.from_bytes(totals.to_bytes())  # as stored between writes
    expected = _from_scratch(stored)
    assert totals.windows.keys() == expected.keys()
    for key, row in expected.items():
        assert totals.windows[key] == pytest.approx(row, abs=1e-9)


def _apply_some(rnd: random.Random, r: DayRecord, before: DayBefore, direction: str | None) -> None:
    """New slots, revisions, replays, slots with no delta; sometimes another unit."""
    unit = "kvarh" if rnd.random() < 0.05 else "kWh"
    for _ in range(rnd.randrange(1, 5)):
        ts = DAY0 + (rnd.randrange(48) + 1) * HALF_HOUR
        delta = None if rnd.random() < 0.15 else round(rnd.uniform(0, 3), 3)
        before.touch(r, ts)
        r.apply(ts, delta, rnd.randrange(3), None, unit, rnd.random() < 0.1, direction)


@pytest.mark.parametrize("seed", range(30))
def test_a_days_change_from_its_changed_slots_equals_the_change_of_its_whole_contribution(
    seed: int,
) -> None:
    rnd = random.Random(seed)
    channel = rnd.choice(["E1", "B1", "11"])
    r = DayRecord()
    before = DayBefore(None)
    for _ in range(12):
        old_bytes = r.to_bytes() if r.rows else None
        old = day_contributions(DayRecord.from_bytes(old_bytes) if old_bytes else None, channel)
        direction = rnd.choice([None, None, "consumption", "generation"])
        _apply_some(rnd, r, before, direction)
        got = day_change(r, channel, before)
        expected = contribution_change(old, day_contributions(r, channel))
        # A window whose sums cancel to rounding noise may be left out of one and not the other.
        for key in got.keys() | expected.keys():
            assert got.get(key, [0.0] * 4) == pytest.approx(expected.get(key, [0.0] * 4), abs=1e-9), key
        before = DayBefore(DayRecord.from_bytes(r.to_bytes()))  # the next epoch loads it


def test_device_counts_and_open_anomalies() -> None:
    counts = DeviceCounts()
    counts.replace(None, (2, 100))
    counts.replace(None, (1, None))
    counts.replace((1, None), (3, 50))  # a known device gains channels
    counts = DeviceCounts.from_bytes(counts.to_bytes())
    assert (counts.devices, counts.channels, counts.latest_ts) == (2, 5, 100)
    assert DeviceCounts.from_bytes(None).devices == 0
    events = [{"type": "spike", "cleared": False}, {"type": "gap", "cleared": True}]
    open_now = OpenAnomalies()
    open_now.replace(Counter(), open_types(events))
    open_now.replace(open_types(events), open_types([{**events[0], "cleared": True}]))
    open_now.replace(Counter(), Counter({"gap": 2}))
    assert OpenAnomalies.from_bytes(open_now.to_bytes()).by_type == Counter({"gap": 2})


def _event(rng: random.Random, t0: int) -> dict[str, object]:
    ts = t0 + rng.randrange(400) * 300_000
    kind = rng.choice(["spike", "gap", "jump"])
    return {"anomaly_id": f"d1|E1|{ts}|{kind}", "ts_end": ts, "type": kind,
            "revision": rng.randrange(3), "cleared": rng.random() < 0.2}  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recent_anomalies_stored_per_event_keep_what_the_list_keeps(seed: int) -> None:
    """Epochs of upserts (revisions, clears, events older than the whole list) stored as
    event keys: the stored events are always the list :func:`apply_anomaly` keeps, and an
    epoch writes only the events it changed and the ones it evicted."""
    import orjson

    rng = random.Random(seed)
    limit, t0 = 20, 1_735_653_600_000
    store: dict[str, bytes] = {}
    reference: list[dict[str, object]] = []
    for _ in range(60):
        recent = RecentAnomalies.load("d1", sorted(store.items()))
        batch = [_event(rng, t0) for _ in range(rng.choice([1, 1, 3, 10]))]
        for e in batch:
            recent.apply("d1", e, limit)
            apply_anomaly(reference, e, limit)
        changes = recent.changes()
        assert len(changes) <= 2 * len(batch)
        for key, value in changes.items():
            if value is None:
                del store[key]
            else:
                store[key] = value
        assert [orjson.loads(store[k]) for k in sorted(store, reverse=True)] == reference
        assert recent.newest_first() == reference
        assert set(store) == {anomaly_key("d1", e) for e in reference}


def test_a_whole_list_stored_by_an_earlier_version_becomes_event_keys() -> None:
    import orjson

    events = [{"anomaly_id": f"d1|E1|{ts}|gap", "ts_end": ts, "type": "gap", "revision": 0, "cleared": False}
              for ts in (3_000, 2_000, 1_000)]  # fmt: skip
    recent = RecentAnomalies.load("d1", [("d1", orjson.dumps(events))])
    assert recent.newest_first() == events
    changes = recent.changes()
    assert changes.pop("d1") is None
    assert {k: orjson.loads(v) for k, v in changes.items() if v} == {anomaly_key("d1", e): e for e in events}
