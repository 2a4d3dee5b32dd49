"""End to end on the embedded broker and a real PostgreSQL: simulator -> worker -> sink."""

from __future__ import annotations

import time
from collections import defaultdict

import asyncpg
import orjson
import pytest

from aurora_streams.codecs import decode_output
from aurora_streams.devpostgres import LocalPostgres
from aurora_streams.simulator import SimConfig, SimMessage, generate, produce
from tests.integration.harness import Deployment, latest_by, log_ends, run_async, wait_committed
from tests.integration.test_pipeline import FLEET


async def _query(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def query(url: str, sql: str) -> list[asyncpg.Record]:
    return run_async(_query(url, sql))


def wait_rows(url: str, sql: str, target: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        try:
            n = query(url, sql)[0][0]
        except (OSError, asyncpg.PostgresError):
            n = -1
        if n >= target:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{sql}: {n} < {target}")


def assert_db_matches_topic(dep: Deployment, url: str, raw_count: int) -> None:
    s = dep.settings
    norm = [r.value for r in dep.read(s.topic_normalized) if r.value]
    expected = latest_by(norm, "event_id")
    wait_rows(url, "SELECT count(*) FROM readings", len(expected))
    wait_rows(url, "SELECT count(*) FROM raw_audit", raw_count)
    rows = query(url, "SELECT event_id, revision, delta_kwh, flags, device_id, channel FROM readings")
    got = {r["event_id"]: (r["revision"], r["delta_kwh"], list(r["flags"])) for r in rows}
    assert got == {e: (d["revision"], d["delta_kwh"], d["flags"]) for e, d in expected.items()}
    # Per-device consumption in the database equals what the normalized topic says.
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for d in expected.values():
        if d["delta_kwh"] is not None:
            sums[(d["device_id"], d["channel"])] += d["delta_kwh"]
    db_sums = {
        (r["device_id"], r["channel"]): r["kwh"]
        for r in query(
            url,
            "SELECT device_id, channel, sum(delta_kwh) AS kwh FROM readings"
            " WHERE delta_kwh IS NOT NULL GROUP BY 1, 2",
        )
    }
    assert db_sums.keys() == sums.keys()
    for key, value in sums.items():
        assert db_sums[key] == pytest.approx(value, rel=1e-9, abs=1e-9)
    anomalies = {decode_output(r.value)["anomaly_id"] for r in dep.read(s.topic_anomalies) if r.value}
    assert query(url, "SELECT count(*) FROM anomalies")[0][0] == len(anomalies)
    assert query(url, "SELECT count(*) FROM raw_audit")[0][0] == raw_count


def test_simulator_to_worker_to_database(deployment: Deployment, database: str) -> None:
    dep = deployment
    dep.extra_env["AURORA_DATABASE_URL"] = database
    sent = dep.produce(generate(FLEET, limit=4000))
    dep.start_worker("sink").wait_ready()
    assert_db_matches_topic(dep, database, sent)
    # The sink and the normalize agent both read the raw topic: its offsets are committed
    # once both have stored every message.
    wait_committed(dep, dep.settings.topic_raw, log_ends(dep.read(dep.settings.topic_raw)))
    # The 15-minute view aggregates what is stored.
    total = query(database, "SELECT sum(kwh) FROM readings_15m")[0][0]
    assert total == pytest.approx(
        query(database, "SELECT sum(delta_kwh) FROM readings WHERE unit='kWh'")[0][0]
    )


def test_postgres_down_mid_stream(deployment: Deployment, database: str, postgres: LocalPostgres) -> None:
    dep = deployment
    dep.extra_env["AURORA_DATABASE_URL"] = database
    dep.extra_env["AURORA_SINK_MAX_BACKOFF_S"] = "2"
    messages = list(generate(SimConfig(**{**FLEET.__dict__, "seed": 31}), limit=6000))
    first = dep.produce(messages[:3000])
    w = dep.start_worker("sink")
    w.wait_ready()
    wait_rows(database, "SELECT count(*) FROM raw_audit", first)
    postgres.stop()
    try:
        dep.produce(messages[3000:])  # arrives while the database is down
        time.sleep(12)  # several retries at the 2 s backoff cap
    finally:
        postgres.start()
    assert_db_matches_topic(dep, database, len(messages))
    retries = [line for line in w.metrics().splitlines() if line.startswith("aurora_sink_retries_total ")]
    assert retries and float(retries[0].split()[-1]) > 0


def test_row_the_database_refuses_goes_to_dlq(deployment: Deployment, database: str) -> None:
    dep = deployment
    dep.extra_env["AURORA_DATABASE_URL"] = database
    s = dep.settings

    def record(event: str, channel: str, minute: int) -> bytes:
        return orjson.dumps({
            "event_id": event, "device_id": "m1", "channel": channel, "kind": "interval",
            "ts_start": f"2025-01-01T00:{minute:02d}:00.000Z",
            "ts_end": f"2025-01-01T00:{minute + 5:02d}:00.000Z",
            "value_kwh": 1.0, "register_kwh": None, "delta_kwh": 1.0, "unit": "kWh", "quality": "A",
            "method": None, "reason_code": None, "flags": [], "revision": 0, "updated_at": None,
            "source": None,
            "ingested_at": "2025-01-01T00:30:05.000Z", "original_value": 1.0, "original_unit": "kWh",
            "interval_s": 300,
        })  # fmt: skip

    bad = record("bad", "E-1", 0)  # violates the channel CHECK constraint
    msgs = [SimMessage(b"m1", record("good1", "E1", 0), 0), SimMessage(b"m1", bad, 0),
            SimMessage(b"m1", record("good2", "E1", 10), 0)]  # fmt: skip
    produce(iter(msgs), bootstrap=dep.bootstrap, topic=s.topic_normalized, progress=False)
    dep.start_worker("sink").wait_ready()
    dlq = dep.read(s.topic_dlq, until=lambda r: len(r) >= 1)
    [letter] = [decode_output(r.value) for r in dlq if r.value]
    assert letter["error_reason"] == "db_rejected" and letter["error_class"] == "CheckViolationError"
    assert "readings_channel_check" in letter["error_message"] and letter["original_value"] == bad
    assert letter["source_topic"] == s.topic_normalized
    wait_rows(database, "SELECT count(*) FROM readings", 2)
    assert sorted(r["event_id"] for r in query(database, "SELECT event_id FROM readings")) == [
        "good1",
        "good2",
    ]
