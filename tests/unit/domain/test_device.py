"""Every flag of the device state machine, and its ordering/revision rules."""

from __future__ import annotations

import orjson
import pytest

from aurora_streams.domain.device import DeviceState, apply
from aurora_streams.domain.flags import Flag
from aurora_streams.domain.model import DeviceRules, event_id
from aurora_streams.errors import CorruptState, DomainRejection
from tests.unit.domain.helpers import MIN, T0, Driver, ivl, reg


def flags_of(result) -> set[str]:  # type: ignore[no-untyped-def]
    return set(result.records[0].flags)


def test_first_register_reading_has_no_delta() -> None:
    d = Driver()
    res = d.feed(reg(T0, 100.0))
    rec = res.records[0]
    assert rec.flags == (Flag.FIRST_READING,)
    assert rec.delta_kwh is None and rec.ts_start is None and rec.register_kwh == 100.0
    assert rec.event_id == event_id("d1", "E1", T0) and rec.revision == 0


def test_register_delta_is_rise_since_previous() -> None:
    d = Driver()
    d.feed(reg(T0, 100.0))
    rec = d.feed(reg(T0 + 5 * MIN, 100.4)).records[0]
    assert rec.delta_kwh == pytest.approx(0.4)
    assert rec.ts_start == T0 and rec.ts_end == T0 + 5 * MIN and rec.flags == ()


def test_interval_delta_is_its_value_and_first_reading_flagged() -> None:
    d = Driver()
    rec = d.feed(ivl(T0, 0.7)).records[0]
    assert rec.delta_kwh == 0.7 and rec.ts_start == T0 - 1800_000 and rec.register_kwh is None
    assert Flag.FIRST_READING in rec.flags


def test_exact_duplicate_emits_nothing_and_keeps_state() -> None:
    d = Driver()
    d.feed(reg(T0, 1.0), reg(T0 + 5 * MIN, 2.0))
    before = d.state.to_bytes()
    res = d.feed(reg(T0 + 5 * MIN, 2.0, ingested_at_ms=T0 + 99 * MIN))
    assert res.status == "duplicate" and res.records == [] and res.anomalies == []
    assert d.state.to_bytes() == before


def test_newer_version_revises_and_older_is_stale() -> None:
    d = Driver()
    d.feed(ivl(T0, 1.0, quality="E", updated_at_ms=T0))
    res = d.feed(ivl(T0, 1.2, quality="A", updated_at_ms=T0 + MIN))
    assert res.status == "revised"
    rec = res.records[0]
    assert rec.revision == 1 and rec.value_kwh == 1.2 and Flag.REVISED in rec.flags
    assert Flag.ESTIMATED not in rec.flags
    stale = d.feed(ivl(T0, 0.9, quality="E", updated_at_ms=T0))
    assert stale.status == "stale" and stale.records == []


def test_better_quality_revises_at_same_version() -> None:
    d = Driver()
    d.feed(ivl(T0, 1.0, quality="S", method="14", reason_code=24))
    assert flags_of(d.results[-1]) >= {Flag.SUBSTITUTED}
    res = d.feed(ivl(T0, 1.1, quality="A"))
    assert res.status == "revised" and res.records[0].quality == "A"
    assert d.feed(ivl(T0, 1.3, quality="E")).status == "stale"


@pytest.mark.parametrize(
    ("quality", "flag"),
    [
        ("E", Flag.ESTIMATED),
        ("S", Flag.SUBSTITUTED),
        ("F", Flag.SUBSTITUTED),
        ("N", Flag.NULL),
        ("V", Flag.QUALITY_UNRESOLVED),  # was published unflagged
    ],
)
def test_quality_flags_carried(quality: str, flag: Flag) -> None:
    rec = Driver().feed(ivl(T0, 0.0, quality=quality, method="52", reason_code=None)).records[0]
    assert flag in rec.flags and rec.quality == quality and rec.method == "52"


