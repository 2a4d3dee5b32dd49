"""Sink benchmark: rows per second into PostgreSQL, with a baseline in the same run.

Run from the repository root (starts its own PostgreSQL from Debian's packages):

    .venv/bin/python bench/sink.py [--rows 200000] [--batch 5000] [--runs 3]

* ``sink``: :class:`TimescaleWriter` storing batches of normalized readings (binary COPY
  into staging + one upsert per batch, one transaction per batch), as the sink agent does.
* ``replay``: the same rows again (every upsert finds its row and skips it).
* ``baseline_copy``: plain binary COPY of the same rows into an unindexed table with no
  upsert: the ceiling of getting bytes into this server from asyncpg.

Results go to ``bench/results/sink-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import asyncpg
from common import ROOT, free_port, write_report

from aurora_streams.devpostgres import LocalPostgres
from aurora_streams.processing import TopicNames, build_processor, new_state
from aurora_streams.settings import Settings
from aurora_streams.simulator import SimConfig, generate
from aurora_streams.sinks.migrate import migrate
from aurora_streams.sinks.timescale import READING_COLUMNS, SinkBatch, SinkMessage, TimescaleWriter

T = TopicNames()


def normalized_messages(rows: int) -> list[SinkMessage]:
    p = build_processor(Settings())
    states: dict[str, Any] = {}
    out: list[SinkMessage] = []
    cfg = SimConfig(devices=2000, seed=2, encoding="json", solar_share=0.3)
    for i, m in enumerate(generate(cfg)):
        for o in p.process(m.key, m.value, partition=0, offset=i, timestamp_ms=m.timestamp_ms, states=states,
                           load=new_state):  # fmt: skip
            if o.topic == T.normalized:
                out.append(SinkMessage(o.topic, 0, len(out), o.key, o.value, m.timestamp_ms))
        if len(out) >= rows:
            return out[:rows]
    return out


async def run_once(url: str, batches: list[SinkBatch], rows: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    await conn.execute(
        "DROP TABLE IF EXISTS readings, anomalies, raw_audit, schema_migrations, baseline CASCADE"
    )
    await migrate(conn)
    writer = TimescaleWriter(url)
    started = time.perf_counter()
    for b in batches:
        await writer.store(b)
    sink_s = time.perf_counter() - started
    assert writer.fallbacks == 0, "the bulk path must not fall back to row-by-row writes"
    started = time.perf_counter()
    for b in batches:
        await writer.store(b)
    replay_s = time.perf_counter() - started
    await writer.close()
    assert await conn.fetchval("SELECT count(*) FROM readings") > 0
    await conn.execute("CREATE TABLE baseline (LIKE readings INCLUDING DEFAULTS)")
    started = time.perf_counter()
    for b in batches:
        await conn.copy_records_to_table(
            "baseline", records=[r for _, r in b.readings], columns=READING_COLUMNS
        )
    copy_s = time.perf_counter() - started
    await conn.close()
    return {
        "sink_rows_per_s": rows / sink_s,
        "replay_rows_per_s": rows / replay_s,
        "baseline_copy_rows_per_s": rows / copy_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    msgs = normalized_messages(args.rows)
    batches = [
        SinkBatch.build(msgs[i : i + args.batch], normalized=T.normalized, anomalies=T.anomalies, raw=T.raw)
        for i in range(0, len(msgs), args.batch)
    ]
    pg = LocalPostgres.in_tempdir(free_port(), durable=True)
    pg.start()
    runs = []
    try:
        for i in range(args.runs):
            r = asyncio.run(run_once(pg.url, batches, len(msgs)))
            runs.append(r)
            line = ", ".join(f"{k.removesuffix('_rows_per_s')} {v:,.0f} rows/s" for k, v in r.items())
            print(f"run {i + 1}: {line}", flush=True)
    finally:
        pg.destroy()
    summary = {
        key: {"min": min(r[key] for r in runs), "median": statistics.median(r[key] for r in runs)}
        for key in runs[0]
    }
    report = {
        "workload": {
            "rows": len(msgs),
            "batch": args.batch,
            "server": "Debian PostgreSQL, fsync on, loopback",
        },
        "summary": summary,
        "runs": runs,
    }
    path = write_report("sink", "sink rows/s into PostgreSQL (issue 3)", report)
    print(json.dumps(summary, indent=2))
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
