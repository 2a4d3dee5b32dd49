"""Property tests of the device state machine (hypothesis)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aurora_streams.domain.device import DeviceState, apply
from aurora_streams.domain.flags import Flag
from aurora_streams.domain.model import DeviceRules, Reading
from tests.unit.domain.helpers import MIN, T0, Driver, ivl, reg

NO_WRAP = DeviceRules(max_power_kw=1e9, register_moduli_kwh=(), reorder_horizon_s=10**7, max_window=10_000)
WIDE = DeviceRules(max_power_kw=50.0, reorder_horizon_s=10**7, max_window=10_000)

steps = st.lists(
    st.one_of(
        st.floats(min_value=0.0, max_value=5.0, allow_nan=False),  # normal rise
        st.just(0.0),  # no consumption
        st.floats(min_value=-200.0, max_value=-0.001, allow_nan=False),  # fall (reset)
    ),
    min_size=1,
    max_size=60,
)


def register_series(start: float, deltas: list[float]) -> list[Reading]:
    values = [start]
    for d in deltas:
        values.append(max(0.0, round(values[-1] + d, 3)))
    return [reg(T0 + i * 5 * MIN, v) for i, v in enumerate(values)]


@given(st.floats(min_value=0.0, max_value=1e5), steps)
def test_accepted_deltas_add_up_to_rise_less_what_resets_discard(start: float, deltas: list[float]) -> None:
    readings = register_series(round(start, 3), deltas)
    d = Driver(NO_WRAP)
    d.feed(*readings)
    booked = sum(r.delta_kwh for r in d.latest.values() if r.delta_kwh is not None)
    values = [r.value for r in readings]
    discarded = sum(prev - cur for prev, cur in itertools.pairwise(values) if cur < prev)
    assert booked == pytest.approx(values[-1] - values[0] + discarded, abs=1e-6)
    resets = sum(1 for r in d.latest.values() if Flag.COUNTER_RESET in r.flags)
    assert resets == sum(1 for prev, cur in itertools.pairwise(values) if cur < prev)


@given(st.integers(min_value=1, max_value=40), st.floats(min_value=0.05, max_value=2.0))
def test_rollover_books_the_wrapped_delta(n: int, rate: float) -> None:
    modulus = 100_000.0
    values = [round(modulus - 10.0 + i * rate, 3) % modulus for i in range(n + 1)]
    d = Driver(DeviceRules(max_power_kw=100.0, reorder_horizon_s=10**7, max_window=10_000))
    d.feed(*[reg(T0 + i * 5 * MIN, v) for i, v in enumerate(values)])
    booked = sum(r.delta_kwh for r in d.latest.values() if r.delta_kwh is not None)
    expected = sum((cur - prev) % modulus for prev, cur in itertools.pairwise(values))
    assert booked == pytest.approx(expected, abs=1e-6)
    assert not any(Flag.COUNTER_RESET in r.flags for r in d.latest.values())


def mixed_readings() -> st.SearchStrategy[list[Reading]]:
    reg_values = st.lists(st.floats(min_value=0, max_value=3, allow_nan=False), min_size=1, max_size=25)
    ivl_values = st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=-0.5, max_value=3, allow_nan=False)),
        min_size=1,
        max_size=25,
    )

    @st.composite
    def build(draw: st.DrawFn) -> list[Reading]:
        out: list[Reading] = []
        total = draw(st.floats(min_value=0, max_value=1000))
        for i, step in enumerate(draw(reg_values)):
            if draw(st.booleans()) or i == 0:  # some slots missing: gaps
                total = round(total + step, 3) if draw(st.integers(0, 9)) else 0.5  # rare reset
                out.append(reg(T0 + i * 5 * MIN, total))
        for i, v in enumerate(draw(ivl_values)):
            if draw(st.integers(0, 4)):
                out.append(ivl(T0 + i * 30 * MIN, round(v, 4), channel="B1"))
                if draw(st.integers(0, 6)) == 0:  # a later, better version
                    out.append(
                        ivl(
                            T0 + i * 30 * MIN,
                            round(v + 0.1, 4),
                            channel="B1",
                            quality="A",
                            updated_at_ms=T0 + 10**8,
                        )
                    )
        return out

    return build()


def canonical(d: Driver) -> list[tuple[object, ...]]:
    arrival = {Flag.OUT_OF_ORDER.value, Flag.REVISED.value}
    return [
        (r.event_id, r.ts_start, r.delta_kwh, r.value_kwh, tuple(f for f in r.flags if f not in arrival))
        for r in d.by_ts()
    ]


@settings(max_examples=150)
@given(mixed_readings(), st.randoms(use_true_random=False))
def test_final_records_do_not_depend_on_arrival_order(readings: list[Reading], rnd) -> None:  # type: ignore[no-untyped-def]
    in_order = Driver(WIDE)
    in_order.feed(*sorted(readings, key=lambda r: (r.channel, r.ts_ms, r.updated_at_ms or 0)))
    shuffled = list(readings)
    rnd.shuffle(shuffled)
    any_order = Driver(WIDE)
    any_order.feed(*shuffled)
    assert canonical(any_order) == canonical(in_order)


@settings(max_examples=150)
@given(mixed_readings(), st.randoms(use_true_random=False), st.data())
def test_redelivering_any_subsequence_in_any_order_changes_nothing(
    readings: list[Reading],
    rnd,
    data: st.DataObject,  # type: ignore[no-untyped-def]
) -> None:
    state = DeviceState()
    first = list(readings)
    rnd.shuffle(first)
    for r in first:
        apply(state, r, WIDE)
    before = state.to_bytes()
    again = data.draw(st.lists(st.sampled_from(readings), max_size=len(readings) * 2))
    for r in again:
        result = apply(state, r, WIDE)
        assert result.records == [] and result.anomalies == []
        assert result.status in ("duplicate", "stale")
    assert state.to_bytes() == before


@given(mixed_readings())
def test_revisions_strictly_increase_per_event(readings: list[Reading]) -> None:
    d = Driver(WIDE)
    seen: dict[str, int] = {}
    for r in readings:
        for rec in d.feed(r).records:
            assert rec.revision > seen.get(rec.event_id, -1)
            seen[rec.event_id] = rec.revision