def test_out_of_order_register_is_placed_and_neighbour_revised() -> None:
    d = Driver()
    d.feed(reg(T0, 10.0), reg(T0 + 10 * MIN, 12.0))
    res = d.feed(reg(T0 + 5 * MIN, 11.0))
    assert res.status == "out_of_order"
    own, neighbour = res.records
    assert Flag.OUT_OF_ORDER in own.flags and own.delta_kwh == pytest.approx(1.0)
    assert neighbour.event_id == event_id("d1", "E1", T0 + 10 * MIN)
    assert neighbour.revision == 1 and neighbour.delta_kwh == pytest.approx(1.0)
    assert neighbour.ts_start == T0 + 5 * MIN


def test_out_of_order_interval_fills_gap_and_clears_gap_anomaly() -> None:
    d = Driver()
    d.feed(ivl(T0, 1.0))
    res = d.feed(ivl(T0 + 60 * MIN, 1.0))
    assert Flag.GAP in res.records[0].flags
    assert [a.type for a in res.anomalies] == [Flag.GAP]
    res = d.feed(ivl(T0 + 30 * MIN, 1.0))
    own, neighbour = res.records
    assert Flag.OUT_OF_ORDER in own.flags and Flag.GAP not in neighbour.flags
    cleared = [a for a in res.anomalies if a.cleared]
    assert [(a.type, a.revision) for a in cleared] == [(Flag.GAP, 1)]


def test_older_than_first_reading_becomes_first() -> None:
    d = Driver()
    d.feed(reg(T0 + 5 * MIN, 11.0))
    res = d.feed(reg(T0, 10.0))
    assert Flag.FIRST_READING in res.records[0].flags
    assert res.records[1].delta_kwh == pytest.approx(1.0) and Flag.FIRST_READING not in res.records[1].flags


def test_late_beyond_horizon_is_emitted_flagged_and_the_window_unchanged() -> None:
    rules = DeviceRules(reorder_horizon_s=3600)
    d = Driver(rules)
    d.feed(ivl(T0, 1.0), ivl(T0 + 180 * MIN, 1.0))
    window = [e.to_list() for e in d.state.channels["E1"].entries]
    res = d.feed(ivl(T0 + 60 * MIN, 2.0))
    assert res.status == "late"
    rec = res.records[0]
    assert {Flag.LATE_BEYOND_HORIZON, Flag.OUT_OF_ORDER} <= set(rec.flags) and rec.delta_kwh == 2.0
    assert [a.type for a in res.anomalies] == [Flag.LATE_BEYOND_HORIZON]
    assert [e.to_list() for e in d.state.channels["E1"].entries] == window
    # The state round-trips with what it remembers of the late reading.
    assert DeviceState.from_bytes(d.state.to_bytes()).to_bytes() == d.state.to_bytes()


def test_an_exact_re_delivery_beyond_the_horizon_emits_nothing() -> None:
    # Before: each re-delivery of a late reading was one more record and one more "late"
    # anomaly.
    d = Driver(DeviceRules(reorder_horizon_s=3600))
    d.feed(ivl(T0, 1.0), ivl(T0 + 180 * MIN, 1.0))
    d.feed(ivl(T0 + 60 * MIN, 2.0))
    again = d.feed(ivl(T0 + 60 * MIN, 2.0, ingested_at_ms=T0 + 999 * MIN))
    assert again.status == "duplicate" and again.records == [] and again.anomalies == []


def test_another_version_of_a_late_reading_is_stale_or_the_next_revision() -> None:
    # Before: a repeated NEM12 day with other values at the same stamp gave two revision-0
    # records with one event id and different values.
    d = Driver(DeviceRules(reorder_horizon_s=3600))
    d.feed(ivl(T0, 1.0), ivl(T0 + 180 * MIN, 1.0))
    first = d.feed(ivl(T0 + 60 * MIN, 2.0, updated_at_ms=T0))
    assert first.records[0].revision == 0
    assert d.feed(ivl(T0 + 60 * MIN, 2.5, updated_at_ms=T0)).status == "stale"  # same version: first wins
    newer = d.feed(ivl(T0 + 60 * MIN, 2.7, updated_at_ms=T0 + MIN))
    [rec] = newer.records
    assert rec.revision == 1 and rec.value_kwh == 2.7 and Flag.REVISED in rec.flags
    assert rec.event_id == first.records[0].event_id


