"""The TimescaleDB (or plain PostgreSQL) store behind the sink agent, through asyncpg.

A batch is written in one transaction: each kind of row is COPYed (binary) into a
per-connection temporary staging table, then moved with one upsert statement:

* ``readings``: a row is replaced only by a higher ``revision``, or an equal revision with
  a newer ``updated_at``; within one batch the highest such version wins, and among equal
  versions the first record in topic order. So replaying a topic, in whole or in part,
  leaves the table exactly as one pass does, and an older revision never overwrites a newer.
* ``anomalies``: the highest revision per ``anomaly_id`` wins.
* ``raw_audit``: every raw message once, by (topic, partition, offset).

Errors: a *data* error (a constraint or type the database refuses) makes the writer retry
the batch row by row, each row in a savepoint, and return the refused rows with the
database's message (the agent sends them to the DLQ). Any other error (connection lost,
server shutting down, ...) is transient: :meth:`TimescaleWriter.store` retries the whole
batch with capped exponential backoff until it succeeds, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import orjson

from aurora_streams import metrics
from aurora_streams.codecs import AVRO_MAGIC, avro_decode

__all__ = ["Rejected", "SinkBatch", "SinkMessage", "TimescaleWriter"]

log = logging.getLogger(__name__)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

READING_COLUMNS: Final = (
    "device_id", "channel", "ts_end", "ts_start", "event_id", "kind", "value_kwh", "register_kwh",
    "delta_kwh", "unit", "quality", "method", "reason_code", "flags", "revision", "updated_at",
    "source", "ingested_at", "original_value", "original_unit", "interval_s", "direction",
)  # fmt: skip
ANOMALY_COLUMNS: Final = (
    "anomaly_id", "event_id", "device_id", "channel", "ts_end", "type", "score", "detail",
    "revision", "cleared", "detected_at",
)  # fmt: skip
RAW_COLUMNS: Final = ("topic", "partition", "offset", "key", "value", "broker_ts")

# CREATE TABLE AS copies columns but no constraints: staging rows are checked only when the
# upsert moves them into the real tables (where a refusal names the real constraint).
_STAGING: Final = """
CREATE TEMP TABLE IF NOT EXISTS _stage_readings ON COMMIT DELETE ROWS AS
    SELECT 0::integer AS seq, * FROM readings WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS _stage_anomalies ON COMMIT DELETE ROWS AS
    SELECT 0::integer AS seq, * FROM anomalies WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS _stage_raw ON COMMIT DELETE ROWS AS
    SELECT * FROM raw_audit WITH NO DATA;
