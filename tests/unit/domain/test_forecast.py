"""The online forecaster: codec, resumption, honesty with little history, real-series accuracy."""

from __future__ import annotations

import hashlib
import math
import tracemalloc
from pathlib import Path

import orjson
import pytest

from aurora_streams.backtest import backtest, load_windows
from aurora_streams.codecs import decode_output, encode_forecast
from aurora_streams.domain.forecast import DeviceForecaster, ForecastConfig, forecast_record
from aurora_streams.errors import CorruptState

SERIES = Path(__file__).resolve().parents[4] / "shared" / "data" / "series"
STEP = 1_800_000
T0 = 1_735_653_600_000


def wave(i: int) -> float:
    return 1.0 + math.sin(2 * math.pi * (i % 48) / 48) + 0.3 * ((i // 48) % 7 == 5)


def test_no_forecast_before_a_full_day_then_holt_winters_joins_after_a_season() -> None:
    f = DeviceForecaster(STEP)  # weekly season
    for i in range(47):
        f.learn(i * STEP, wave(i))
    assert f.forecast(4) == [] and f.accuracy() == {"scored": 0}
    assert f.status_note() == "needs 1 more windows before forecasting"
    assert forecast_record("d", "E1", f, 48) is None
    f.learn(47 * STEP, wave(47))
    # After one day: the robust member alone (slot median and yesterday agree on day one).
    assert [p.value for p in f.forecast(3)] == [wave(48), wave(49), wave(50)]
    assert f.active == "robust_median" and not f.hw_ready
    for i in range(48, 48 * 7):
        f.learn(i * STEP, wave(i))
    assert f.hw_ready
    for i in range(48 * 7, 48 * 14):
        f.learn(i * STEP, wave(i))
    members = f.accuracy()["members"]
    assert set(members) == {"holt_winters", "robust_median"}
    assert members["holt_winters"]["scored"] < members["robust_median"]["scored"]


def test_published_member_is_the_one_with_smaller_recent_error() -> None:
    f = DeviceForecaster(STEP, ForecastConfig(season_days=1))
    for i in range(48 * 10):
        f.learn(i * STEP, wave(i))
    err, w = f.recent_err, f.recent_w
    better = "holt_winters" if err[0] / w[0] < err[1] / w[1] else "robust_median"
    assert f.active == better
    f.recent_err = [err[1] / w[1] * w[0] * 2, err[1]]  # make Holt-Winters look twice as bad
    assert f.active == "robust_median"
    hw_points = [float(p) for p in f.model.forecast(4)]
    assert [p.value for p in f.forecast(4)] != hw_points
    f.recent_err = [0.0, err[1]]
    assert f.active == "holt_winters" and [p.value for p in f.forecast(4)] == hw_points


def test_robust_member_is_the_median_of_its_three_parts() -> None:
    f = DeviceForecaster(STEP, ForecastConfig(season_days=1, median_days=3))
    values = [float(i // 48 * 10 + i % 48) for i in range(48 * 4)]  # each day 10 higher
    for i, v in enumerate(values):
        f.learn(i * STEP, v)
    hw = float(f.model.forecast(1)[0])
    # Next slot (slot 0 of day 5): last three days' slot 0 are 10, 20, 30; yesterday's is 30.
    assert f._slot_median(1) == 20.0 and f._naive(1) == 30.0
    assert f._robust(1, hw) == sorted([20.0, 30.0, hw])[1]
    # Two days ahead the same slot: the newest known day is still the last one.
    assert f._naive(49) == 30.0 and f._slot_median(49) == 20.0


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
    with pytest.raises(CorruptState):
        DeviceForecaster.from_dict({"v": 99})


@pytest.mark.parametrize("windows", [0, 1, 47, 48, 48 * 7, 48 * 7 + 1, 48 * 20])
def test_binary_codec_resumes_bit_for_bit_at_any_stage(windows: int) -> None:
    """Version 3 (to_bytes) through warm-up, the first day, the first season and after:
    decoding and going on equals never stopping, to the last bit of every number."""
    uninterrupted = DeviceForecaster(STEP)
    for i in range(windows):
        uninterrupted.learn(T0 + i * STEP, wave(i) if i % 50 else 0.0)
    resumed = DeviceForecaster.from_bytes(uninterrupted.to_bytes())
    assert resumed.to_dict() == uninterrupted.to_dict()
    for i in range(windows, windows + 60):
        uninterrupted.learn(T0 + i * STEP, wave(i))
        resumed.learn(T0 + i * STEP, wave(i))
    assert resumed.to_bytes() == uninterrupted.to_bytes()
    assert resumed.forecast(48) == uninterrupted.forecast(48)


def test_binary_codec_is_smaller_than_the_json_and_reads_it() -> None:
    f = DeviceForecaster(STEP)
    for i in range(48 * 20):  # full: a season of components, 14 days of history
        f.learn(T0 + i * STEP, wave(i))
    json_state = orjson.dumps(f.to_dict())
    assert len(f.to_bytes()) < 10 * 1024 < len(json_state) // 2
    # States stored before version 3 are JSON: read, and rewritten as version 3.
    assert DeviceForecaster.from_bytes(json_state).to_bytes() == f.to_bytes()


def test_version_3_bytes_are_pinned() -> None:
    """The stored format (version 3) is a contract with every table written so far: the
    digest was taken from the encoder before the decoded forecaster moved its history and
    pending forecasts from deques to arrays (session 22)."""
    f = DeviceForecaster(STEP)
    for i in range(48 * 20):
        f.learn(T0 + i * STEP, wave(i) if i % 50 else 0.0)
    state = f.to_bytes()
    assert len(state) == 9482
    assert hashlib.sha256(state).hexdigest() == (
        "74bc0fbe1daf4f559933218982d98471450a52f0c8034daeaac2d05ff865186f"
    )


def test_a_decoded_forecaster_holds_its_numbers_as_c_doubles() -> None:
    """An epoch holds up to a thousand decoded forecasters: their history and day-ahead
    forecasts stay bounded and cost 8 bytes a number (as deques of Python floats they cost
    about 32, and a decoded state was 4.5 times its encoding; now under 2.5)."""
    f = DeviceForecaster(STEP)
    for i in range(48 * 30):
        f.learn(T0 + i * STEP, wave(i))
    assert len(f.history) == f.history_max == 48 * 14
    assert len(f.pending) == 3 * 48
    state = f.to_bytes()
    tracemalloc.start()
    try:
        decoded = [DeviceForecaster.from_bytes(state) for _ in range(20)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded[0].to_bytes() == state
    assert held / 20 < 2.5 * len(state)


@pytest.mark.parametrize("bad", [b"", b"\x07" + bytes(300), b"\x03" + bytes(10)])
def test_binary_codec_refuses_what_it_cannot_read(bad: bytes) -> None:
    with pytest.raises(CorruptState):
        DeviceForecaster.from_bytes(bad)


def test_binary_codec_refuses_a_body_that_does_not_match_its_header() -> None:
    f = DeviceForecaster(STEP)
    for i in range(10):
        f.learn(T0 + i * STEP, wave(i))
    with pytest.raises(CorruptState, match="does not match"):
        DeviceForecaster.from_bytes(f.to_bytes()[:-8])


def test_version_1_state_is_upgraded() -> None:
    f = DeviceForecaster(STEP, ForecastConfig(season_days=1))
    for i in range(48 * 3):
        f.learn(i * STEP, wave(i))
    doc = f.to_dict()
    # The v1 layout: Holt-Winters alone, six config numbers, one pending forecast per slot.
    v1 = {**doc, "v": 1, "config": doc["config"][:6], "pending": [p[1] for p in doc["pending"]]}
    v1["history"] = v1["history"][-48:]
    del v1["members"]
    upgraded = DeviceForecaster.from_dict(v1)
    assert upgraded.learned == f.learned and upgraded.forecast(4)
    upgraded.learn(48 * 3 * STEP, wave(48 * 3))
    again = DeviceForecaster.from_dict(orjson.loads(orjson.dumps(upgraded.to_dict())))
    assert again.to_dict() == upgraded.to_dict() and again.to_dict()["v"] == 2
    assert DeviceForecaster.from_bytes(orjson.dumps(v1)).to_dict() == DeviceForecaster.from_dict(v1).to_dict()


def test_forecast_record_is_deterministic_and_encodes_both_ways() -> None:
    f = DeviceForecaster(STEP, ForecastConfig(season_days=1))
    t0 = 1_735_653_600_000
    for i in range(48 * 3):
        f.learn(t0 + i * STEP, wave(i))
    record = forecast_record("m-1", "E1", f, 48)
    assert record is not None
    assert record["forecast_id"] == f"m-1|E1|{f.last_ts}"
    points = f.forecast(48)
    assert record["values"] == [round(p.value, 4) for p in points] and len(points) == 48
    assert record["band"] == round(f.err_q90, 4)
    # The published band gives the same interval as the model's points, to the rounding.
    for value, point in zip(record["values"], points, strict=True):
        assert abs(max(0.0, value - record["band"]) - point.lower) < 1e-4
        assert abs(value + record["band"] - point.upper) < 1e-4
    resumed = DeviceForecaster.from_dict(orjson.loads(orjson.dumps(f.to_dict())))
    assert forecast_record("m-1", "E1", resumed, 48) == record
    for encoding in ("json", "avro"):
        assert decode_output(encode_forecast(record, encoding)) == record  # type: ignore[arg-type]


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
    assert result.day_ahead["mae_ratio"] <= 0.85
    assert 0.85 <= result.day_ahead["coverage"] <= 0.95
    export = load_windows(SERIES / "nem12_redacted_E1B1_5min.csv.gz", window_min=30, suffix="B1")
    result = backtest(export, window_ms=STEP, config=ForecastConfig(), horizons=[48])
    # Better than the baseline, not yet at the target (0.87): solar export follows the
    # weather, which no model of the meter's own history foresees a day ahead.
    assert result.day_ahead["mae_ratio"] < 0.9


def test_river_holt_winters_loads_without_scipy_and_is_rivers_class() -> None:
    """The worker's River import leaves out ``river.time_series.metrics`` (and scipy, numpy:
    ~80 MB of RSS); a later full import of the package binds the same class, and the
    forecaster behaves as with it. In a fresh interpreter: this one may have imported River."""
    import subprocess
    import sys

    probe = """
import sys
from aurora_streams.domain import forecast
forecast.preload()
lean = sorted(m for m in ("scipy", "numpy", "river.metrics", "river.time_series") if m in sys.modules)
f = forecast.DeviceForecaster(3_600_000)
from river.time_series import HoltWinters
print(lean, forecast._holt_winters() is HoltWinters, type(f.model) is HoltWinters)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "True", "True"]