def test_the_memory_of_late_readings_is_bounded() -> None:
    d = Driver(DeviceRules(reorder_horizon_s=3600, max_window=4))
    d.feed(ivl(T0 + 1000 * MIN, 1.0))
    for i in range(10):
        d.feed(ivl(T0 + i * 30 * MIN, 0.5))
    assert [row[0] for row in d.state.channels["E1"].late] == [T0 + i * 30 * MIN for i in range(6, 10)]


def test_gap_in_register_readings_against_cadence() -> None:
    d = Driver()
    d.feed(reg(T0, 1.0), reg(T0 + 5 * MIN, 1.1))
    res = d.feed(reg(T0 + 20 * MIN, 1.4))
    assert Flag.GAP in res.records[0].flags
    assert res.anomalies[0].score == 2.0  # two readings missing
    assert Flag.GAP not in d.feed(reg(T0 + 25 * MIN, 1.5)).records[0].flags


def test_gap_uses_declared_interval_for_registers() -> None:
    d = Driver()
    d.feed(reg(T0, 1.0, interval_s=300))
    assert Flag.GAP in d.feed(reg(T0 + 15 * MIN, 1.1, interval_s=300)).records[0].flags


def test_counter_reset_has_null_delta() -> None:
    d = Driver()
    d.feed(reg(T0, 5000.0))
    res = d.feed(reg(T0 + 5 * MIN, 3.0))
    rec = res.records[0]
    assert Flag.COUNTER_RESET in rec.flags and rec.delta_kwh is None
    assert res.anomalies[0].type == Flag.COUNTER_RESET
    assert d.feed(reg(T0 + 10 * MIN, 3.5)).records[0].delta_kwh == pytest.approx(0.5)


def test_rollover_when_wrap_is_plausible() -> None:
    d = Driver(DeviceRules(max_power_kw=20.0))
    d.feed(reg(T0, 99_999.2))
    rec = d.feed(reg(T0 + 5 * MIN, 0.3)).records[0]
    assert Flag.ROLLOVER in rec.flags and rec.delta_kwh == pytest.approx(1.1)


def test_fall_that_would_need_implausible_power_is_a_reset_not_a_rollover() -> None:
    d = Driver(DeviceRules(max_power_kw=20.0))
    d.feed(reg(T0, 99_000.0))
    rec = d.feed(reg(T0 + 5 * MIN, 5.0)).records[0]
    assert Flag.COUNTER_RESET in rec.flags and Flag.ROLLOVER not in rec.flags


def test_suspicious_jump_keeps_delta_and_scores_ratio() -> None:
    d = Driver(DeviceRules(max_power_kw=12.0))  # 1 kWh per 5 minutes allowed
    d.feed(reg(T0, 10.0))
    res = d.feed(reg(T0 + 5 * MIN, 13.0))
    assert Flag.SUSPICIOUS_JUMP in res.records[0].flags and res.records[0].delta_kwh == 3.0
    assert res.anomalies[0].score == pytest.approx(3.0)


def test_per_device_max_power_override() -> None:
    rules = DeviceRules(max_power_kw=12.0, device_max_power_kw={"d1": 1000.0})
    d = Driver(rules)
    d.feed(reg(T0, 10.0))
    assert Flag.SUSPICIOUS_JUMP not in d.feed(reg(T0 + 5 * MIN, 13.0)).records[0].flags


def test_interval_jump() -> None:
    rec = Driver(DeviceRules(max_power_kw=10.0)).feed(ivl(T0, 6.0)).records[0]  # 5 kWh max in 30 min
    assert Flag.SUSPICIOUS_JUMP in rec.flags


def test_negative_interval() -> None:
    res = Driver().feed(ivl(T0, -0.2))
    assert Flag.NEGATIVE in res.records[0].flags and res.anomalies[0].type == Flag.NEGATIVE


SHORT_RUNS = DeviceRules(zero_run_min_s=0, frozen_min_s=0)
"""Runs flagged at ``run_length`` readings, whatever they last."""