"""


def _cols(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _updates(columns: Sequence[str], keys: Sequence[str]) -> str:
    return ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c not in keys) + ", stored_at = now()"


_READINGS_NEWER: Final = (
    "(EXCLUDED.revision, coalesce(EXCLUDED.updated_at, '-infinity'::timestamptz))"
    " > (readings.revision, coalesce(readings.updated_at, '-infinity'::timestamptz))"
)
_READING_KEY: Final = ("device_id", "channel", "ts_end")
_UPSERT_READINGS: Final = f"""
INSERT INTO readings ({_cols(READING_COLUMNS)})
SELECT DISTINCT ON (device_id, channel, ts_end) {_cols(READING_COLUMNS)} FROM _stage_readings
ORDER BY device_id, channel, ts_end, revision DESC, updated_at DESC NULLS LAST, seq ASC
ON CONFLICT (device_id, channel, ts_end) DO UPDATE SET {_updates(READING_COLUMNS, _READING_KEY)}
WHERE {_READINGS_NEWER}
"""
_UPSERT_ANOMALIES: Final = f"""
INSERT INTO anomalies ({_cols(ANOMALY_COLUMNS)})
SELECT DISTINCT ON (anomaly_id) {_cols(ANOMALY_COLUMNS)} FROM _stage_anomalies
ORDER BY anomaly_id, revision DESC, seq ASC
ON CONFLICT (anomaly_id) DO UPDATE SET {_updates(ANOMALY_COLUMNS, ("anomaly_id",))}
WHERE EXCLUDED.revision > anomalies.revision
"""
_INSERT_RAW: Final = f"""
INSERT INTO raw_audit ({_cols(RAW_COLUMNS)}) SELECT {_cols(RAW_COLUMNS)} FROM _stage_raw
ON CONFLICT (topic, "partition", "offset") DO NOTHING
"""


def _values(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


_ROW_READING: Final = f"""
INSERT INTO readings ({_cols(READING_COLUMNS)}) VALUES ({_values(len(READING_COLUMNS))})
ON CONFLICT (device_id, channel, ts_end) DO UPDATE SET {_updates(READING_COLUMNS, _READING_KEY)}
WHERE {_READINGS_NEWER}
"""
_ROW_ANOMALY: Final = f"""
INSERT INTO anomalies ({_cols(ANOMALY_COLUMNS)}) VALUES ({_values(len(ANOMALY_COLUMNS))})
ON CONFLICT (anomaly_id) DO UPDATE SET {_updates(ANOMALY_COLUMNS, ("anomaly_id",))}
WHERE EXCLUDED.revision > anomalies.revision
"""
_ROW_RAW: Final = f"""
INSERT INTO raw_audit ({_cols(RAW_COLUMNS)}) VALUES ({_values(len(RAW_COLUMNS))})
ON CONFLICT (topic, "partition", "offset") DO NOTHING
"""

#: SQLSTATE classes of errors caused by the data itself: retrying cannot help.
_DATA_ERROR_CLASSES: Final = ("22", "23")


def _is_data_error(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state[:2] in _DATA_ERROR_CLASSES


@dataclass(frozen=True, slots=True)
class SinkMessage:
    """One consumed record, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message the store refused (the agent dead-letters it)."""

    message: SinkMessage
    error_class: str
    error_message: str


def _ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return _EPOCH + timedelta(milliseconds=int(value))


def _decode(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise ValueError("record has no value")
    if value.startswith(AVRO_MAGIC):
        return dict(avro_decode(value)[1])
    doc = orjson.loads(value)
    if not isinstance(doc, dict):
        raise ValueError("record is not an object")
    return doc


def reading_row(doc: dict[str, Any]) -> tuple[Any, ...]:
    return (
        doc["device_id"], doc["channel"], _ts(doc["ts_end"]), _ts(doc["ts_start"]), doc["event_id"],
        doc["kind"], doc["value_kwh"], doc["register_kwh"], doc["delta_kwh"], doc["unit"], doc["quality"],
        doc["method"], doc["reason_code"], list(doc["flags"]), doc["revision"], _ts(doc["updated_at"]),
        doc["source"], _ts(doc["ingested_at"]), doc["original_value"], doc["original_unit"],
        doc["interval_s"], doc.get("direction"),
    )  # fmt: skip


def anomaly_row(doc: dict[str, Any]) -> tuple[Any, ...]:
    return (
        doc["anomaly_id"], doc["event_id"], doc["device_id"], doc["channel"], _ts(doc["ts_end"]), doc["type"],
        doc["score"], doc["detail"], doc["revision"], doc["cleared"], _ts(doc["detected_at"]),
    )  # fmt: skip


@dataclass
class SinkBatch:
    """Rows of one batch by table, each with the message it came from."""

    readings: list[tuple[SinkMessage, tuple[Any, ...]]] = field(default_factory=list)
    anomalies: list[tuple[SinkMessage, tuple[Any, ...]]] = field(default_factory=list)
    raw: list[tuple[SinkMessage, tuple[Any, ...]]] = field(default_factory=list)
    undecodable: list[Rejected] = field(default_factory=list)

    @classmethod
    def build(
        cls, messages: Sequence[SinkMessage], *, normalized: str, anomalies: str, raw: str
    ) -> SinkBatch:
        batch = cls()
        for m in messages:
            try:
                if m.topic == raw:
                    ts = _EPOCH + timedelta(milliseconds=m.timestamp_ms)
                    batch.raw.append((m, (m.topic, m.partition, m.offset, m.key, m.value, ts)))
                elif m.topic == normalized:
                    batch.readings.append((m, reading_row(_decode(m.value))))
                elif m.topic == anomalies:
                    batch.anomalies.append((m, anomaly_row(_decode(m.value))))
            except Exception as exc:  # anything undecodable is dead-lettered, never dropped
                batch.undecodable.append(
                    Rejected(m, type(exc).__name__, f"cannot decode record: {exc}"[:500])
                )
        return batch

    def __len__(self) -> int:
        return len(self.readings) + len(self.anomalies) + len(self.raw)


class TimescaleWriter:
    """Writes :class:`SinkBatch` es; owns an asyncpg pool, opened lazily and reopened after
    failures."""

    def __init__(self, url: str, *, pool_size: int = 2, max_backoff_s: float = 10.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self.max_backoff_s = max_backoff_s
        self._pool: asyncpg.Pool | None = None
        self.fallbacks = 0
        """Batches that needed the row-by-row path (a refused row); should stay rare."""

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, init=self._init_connection, timeout=10
            )
        return self._pool

    @staticmethod
    async def _init_connection(conn: asyncpg.Connection) -> None:
        await conn.execute(_STAGING)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5)
            except Exception:
                pool.terminate()

    async def store(self, batch: SinkBatch, *, stopping: asyncio.Event | None = None) -> list[Rejected]:
        """Store ``batch``; retry transient failures with backoff until it is stored.
        Returns the rows the database refused (plus undecodable records)."""
        backoff = 0.5
        while True:
            started = time.perf_counter()
            try:
                rejected = await self._store_once(batch)
            except Exception as exc:
                if _is_data_error(exc):
                    raise  # _store_once handles data errors; anything left is a bug
                metrics.SINK_RETRIES.inc()
                log.warning(
                    "sink write failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, backoff
                )
                await self._reset_pool()
                if stopping is not None and stopping.is_set():
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            metrics.SINK_FLUSH_DURATION.observe(time.perf_counter() - started)
            for table, rows in (
                ("readings", batch.readings),
                ("anomalies", batch.anomalies),
                ("raw_audit", batch.raw),
            ):
                metrics.SINK_ROWS.labels(table).inc(len(rows))
            return batch.undecodable + rejected

    async def _reset_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def _store_once(self, batch: SinkBatch) -> list[Rejected]:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await self._bulk(conn, batch)
                return []
            except Exception as exc:
                if not _is_data_error(exc):
                    raise
                log.warning("batch refused (%s); finding the refused rows one by one", exc)
                self.fallbacks += 1
                metrics.SINK_FALLBACKS.inc()
            async with conn.transaction():
                return await self._row_by_row(conn, batch)

    async def _bulk(self, conn: asyncpg.Connection, batch: SinkBatch) -> None:
        if batch.readings:
            await conn.copy_records_to_table(
                "_stage_readings",
                records=[(i, *row) for i, (_, row) in enumerate(batch.readings)],
                columns=("seq", *READING_COLUMNS),
            )
            await conn.execute(_UPSERT_READINGS)
        if batch.anomalies:
            await conn.copy_records_to_table(
                "_stage_anomalies",
                records=[(i, *row) for i, (_, row) in enumerate(batch.anomalies)],
                columns=("seq", *ANOMALY_COLUMNS),
            )
            await conn.execute(_UPSERT_ANOMALIES)
        if batch.raw:
            await conn.copy_records_to_table(
                "_stage_raw", records=[row for _, row in batch.raw], columns=RAW_COLUMNS
            )
            await conn.execute(_INSERT_RAW)

    async def _row_by_row(self, conn: asyncpg.Connection, batch: SinkBatch) -> list[Rejected]:
        rejected: list[Rejected] = []
        for sql, rows in (
            (_ROW_READING, batch.readings),
            (_ROW_ANOMALY, batch.anomalies),
            (_ROW_RAW, batch.raw),
        ):
            for message, row in rows:
                try:
                    async with conn.transaction():  # a savepoint inside the outer transaction
                        await conn.execute(sql, *row)
                except Exception as exc:
                    if not _is_data_error(exc):
                        raise
                    detail = getattr(exc, "detail", None)
                    text = f"{exc}" + (f" ({detail})" if detail else "")
                    rejected.append(Rejected(message, type(exc).__name__, text[:1000]))
        metrics.SINK_REJECTED.inc(len(rejected))
        return rejected
