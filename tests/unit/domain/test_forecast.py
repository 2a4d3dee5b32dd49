"""The online forecaster: codec, resumption, honesty with little history, real-series accuracy."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from aurora_streams.backtest import backtest, load_windows
from aurora_streams.domain.forecast import DeviceForecaster, ForecastConfig

SERIES = Path(__file__).resolve().parents[4] / "shared" / "data" / "series"
STEP = 1_800_000


def wave(i: int) -> float:
    return 1.0 + math.sin(2 * math.pi * (i % 48) / 48) + 0.3 * ((i // 48) % 7 == 5)


def test_no_forecast_before_a_full_season() -> None:
    f = DeviceForecaster(STEP, ForecastConfig(season_days=1))
    for i in range(47):
        f.learn(i * STEP, wave(i))
    assert f.forecast(4) == [] and f.accuracy() == {"scored": 0}
    f.learn(47 * STEP, wave(47))
    assert len(f.forecast(4)) == 4


def test_all_zero_first_day_is_fine() -> None:
    f = DeviceForecaster(STEP, ForecastConfig(season_days=1))
    for i in range(48 * 3):
        f.learn(i * STEP, 0.0 if i < 48 else wave(i))
    assert all(math.isfinite(p.value) for p in f.forecast(48))


def test_codec_round_trip_resumes_exactly() -> None:
    uninterrupted = DeviceForecaster(STEP)
    resumed = DeviceForecaster(STEP)
    for i in range(48 * 20):
        uninterrupted.learn(i * STEP, wave(i))
        resumed.learn(i * STEP, wave(i))
        if i % 97 == 0:  # "restart": serialize, and carry on from the decoded state
            resumed = DeviceForecaster.from_dict(orjson.loads(orjson.dumps(resumed.to_dict())))
    assert resumed.forecast(48) == uninterrupted.forecast(48)
    assert resumed.accuracy() == uninterrupted.accuracy()
    assert len(orjson.dumps(resumed.to_dict())) < 64 * 1024
    with pytest.raises(ValueError):
        DeviceForecaster.from_dict({"v": 99})


def test_gaps_are_filled_and_old_points_ignored() -> None:
    f = DeviceForecaster(STEP, ForecastConfig(season_days=1))
    for i in [*range(100), *range(103, 200)]:
        f.learn(i * STEP, wave(i))
    learned = f.learned
    f.learn(50 * STEP, 99.0)  # older than the last: ignored
    assert f.learned == learned and f.last_ts == 199 * STEP


@pytest.mark.skipif(not SERIES.exists(), reason="the shared series are missing")
def test_day_ahead_accuracy_and_calibration_on_real_series() -> None:
    household = load_windows(SERIES / "nem12_4103794252_E1_30min.csv.gz", window_min=30, suffix="E1")
    result = backtest(household, window_ms=STEP, config=ForecastConfig(), horizons=[1, 48])
    assert result.day_ahead["mae_ratio"] <= 0.85  # the target
    assert 0.85 <= result.day_ahead["coverage"] <= 0.95
    assert result.horizons[48]["ratio"] <= 0.85 and result.state_bytes < 64 * 1024
    solar = load_windows(SERIES / "nem12_redacted_E1B1_5min.csv.gz", window_min=30, suffix="E1")
    result = backtest(solar, window_ms=STEP, config=ForecastConfig(), horizons=[48])
    # Better than the baseline, but not yet at the target: see the notes.
    assert result.day_ahead["mae_ratio"] < 1.0