def test_zero_run_on_intervals() -> None:
    d = Driver(SHORT_RUNS)
    d.feed(ivl(T0, 0.0), ivl(T0 + 30 * MIN, 0.0))
    assert Flag.ZERO_RUN not in d.results[-1].records[0].flags
    assert Flag.ZERO_RUN in d.feed(ivl(T0 + 60 * MIN, 0.0)).records[0].flags


def test_frozen_nonzero_interval_values() -> None:
    d = Driver(SHORT_RUNS)
    d.feed(ivl(T0, 0.42), ivl(T0 + 30 * MIN, 0.42))
    assert Flag.FROZEN in d.feed(ivl(T0 + 60 * MIN, 0.42)).records[0].flags


def test_frozen_register() -> None:
    d = Driver(SHORT_RUNS)
    d.feed(reg(T0, 123.0), reg(T0 + 5 * MIN, 123.0))
    rec = d.feed(reg(T0 + 10 * MIN, 123.0)).records[0]
    assert Flag.FROZEN in rec.flags and rec.delta_kwh == 0.0


def test_null_quality_does_not_extend_a_zero_run() -> None:
    d = Driver(SHORT_RUNS)
    d.feed(ivl(T0, 0.0, quality="N"), ivl(T0 + 30 * MIN, 0.0, quality="N"))
    assert Flag.ZERO_RUN not in d.feed(ivl(T0 + 60 * MIN, 0.0, quality="N")).records[0].flags


def test_substituted_fill_is_not_a_run() -> None:
    # NEM12 F19 is a zero fill by design: flagged substituted, never a stuck meter.
    d = Driver(SHORT_RUNS)
    d.feed(*(ivl(T0 + i * 30 * MIN, 0.0, quality="F", reason_code=19) for i in range(5)))
    assert all(Flag.ZERO_RUN not in r.records[0].flags for r in d.results)


def test_equal_half_hours_are_ordinary() -> None:
    # 0.85 kWh three times in a row (and zeros all night) is real data, not a fault: on a
    # real 2-year household, frozen fired on 3.6% of intervals with a 3-reading rule.
    d = Driver()
    d.feed(*(ivl(T0 + i * 30 * MIN, 0.85) for i in range(11)))
    d.feed(*(ivl(T0 + (11 + i) * 30 * MIN, 0.0) for i in range(47)))
    assert not any(r.anomalies for r in d.results)


def test_a_long_run_is_raised_once_when_it_reaches_its_duration() -> None:
    d = Driver()
    d.feed(*(ivl(T0 + i * 30 * MIN, 0.42) for i in range(20)))
    raised = [i for i, r in enumerate(d.results) if Flag.FROZEN in r.records[0].flags]
    assert raised == [11]  # the 12th half-hour: 6 h, frozen_min_s
    (event,) = d.results[11].anomalies
    assert event.type == Flag.FROZEN and "over 6 h" in event.detail
    d2 = Driver()
    d2.feed(*(ivl(T0 + i * 30 * MIN, 0.0) for i in range(60)))
    assert [i for i, r in enumerate(d2.results) if r.anomalies] == [47]  # 24 h of zeros


def test_a_register_that_does_not_advance_is_frozen_after_its_duration() -> None:
    d = Driver()
    d.feed(*(reg(T0 + i * 60 * MIN, 500.0) for i in range(9)))
    raised = [i for i, r in enumerate(d.results) if r.anomalies]
    assert raised == [6]  # 6 hourly steps without a rise


def test_arrival_flags_are_kept() -> None:
    r = ivl(
        T0,
        1.0,
        arrival_flags=(Flag.UNIT_CONVERTED.value, Flag.FUTURE_TIMESTAMP.value),
        ingested_at_ms=T0 - 3600_000,
    )
    res = Driver().feed(r)
    assert {Flag.UNIT_CONVERTED, Flag.FUTURE_TIMESTAMP} <= set(res.records[0].flags)
    assert [a.type for a in res.anomalies] == [Flag.FUTURE_TIMESTAMP]
    assert res.anomalies[0].score == pytest.approx(3600.0)


