"""Forecasts over HTTP and on the forecasts topic after a worker was killed mid-stream: the
restarted worker's model is exactly the one an uninterrupted pass over the same windows
builds, and every published forecast is the one that pass issues at the same origin."""

from __future__ import annotations

import csv
import gzip
import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from aurora_streams.codecs import decode_output
from aurora_streams.domain.forecast import DeviceForecaster, forecast_record
from aurora_streams.domain.timeutil import format_ms
from aurora_streams.simulator import SimMessage
from tests.integration.harness import REPO, Deployment, Worker

SERIES = REPO.parent / "shared" / "data" / "series" / "nem12_4103794252_E1_30min.csv.gz"
TOKEN = "f" * 24
DAYS = 9


def get(w: Worker, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{w.port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return 0, None


@pytest.mark.skipif(not SERIES.exists(), reason="the shared series is missing")
def test_forecast_resumes_exactly_after_sigkill(deployment: Deployment, tmp_path: Path) -> None:
    aest = timezone(timedelta(hours=10))
    with gzip.open(SERIES, "rt", encoding="utf-8") as f:
        rows = [r for _, r in zip(range(DAYS * 48), csv.DictReader(f), strict=False)]
    series = [
        (int(datetime.fromisoformat(r["t_end"]).replace(tzinfo=aest).timestamp() * 1000), float(r["value"]))
        for r in rows
    ]
    msgs = [
        SimMessage(
            b"m1",
            orjson.dumps(
                {
                    "device_id": "m1",
                    "ts": ts,
                    "kind": "interval",
                    "value": v,
                    "unit": "kWh",
                    "interval_s": 1800,
                }
            ),
            ts + 1000,
        )
        for ts, v in series
    ]
    expected = DeviceForecaster(1_800_000)
    issued: dict[int, dict[str, Any]] = {}  # origin -> the uninterrupted model's record there
    for ts, v in series[:-1]:  # the last window is still open
        expected.learn(ts, v)
        record = forecast_record("m1", "E1", expected, 48)
        if record is not None:
            issued[ts] = record
    want = [
        {"ts_end": format_ms(p.ts_end), "value": p.value, "lower": p.lower, "upper": p.upper}
        for p in expected.forecast(6)
    ]
    assert want  # a week of windows: warmed up

    deployment.extra_env.update(
        {
            "AURORA_API_TOKENS": json.dumps({"t": {"token": TOKEN, "roles": ["read"]}}),
            "AURORA_BATCH_MAX": "10",
        }
    )
    deployment.produce(msgs)
    w = deployment.start_worker("a")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # kill while it is learning
        status, body = get(w, "/v1/devices/m1/forecast?horizon=6")
        if status in (200, 404) and body and body.get("learned_windows", 0) >= 150:
            break
        time.sleep(0.1)
    w.kill()
    w = deployment.start_worker("b", datadir=deployment.workdir / "data-a")
    w.wait_ready()
    deadline = time.monotonic() + 90
    while True:
        status, body = get(w, "/v1/devices/m1/forecast?horizon=6")
        if (status == 200 and body["learned_windows"] >= len(series) - 1) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 200 and body["status"] == "ready"
    assert body["learned_windows"] == len(series) - 1
    assert body["points"] == want
    assert body["accuracy"] == expected.accuracy()
    assert "river.time_series.HoltWinters" in body["model"]

    published = [decode_output(r.value) for r in deployment.read(deployment.settings.topic_forecasts)]
    assert published, "no forecasts were published"
    by_id: dict[str, dict[str, Any]] = {}
    for record in published:
        # Replays after the kill republish a forecast with the same id and the same content.
        assert by_id.setdefault(record["forecast_id"], record) == record
        assert record == issued[record["origin_ts"]]
    assert max(r["origin_ts"] for r in published) == series[-2][0]


def test_warming_up_says_so_and_invents_nothing(deployment: Deployment) -> None:
    deployment.extra_env["AURORA_API_TOKENS"] = json.dumps({"t": {"token": TOKEN, "roles": ["read"]}})
    t0 = 1_735_653_600_000
    deployment.produce(
        [
            SimMessage(
                b"m2",
                orjson.dumps(
                    {
                        "device_id": "m2",
                        "ts": t0 + i * 1_800_000,
                        "kind": "interval",
                        "value": 1.0,
                        "unit": "kWh",
                        "interval_s": 1800,
                    }
                ),
                t0,
            )
            for i in range(1, 40)
        ]
    )
    w = deployment.start_worker("w")
    w.wait_ready()
    deadline = time.monotonic() + 30
    while True:
        status, body = get(w, "/v1/devices/m2/forecast")
        if (status == 200 and body["learned_windows"] >= 38) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 200 and body["status"] == "warming_up" and body["points"] == []
    assert body["note"] == "needs 10 more windows before forecasting"
    assert deployment.read(deployment.settings.topic_forecasts, idle_s=1.0) == []  # nothing invented
