"""The TimescaleDB writer against a real PostgreSQL: upsert rules, replays, refusals, outages."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import orjson
import pytest

from aurora_streams.devpostgres import LocalPostgres
from aurora_streams.processing import TopicNames, build_processor, new_state
from aurora_streams.settings import Settings
from aurora_streams.simulator import SimConfig, generate
from aurora_streams.sinks.migrate import migrate, migrations
from aurora_streams.sinks.timescale import SinkBatch, SinkMessage, TimescaleWriter
from tests.integration.harness import run_async

T = TopicNames()
READINGS_SNAPSHOT = "SELECT * FROM readings ORDER BY device_id, channel, ts_end"
ANOMALIES_SNAPSHOT = "SELECT * FROM anomalies ORDER BY anomaly_id"


def outputs(n: int = 3000, seed: int = 3) -> list[SinkMessage]:
    """Raw, normalized and anomaly records as the worker would produce them."""
    p = build_processor(Settings())
    states: dict[str, Any] = {}
    msgs: list[SinkMessage] = []
    offsets = {T.normalized: 0, T.anomalies: 0, T.dlq: 0}
    cfg = SimConfig(
        devices=40, seed=seed, late_rate=0.03, estimate_rate=0.02, reset_rate=0.01, encoding="json"
    )
    for i, m in enumerate(generate(cfg, limit=n)):
        msgs.append(SinkMessage(T.raw, 0, i, m.key, m.value, m.timestamp_ms))
        for out in p.process(m.key, m.value, partition=0, offset=i, timestamp_ms=m.timestamp_ms,
                             states=states, load=new_state):  # fmt: skip
            if out.topic != T.dlq:
                msgs.append(SinkMessage(out.topic, 0, offsets[out.topic], out.key, out.value, m.timestamp_ms))
                offsets[out.topic] += 1
    return msgs


def batches(msgs: list[SinkMessage], size: int) -> list[SinkBatch]:
    return [
        SinkBatch.build(msgs[i : i + size], normalized=T.normalized, anomalies=T.anomalies, raw=T.raw)
        for i in range(0, len(msgs), size)
    ]


async def snapshot(url: str) -> tuple[list[Any], list[Any], int]:
    conn = await asyncpg.connect(url)
    try:
        strip = lambda rows: [tuple(v for k, v in r.items() if k != "stored_at") for r in rows]  # noqa: E731
        return (strip(await conn.fetch(READINGS_SNAPSHOT)), strip(await conn.fetch(ANOMALIES_SNAPSHOT)),
                await conn.fetchval("SELECT count(*) FROM raw_audit"))  # fmt: skip
    finally:
        await conn.close()


async def store_all(url: str, items: list[SinkBatch], *, expect_fallback: bool = False) -> list[Any]:
    writer = TimescaleWriter(url)
    rejected = []
    try:
        for b in items:
            rejected += await writer.store(b)
    finally:
        await writer.close()
    # Good batches take the bulk path (COPY + one upsert), never the row-by-row fallback.
    assert writer.fallbacks == (
        1 if rejected and any(r.error_class != "JSONDecodeError" for r in rejected) else 0
    )
    return rejected


def test_migrations_are_versioned_and_idempotent(database: str) -> None:
    async def check() -> None:
        conn = await asyncpg.connect(database)
        try:
            assert await migrate(conn) == []  # the fixture applied them already
            versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
            assert versions == [m.version for m in migrations() if not m.timescale_only]
            tables = {
                r["tablename"]
                for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            }
            assert {"readings", "anomalies", "raw_audit", "schema_migrations"} <= tables
        finally:
            await conn.close()

    run_async(check())


def test_replaying_everything_twice_leaves_tables_as_one_pass(database: str) -> None:
    msgs = outputs()
    assert run_async(store_all(database, batches(msgs, 700))) == []
    once = run_async(snapshot(database))
    assert len(once[0]) > 2000 and len(once[1]) > 0 and once[2] == 3000
    # A full replay in other batch sizes, then a shuffled partial replay.
    run_async(store_all(database, batches(msgs, 313)))
    shuffled = random.Random(1).sample(msgs, len(msgs) // 2)
    run_async(store_all(database, batches(shuffled, 500)))
    assert run_async(snapshot(database)) == once


def normalized(
    event: str, revision: int, delta: float, *, updated_at: str | None = None, channel: str = "E1"
) -> bytes:
    return orjson.dumps({
        "event_id": event, "device_id": "m1", "channel": channel, "kind": "interval",
        "ts_start": "2025-01-01T00:00:00.000Z", "ts_end": "2025-01-01T00:30:00.000Z", "value_kwh": delta,
        "register_kwh": None, "delta_kwh": delta, "unit": "kWh", "quality": "A", "method": None,
        "reason_code": None, "flags": [], "revision": revision, "updated_at": updated_at, "source": None,
        "ingested_at": "2025-01-01T00:30:05.000Z", "original_value": delta, "original_unit": "kWh",
        "interval_s": 1800,
    })  # fmt: skip


def one_batch(*values: bytes) -> SinkBatch:
    msgs = [SinkMessage(T.normalized, 0, i, b"m1", v, 0) for i, v in enumerate(values)]
    return SinkBatch.build(msgs, normalized=T.normalized, anomalies=T.anomalies, raw=T.raw)


async def stored_delta(url: str) -> tuple[int, float]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT revision, delta_kwh FROM readings WHERE device_id = 'm1'")
        return row["revision"], row["delta_kwh"]
    finally:
        await conn.close()


@pytest.mark.parametrize("same_batch", [True, False])
def test_older_revision_never_overwrites_newer(database: str, same_batch: bool) -> None:
    newer, older = normalized("e", 2, 2.0), normalized("e", 1, 1.0)
    items = [one_batch(newer, older)] if same_batch else [one_batch(newer), one_batch(older)]
    run_async(store_all(database, items))
    assert run_async(stored_delta(database)) == (2, 2.0)
    run_async(store_all(database, [one_batch(normalized("e", 3, 3.0))]))
    assert run_async(stored_delta(database)) == (3, 3.0)


def test_equal_revision_newer_version_wins_and_ties_keep_the_first(database: str) -> None:
    run_async(store_all(database, [one_batch(normalized("e", 0, 1.0, updated_at="2025-01-02T00:00:00Z"))]))
    run_async(store_all(database, [one_batch(normalized("e", 0, 5.0))]))  # same revision, no version: ignored
    assert run_async(stored_delta(database)) == (0, 1.0)
    run_async(store_all(database, [one_batch(normalized("e", 0, 1.5, updated_at="2025-01-03T00:00:00Z"))]))
    assert run_async(stored_delta(database)) == (0, 1.5)


def test_refused_rows_come_back_with_the_database_message(database: str) -> None:
    bad = normalized("bad", 0, 1.0, channel="E 1")  # breaks the channel CHECK constraint
    batch = one_batch(normalized("e", 0, 1.0), bad, b"{not json")
    rejected = run_async(store_all(database, [batch], expect_fallback=True))
    assert sorted(r.message.offset for r in rejected) == [1, 2]
    by_offset = {r.message.offset: r for r in rejected}
    assert (
        by_offset[1].error_class == "CheckViolationError"
        and "readings_channel_check" in by_offset[1].error_message
    )
    assert by_offset[1].message.value == bad
    assert run_async(stored_delta(database)) == (0, 1.0)


def test_store_waits_out_an_outage(postgres: LocalPostgres, database: str) -> None:
    msgs = outputs(n=600, seed=9)

    async def scenario() -> None:
        writer = TimescaleWriter(database, max_backoff_s=1.0)
        await writer.store(batches(msgs[:100], 100)[0])
        postgres.stop()
        task = asyncio.create_task(writer.store(batches(msgs[100:], 10_000)[0]))
        await asyncio.sleep(3)
        assert not task.done()  # still retrying, nothing acknowledged
        postgres.start()
        assert await asyncio.wait_for(task, 60) == []
        await writer.close()

    run_async(scenario())
    readings, _, raw = run_async(snapshot(database))
    events = {orjson.loads(m.value)["event_id"] for m in msgs if m.topic == T.normalized and m.value}
    assert raw == 600 and len(readings) == len(events)


def test_direction_is_stored_and_records_from_before_it_store_null(database: str) -> None:
    declared = orjson.loads(normalized("g", 0, 1.0, channel="41"))
    declared["direction"] = "generation"
    old = normalized("e", 0, 1.0)  # a record written before the field existed: no key at all
    assert "direction" not in orjson.loads(old)
    run_async(store_all(database, [one_batch(orjson.dumps(declared), old)]))

    async def directions() -> dict[str, Any]:
        conn = await asyncpg.connect(database)
        try:
            rows = await conn.fetch("SELECT channel, direction FROM readings")
            return {r["channel"]: r["direction"] for r in rows}
        finally:
            await conn.close()

    assert run_async(directions()) == {"41": "generation", "E1": None}