def test_kind_conflict_is_rejected() -> None:
    state = DeviceState()
    apply(state, reg(T0, 1.0), DeviceRules())
    with pytest.raises(DomainRejection) as info:
        apply(state, ivl(T0 + MIN, 1.0), DeviceRules())
    assert info.value.reason == "kind_conflict"


def test_channels_are_independent() -> None:
    d = Driver()
    d.feed(ivl(T0, 1.0, channel="E1"))
    rec = d.feed(ivl(T0 + 90 * MIN, 1.0, channel="B1")).records[0]
    assert Flag.FIRST_READING in rec.flags and Flag.GAP not in rec.flags


def test_window_is_bounded_and_anchored() -> None:
    rules = DeviceRules(max_window=5, reorder_horizon_s=10**6)
    d = Driver(rules)
    for i in range(20):
        d.feed(reg(T0 + i * 5 * MIN, float(i)))
    ch = d.state.channels["E1"]
    assert len(ch.entries) == 6 and ch.anchored
    # Older than the anchor: cannot be placed.
    assert d.feed(reg(T0 + 2 * 5 * MIN + MIN, 2.5)).status == "late"


def test_state_round_trips_through_bytes() -> None:
    d = Driver()
    d.feed(reg(T0, 1.0, source="gw-1"), reg(T0 + 5 * MIN, 2.0), ivl(T0, 0.5, channel="B1"))
    data = d.state.to_bytes()
    assert DeviceState.from_bytes(data).to_bytes() == data
    with pytest.raises(CorruptState):
        DeviceState.from_bytes(b'{"v": 99, "c": {}}')


def test_an_encoded_state_holds_only_its_bytes() -> None:
    """A checkpoint holds the encodings of every device it stores: each must cost its
    length, not the encoder's grown buffer (4.3x its length for a 5.5 KB state before)."""
    import tracemalloc

    d = Driver()
    d.feed(*(reg(T0 + i * 5 * MIN, float(i), source="gw-1") for i in range(48)))
    d.state.to_bytes()  # the first call fills one-time caches
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        data = d.state.to_bytes()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) > 4_000
    assert held - before < len(data) + 1_024


def test_decoded_entries_share_their_repeated_strings() -> None:
    """A cached state holds one str per distinct unit, quality and source, not one per
    entry (decoded states are kept for thousands of devices)."""
    d = Driver()
    d.feed(*(reg(T0 + i * 5 * MIN, float(i), source="gw-1") for i in range(4)))
    entries = DeviceState.from_bytes(d.state.to_bytes()).channels["E1"].entries
    for field in ("unit", "original_unit", "quality", "source"):
        assert len({id(getattr(e, field)) for e in entries}) == 1, field


def test_the_written_out_row_matches_the_field_list() -> None:
    # Every field a distinct value: a field left out or out of order would show.
    from aurora_streams.domain import device

    values = {
        "ts": 1, "value": 2.5, "unit": "u", "original_value": 3.5, "original_unit": "ou", "interval_s": 5,
        "quality": "q", "method": "m", "reason_code": 6, "updated_at": 7, "source": "s", "ingested_at": 4,
        "arrival": ("a",), "revision": 8, "ts_start": 9, "delta": 10.5, "flags": ("f",), "run": 11,
        "step": 12,
    }  # fmt: skip
    assert tuple(values) == device._ENTRY_FIELDS
    e = device.Entry(*values.values())
    assert device._entry_row(e) == device._entry_values(e) == tuple(values.values())


@pytest.mark.parametrize(
    ("before", "after", "days"),
    [
        (1000.0, 999.9, 5),  # a small backward step, days later: a correction, not 9,999.9 kWh
        (5000.0, 0.5, 3),  # a meter replaced mid-range: not 5,000.5 kWh
        (99_990.0, 99_980.0, 30),  # NEM13 SEN1312023-like: Quantity -10, not 99,990 kWh
        (9_950.0, 2_000.0, 4),  # from near the modulus, but not to near zero
    ],
)
def test_a_fall_far_from_a_modulus_is_a_reset_whatever_the_time_between(
    before: float, after: float, days: int
) -> None:
    d = Driver(DeviceRules(max_power_kw=100.0))
    d.feed(reg(T0, before))
    rec = d.feed(reg(T0 + days * 24 * 60 * MIN, after)).records[0]
    assert Flag.COUNTER_RESET in rec.flags and Flag.ROLLOVER not in rec.flags
    assert rec.delta_kwh is None


