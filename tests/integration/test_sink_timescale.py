"""Hypertables, compression and continuous aggregates on real TimescaleDB (testcontainers).

Needs a Docker engine; none runs on this project's machines, where the test skips with
that reason. The plain-PostgreSQL path is covered by test_sink_store and test_sink_e2e.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from aurora_streams.sinks.migrate import migrate
from aurora_streams.sinks.timescale import SinkBatch, TimescaleWriter
from tests.integration.test_sink_store import T, normalized, one_batch, outputs


def _docker_reason() -> str | None:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__}); TimescaleDB runs only in a container"
    return None


@pytest.fixture(scope="module")
def timescale_url() -> Iterator[str]:
    reason = _docker_reason()
    if reason:
        pytest.skip(reason)
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("timescale/timescaledb:2.17.2-pg16", driver=None) as pg:
        yield pg.get_connection_url()


def test_hypertables_and_continuous_aggregates(timescale_url: str) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(timescale_url)
        try:
            applied = await migrate(conn)
            assert "0002_timescale" in applied
            hypertables = {r["hypertable_name"] for r in await conn.fetch(
                "SELECT hypertable_name FROM timescaledb_information.hypertables")}  # fmt: skip
            assert {"readings", "raw_audit"} <= hypertables
            caggs = {r["view_name"] for r in await conn.fetch(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates")}  # fmt: skip
            assert {"readings_15m", "readings_1h", "readings_1d"} <= caggs

            writer = TimescaleWriter(timescale_url)
            msgs = outputs(n=1500)
            await writer.store(
                SinkBatch.build(msgs, normalized=T.normalized, anomalies=T.anomalies, raw=T.raw)
            )
            for view in ("readings_15m", "readings_1h", "readings_1d"):
                await conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
                assert await conn.fetchval(f"SELECT sum(kwh) FROM {view}") == pytest.approx(
                    await conn.fetchval("SELECT sum(delta_kwh) FROM readings WHERE unit = 'kWh'")
                )
            # A late revision changes the stored row; the next refresh re-aggregates its bucket.
            await writer.store(one_batch(normalized("late", 0, 1.0)))
            await writer.store(one_batch(normalized("late", 1, 4.0)))
            await conn.execute("CALL refresh_continuous_aggregate('readings_15m', NULL, NULL)")
            assert (
                await conn.fetchval(
                    "SELECT kwh FROM readings_15m WHERE device_id = 'm1' AND bucket = '2025-01-01T00:30:00Z'"
                )
                == 4.0
            )
            await writer.close()
        finally:
            await conn.close()

    asyncio.run(scenario())
