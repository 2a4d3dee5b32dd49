"""Online time-of-day scoring: synthetic cases and a real two-year household series."""

from __future__ import annotations

import csv
import gzip
import random
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from aurora_streams.domain.scoring import Profile, ScoringRules, score_and_learn
from aurora_streams.errors import CorruptState
from tests.unit.domain.helpers import Driver, ivl

H = 3_600_000
SERIES = (
    Path(__file__).resolve().parents[4] / "shared" / "data" / "series" / "nem12_4103794252_E1_30min.csv.gz"
)


def test_nothing_is_scored_before_enough_samples() -> None:
    p = Profile()
    for day in range(6):
        assert score_and_learn(p, day * 24 * H, day * 24 * H + H, 1.0, ScoringRules()) is None
    assert p.bucket(0)[0] == 6


def test_spike_and_drop_against_the_hour_profile() -> None:
    rng = random.Random(1)
    p = Profile()
    rules = ScoringRules()
    for day in range(30):
        start = day * 24 * H + 18 * H
        assert score_and_learn(p, start, start + H, 3.0 + rng.gauss(0, 0.1), rules) is None or day < 7
    spike = score_and_learn(p, 40 * 24 * H + 18 * H, 40 * 24 * H + 19 * H, 9.0, rules)
    assert spike is not None and spike.type == "spike" and spike.score > 4 and "18:00" in spike.detail
    before = p.bucket(18)
    drop = score_and_learn(p, 41 * 24 * H + 18 * H, 41 * 24 * H + 19 * H, 0.0, rules)
    assert drop is not None and drop.type == "drop"
    assert p.bucket(18) == before  # faults do not teach the profile


def test_a_household_switching_a_kettle_is_not_a_spike() -> None:
    # Real households swing by kilowatts within an hour: scoring divides by at least
    # floor_kw, so a usual 0.3 kW hour with a 2 kW half-hour is at most "high", never a spike.
    rng = random.Random(2)
    p = Profile()
    rules = ScoringRules()
    for day in range(30):
        start = day * 24 * H + 7 * H
        score_and_learn(p, start, start + H // 2, (0.3 + rng.gauss(0, 0.05)) / 2, rules)
    found = score_and_learn(p, 40 * 24 * H + 7 * H, 40 * 24 * H + 7 * H + H // 2, 1.0, rules)
    assert found is None or found.type == "high"


def test_scores_come_out_as_anomaly_events_of_in_order_readings_only() -> None:
    d = Driver()
    for i in range(24 * 10):
        d.feed(ivl(i * H, 1.0, interval_s=3600))
    res = d.feed(ivl(24 * 10 * H, 8.0, interval_s=3600))
    assert [a.type for a in res.anomalies if a.type in ("spike", "high")] == ["spike"]
    # An out-of-order reading is placed, but never scored or learned from.
    profile_before = d.state.profiles["E1"].to_list()
    late = d.feed(ivl(24 * 10 * H - 30 * 60_000, 50.0, interval_s=1800))
    assert not [a for a in late.anomalies if a.type in ("spike", "drop", "high", "low")]
    assert d.state.profiles["E1"].to_list() == profile_before


@pytest.mark.skipif(not SERIES.exists(), reason="the shared series is missing")
def test_real_household_series_rarely_alarms_and_catches_an_injected_fault() -> None:
    aest = timezone(timedelta(hours=10))
    with gzip.open(SERIES, "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    d = Driver()
    kinds: dict[str, int] = {}
    inject_at = len(rows) - 500
    caught = []
    for i, row in enumerate(rows):
        end = datetime.fromisoformat(row["t_end"]).replace(tzinfo=aest)
        value = float(row["value"]) * (15 if i == inject_at else 1)
        res = d.feed(ivl(int(end.timestamp() * 1000), value, interval_s=1800, quality=row["quality"] or "A"))
        for a in res.anomalies:
            kinds[a.type] = kinds.get(a.type, 0) + 1
            if i == inject_at:
                caught.append(a.type)
    assert "spike" in caught
    alarms = kinds.get("spike", 0) + kinds.get("drop", 0)
    assert 0 < alarms < 0.02 * len(rows), kinds


def test_a_profile_is_72_doubles_and_refuses_another_length() -> None:
    """One per channel of every cached device: its numbers are C doubles (0.6 KB, where a
    list of Python floats took 2.4 KB), and a stored one of the wrong length is corrupt."""
    stored = [float(i) + 0.5 for i in range(72)]
    tracemalloc.start()
    try:
        profiles = [Profile([i + 0.5 for i in range(72)]) for _ in range(50)]  # as decoded: own floats
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert profiles[0].to_list() == stored
    assert held / 50 < 1024
    with pytest.raises(CorruptState, match="72 numbers, got 71"):
        Profile(stored[:-1])