def test_a_wrap_days_later_is_still_a_wrap_when_it_goes_from_near_the_top_to_near_zero() -> None:
    d = Driver(DeviceRules(max_power_kw=100.0))
    d.feed(reg(T0, 9_800.0))
    rec = d.feed(reg(T0 + 3 * 24 * 60 * MIN, 150.0)).records[0]
    assert Flag.ROLLOVER in rec.flags and rec.delta_kwh == pytest.approx(350.0)


FUTURE = (Flag.FUTURE_TIMESTAMP.value,)


def test_a_future_stamped_reading_never_becomes_the_channel_reference() -> None:
    """Issue 20: a register reading stamped two days ahead became the channel's latest; the
    next 83 of 120 live reads were late with no delta and 112.3 kWh were booked against 65.0."""
    d = Driver(DeviceRules(max_power_kw=100.0))
    d.feed(reg(T0, 100.0))
    ahead = T0 + 2 * 24 * 60 * MIN
    res = d.feed(reg(ahead, 190.0, arrival_flags=FUTURE, ingested_at_ms=T0 + 5 * MIN))
    assert res.status == "future" and res.records[0].delta_kwh is None
    assert Flag.FUTURE_TIMESTAMP in res.records[0].flags
    assert [a.type for a in res.anomalies] == [Flag.FUTURE_TIMESTAMP]
    booked = 0.0
    for i in range(1, 121):
        r = d.feed(reg(T0 + i * 5 * MIN, 100.0 + i * 0.5))
        assert r.status == "new" and r.records[0].delta_kwh == pytest.approx(0.5)
        booked += r.records[0].delta_kwh or 0.0
    assert booked == pytest.approx(60.0)
    # The true reading at the stamp the future one claimed, when its time comes, is placed.
    true = d.feed(reg(ahead, 160.0))
    assert true.status == "new" and true.records[0].delta_kwh == pytest.approx(0.0)
    # ... and supersedes the future one: same event id, the next revision (both were 0,
    # and the sink kept the first stored, the wrong one).
    assert true.records[0].event_id == res.records[0].event_id
    assert res.records[0].revision == 0 and true.records[0].revision == 1
    assert d.state.channels["E1"].late == []  # forgotten once superseded


def test_a_future_stamped_reading_sent_again_emits_nothing() -> None:
    d = Driver()
    d.feed(ivl(T0, 0.5))
    ahead = T0 + 2 * 24 * 60 * MIN
    d.feed(ivl(ahead, 0.9, arrival_flags=FUTURE))
    again = d.feed(ivl(ahead, 0.9, arrival_flags=FUTURE, ingested_at_ms=T0 + 9 * MIN))
    assert again.status == "duplicate" and again.records == [] and again.anomalies == []


def test_a_future_stamped_interval_books_its_own_value_and_leaves_live_ones_in_order() -> None:
    d = Driver()
    d.feed(ivl(T0, 0.5))
    d.feed(ivl(T0 + 2 * 24 * 60 * MIN, 0.9, arrival_flags=FUTURE))
    res = d.feed(ivl(T0 + 30 * MIN, 0.6))
    assert res.status == "new" and res.anomalies == [] and res.records[0].flags == ()


def test_a_25_hour_day_sent_with_its_length_is_contiguous() -> None:
    # Before: interval_s had to divide a day, so a 25-hour local day was sent as 86,400 s and
    # flagged a one-hour gap.
    d = Driver()
    end1 = T0 + 24 * 60 * MIN
    d.feed(ivl(end1, 20.0, interval_s=86_400), ivl(end1 + 25 * 60 * MIN, 21.0, interval_s=90_000))
    assert not ({Flag.GAP, Flag.OVERLAP} & set(d.results[-1].records[0].flags))


