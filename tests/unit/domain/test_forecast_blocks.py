"""The forecaster's state stored as a head and blocks (domain.forecast_blocks): what is
written after each epoch rebuilds the exact state, and a window learned costs a block per
array, not the whole state."""

from __future__ import annotations

import random

import pytest

from aurora_streams.domain import forecast, forecast_blocks
from aurora_streams.domain.forecast import DeviceForecaster, ForecastConfig
from aurora_streams.errors import CorruptState

STEP = 1_800_000
T0 = 1_735_653_600_000


def _store(store: dict[str, bytes], blocks: dict[str, bytes | None]) -> None:
    for name, value in blocks.items():
        if value is None:
            store.pop(name, None)
        else:
            store[name] = value


def test_the_header_is_the_forecasters() -> None:
    assert forecast_blocks._HEADER.format == forecast._HEADER.format


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_epochs_of_any_length_store_what_rebuilds_the_state_exactly(seed: int) -> None:
    """Epochs learning one to a few hundred windows, with gaps, through the first season
    (warm-up values become seasonal components) and past every array's capacity."""
    rng = random.Random(seed)
    f = DeviceForecaster(STEP, ForecastConfig(season_days=2, median_days=3))
    store: dict[str, bytes] = {}
    mark = None
    t = T0
    for _ in range(150):
        for _ in range(rng.choice([1, 1, 1, 2, 7, 40])):
            t += STEP * rng.choice([1] * 30 + [3, 500])
            f.learn(t, rng.random() * 2)
        state = f.to_bytes()
        head, blocks = forecast_blocks.split(state, mark)
        _store(store, blocks)
        mark = forecast_blocks.mark_of(state)
        assert forecast_blocks.join(head, store.get) == state
        assert set(forecast_blocks.block_names(head)) <= set(store)
        if f.hw_ready:  # the warm-up blocks went with the first season
            assert not any(name.startswith("f") for name in store)
    assert f.hw_ready and f.learned > 2 * f.season


def test_a_window_learned_writes_a_block_per_array_not_the_state() -> None:
    f = DeviceForecaster(STEP)
    for i in range(48 * 21):  # three weeks: every array full
        f.learn(T0 + i * STEP, (i % 48) / 10)
    before = f.to_bytes()
    f.learn(T0 + 48 * 21 * STEP, 1.0)
    head, blocks = forecast_blocks.split(f.to_bytes(), forecast_blocks.mark_of(before))
    assert sorted(name[0] for name in blocks) == ["h", "p", "s"]
    written = len(head) + sum(len(v or b"") for v in blocks.values())
    assert written < 1_000 < 9_000 < len(before)


def test_a_missing_or_stale_block_is_refused() -> None:
    f = DeviceForecaster(STEP, ForecastConfig(season_days=1))
    for i in range(100):
        f.learn(T0 + i * STEP, 1.0)
    head, blocks = forecast_blocks.split(f.to_bytes(), None)
    store = {k: v for k, v in blocks.items() if v is not None}
    name = forecast_blocks.block_names(head)[-1]
    with pytest.raises(CorruptState, match="missing"):
        forecast_blocks.join(head, {k: v for k, v in store.items() if k != name}.get)
    f.learn(T0 + 100 * STEP, 2.0)
    newer_head, _ = forecast_blocks.split(f.to_bytes(), forecast_blocks.mark_of(head))
    with pytest.raises(CorruptState, match="another head"):
        forecast_blocks.join(newer_head, store.get)  # the new blocks were not stored
    with pytest.raises(CorruptState):
        forecast_blocks.join(f.to_bytes(), store.get)  # a whole state is not a head
