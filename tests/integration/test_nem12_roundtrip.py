"""NEM12 files -> `aurora-streams ingest nem12` -> broker -> worker -> normalized topic:
the per-channel totals on the topic equal the file's."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import orjson
import pytest

from aurora_streams.ingest.nem12 import Nem12Reader
from aurora_streams.ingest.summary import IngestSummary
from tests.integration.harness import REPO, Deployment, latest_by

DATA = REPO.parent / "shared" / "data" / "nem12"
FILES = {
    "5-minute": (DATA / "nem-reader" / "unzipped" / "Example_NEM12_month_solar.csv", 5),
    "10-minute": (DATA / "nem-reader" / "unzipped" / "Example_NEM12_different_interval_length.csv", 10),
    # A real household, two years of half-hours (35,184 readings).
    "2-year household": (DATA / "aemo-gem" / "NEM12-41037942528.20110709-20130710.csv", 30),
    # NEM13 whose register reads differ by 99,005.1 where the Quantity is 994.9 (booked as
    # the register difference before).
    "NEM13 Quantity": (DATA / "nem-reader" / "nem13" / "nem13#SCENARIO13#TCAUSTM#NEMMCO.zip", 0),
}


@pytest.mark.skipif(not DATA.exists(), reason=f"the shared NEM12 corpus is not at {DATA}")
@pytest.mark.parametrize("label", list(FILES))
def test_file_round_trips_with_the_same_channel_totals(deployment: Deployment, label: str) -> None:
    path, interval_min = FILES[label]
    expected = IngestSummary()
    for day in Nem12Reader.from_path(path, "lenient"):
        expected.add(day)
    assert interval_min in {c.interval_min for c in expected.channels.values()}

    out = subprocess.run(
        [sys.executable, "-m", "aurora_streams", "ingest", "nem12", "--lenient", "--json", str(path)],
        env=deployment.env(), cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = orjson.loads(out.stdout)
    assert summary["messages"] > 0 and summary["readings"] == expected.readings

    deployment.start_worker("nem12").wait_ready()
    s = deployment.settings
    energy = {k: c for k, c in expected.channels.items() if c.unit is not None}
    n_expected = summary["published_readings"]
    records = deployment.read(s.topic_normalized, until=lambda r: len(r) >= n_expected, idle_s=2.0)
    latest = latest_by([r.value for r in records if r.value], "event_id")
    assert len(latest) == n_expected
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for rec in latest.values():
        totals[(rec["device_id"], rec["channel"])] += rec["delta_kwh"]
    assert set(totals) == set(energy)
    # Every record says which way its energy flows: the suffix's E/B, or NEM13's "E".
    assert {rec["direction"] for rec in latest.values()} <= {"consumption", "generation"}
    for key, channel in energy.items():
        assert totals[key] == pytest.approx(channel.total, rel=1e-9, abs=1e-6), key
    # Nothing was dead-lettered.
    assert deployment.read(s.topic_dlq, idle_s=0.5) == []