def test_an_interval_that_overlaps_its_predecessor_is_flagged() -> None:
    # A 23-hour day sent as 24 hours overlapped the day before silently.
    d = Driver()
    end1 = T0 + 24 * 60 * MIN
    res = d.feed(ivl(end1, 20.0, interval_s=86_400), ivl(end1 + 23 * 60 * MIN, 19.0, interval_s=86_400))
    assert Flag.OVERLAP in res.records[0].flags and [a.type for a in res.anomalies] == [Flag.OVERLAP]
    assert res.records[0].delta_kwh == 19.0  # booked, and said


def test_a_channel_carries_its_declared_direction_or_its_suffix_convention() -> None:
    d = Driver()
    d.feed(ivl(T0 + 30 * MIN, 1.0, channel="E1"), ivl(T0 + 30 * MIN, 1.0, channel="B1"))
    d.feed(ivl(T0 + 30 * MIN, 1.0, channel="11"))
    d.feed(ivl(T0 + 30 * MIN, 1.0, channel="41", direction="generation"))
    # Readings that do not repeat the declaration keep it, placed out of order or not.
    d.feed(ivl(T0 + 90 * MIN, 1.0, channel="41"), ivl(T0 + 60 * MIN, 1.0, channel="41"))
    got = {(r.channel, r.ts_end): r.direction for r in d.by_ts()}
    assert got == {
        ("11", T0 + 30 * MIN): None,
        ("41", T0 + 30 * MIN): "generation",
        ("41", T0 + 60 * MIN): "generation",
        ("41", T0 + 90 * MIN): "generation",
        ("B1", T0 + 30 * MIN): "generation",
        ("E1", T0 + 30 * MIN): "consumption",
    }
    state = DeviceState.from_bytes(d.state.to_bytes())
    assert state.channels["41"].direction == "generation" and state.channels["11"].direction is None
    assert state.to_bytes() == d.state.to_bytes()


def test_a_late_or_future_reading_carries_its_channels_direction() -> None:
    rules = DeviceRules(reorder_horizon_s=3600)
    d = Driver(rules)
    d.feed(ivl(T0 + 30 * MIN, 1.0, channel="41", direction="generation"))
    d.feed(ivl(T0 + 300 * MIN, 1.0, channel="41"))
    late = d.feed(ivl(T0 + 60 * MIN, 1.0, channel="41"))
    assert late.status == "late" and [r.direction for r in late.records] == ["generation"]
    ahead = ivl(T0 + 30 * 86_400_000, 1.0, channel="41", arrival_flags=(Flag.FUTURE_TIMESTAMP.value,))
    future = d.feed(ahead)
    assert future.status == "future" and [r.direction for r in future.records] == ["generation"]


def test_a_reading_contradicting_its_channels_declared_direction_is_rejected() -> None:
    d = Driver()
    d.feed(ivl(T0 + 30 * MIN, 1.0, channel="41", direction="generation"))
    with pytest.raises(DomainRejection) as info:
        d.feed(ivl(T0 + 60 * MIN, 1.0, channel="41", direction="consumption"))
    assert info.value.reason == "direction_conflict" and info.value.field == "direction"
    assert d.state.channels["41"].direction == "generation"


def test_a_state_without_declared_directions_encodes_as_before_they_existed() -> None:
    d = Driver()
    d.feed(ivl(T0 + 30 * MIN, 1.0))
    [row] = orjson.loads(d.state.to_bytes())["c"].values()
    assert len(row) == 3  # [kind, anchored, entries]: what workers before it wrote and read


def test_entries_share_their_unit_and_quality_strings() -> None:
    """A worker holds thousands of windows: their entries point at one string per distinct
    unit, quality and source, whether built from readings or decoded from the table."""
    from aurora_streams.domain.device import Entry

    def parsed(text: str) -> str:  # a new str object, as a JSON decoder makes per reading
        return orjson.loads(orjson.dumps(text))

    entries = [
        Entry.from_reading(
            ivl(T0 + i * 30 * MIN, 1.0)._replace(
                unit=parsed("kWh"),
                original_unit=parsed("Wh"),
                quality=parsed("A"),
                source=parsed("nem12"),
            ),
            (),
        )
        for i in range(2)
    ]
    decoded = [Entry.from_list(orjson.loads(orjson.dumps(e.to_list()))) for e in entries]
    for field in ("unit", "original_unit", "quality", "source"):
        first = getattr(entries[0], field)
        assert all(getattr(e, field) is first for e in entries + decoded), field


def test_an_entrys_optional_numbers_read_back_as_given_and_cost_no_objects() -> None:
    """``ts_start``, ``delta`` and ``step`` are stored unboxed: they read back as given
    (``None`` included), and in the compiled core an entry holding all three allocates
    nothing beside its own record (76 bytes of int and float objects before) of twelve
    fields (nineteen before: 208 bytes)."""
    import tracemalloc

    from aurora_streams import native
    from aurora_streams.domain.device import Entry

    def entry(i: int, ts_start: int | None, delta: float | None, step: int | None) -> Entry:
        return Entry(T0 + i, 1.5, "kWh", 1.5, "kWh", 300, "A", None, None, None, None, T0 + i, (),
                     0, ts_start, delta, (), 1, step)  # fmt: skip

    e = entry(0, T0 - 300_000, 0.25, 300_000)
    assert (e.ts_start, e.delta, e.step) == (T0 - 300_000, 0.25, 300_000)
    e.ts_start, e.delta, e.step = None, None, None
    assert (e.ts_start, e.delta, e.step) == (None, None, None)
    assert entry(0, None, None, None).to_list()[14:] == [None, None, (), 1, None]
    e.delta, e.step, e.ts_start = 0.0, 0, 0
    assert (e.ts_start, e.delta, e.step) == (0, 0.0, 0)
    if not native.STATUS.startswith("on"):
        return
    tracemalloc.start()
    try:
        entries = [entry(i, T0 + 7 * i, 0.5 + i, 300_000 + i) for i in range(2_000)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(entries) == 2_000 and held / 2_000 < 160


def test_entries_share_their_description_and_hold_no_empty_extras() -> None:
    """Unit, original unit, quality and cadence live in one tuple shared by every entry
    that has those four, built from readings or decoded; method, reason code, version,
    source and arrival flags take no room when all are none, and read back as given when
    not, after a revision too."""
    from aurora_streams.domain.device import Entry

    plain = [Entry.from_reading(ivl(T0 + i * 30 * MIN, 1.0), ()) for i in range(3)]
    decoded = [Entry.from_list(orjson.loads(orjson.dumps(e.to_list()))) for e in plain]
    assert len({id(e._desc) for e in plain + decoded}) == 1
    assert all(e._extra is None for e in plain + decoded)
    first = plain[0]
    extras = (first.method, first.reason_code, first.updated_at, first.source, first.arrival)
    assert extras == (None, None, None, None, ())
    other = Entry.from_reading(ivl(T0, 1.0)._replace(unit="MWh", interval_s=300), ())
    assert other._desc is not plain[0]._desc and (other.unit, other.interval_s) == ("MWh", 300)

    r = ivl(T0, 2.0)._replace(quality="E", method="52", reason_code=7, updated_at_ms=T0 + 9, source="nem12")
    e = plain[0]
    e.replace_content(r, ("revised",))
    assert (e.value, e.quality, e.method, e.reason_code, e.updated_at, e.source, e.arrival) == (
        2.0, "E", "52", 7, T0 + 9, "nem12", ("revised",)
    )  # fmt: skip
    assert Entry.from_list(orjson.loads(orjson.dumps(e.to_list()))).to_list() == e.to_list()


def test_descriptions_past_the_shared_bound_still_read_back() -> None:
    """Input with ever new cadences cannot grow the shared descriptions without bound;
    past it each entry keeps its own, with the same values."""
    from aurora_streams.domain import device

    shared = dict(device._DESCS)
    try:
        entries = [
            device.Entry.from_reading(ivl(T0, 1.0)._replace(interval_s=60 + i), ())
            for i in range(device._DESCS_MAX + 10)
        ]
        assert len(device._DESCS) <= device._DESCS_MAX
        assert [e.interval_s for e in entries] == [60 + i for i in range(device._DESCS_MAX + 10)]
    finally:  # the process's other tests see the module's table as they would have
        device._DESCS.clear()
        device._DESCS.update(shared)
