"""Tables behind the HTTP views, fed from the output topics (co-partitioned with
``device_state``: a device's days and anomalies live on the worker that owns the device).

* ``device_days``: key ``device|channel|utc_day`` -> :class:`DayRecord` bytes; days older
  than ``AURORA_AGGREGATE_RETENTION_DAYS`` are deleted as new days arrive.
* ``recent_anomalies``: key ``device|ts_end|anomaly_id`` -> the JSON of one of the device's
  latest anomaly events (highest revision per anomaly id), at most
  ``AURORA_RECENT_ANOMALIES_PER_DEVICE`` per device (see ``domain.fleet.RecentAnomalies``;
  earlier versions stored the device's whole list under its id, replaced by event keys on
  its next anomaly).
* ``forecasts``: key ``device|channel`` -> the open window's end, then the head of the
  online forecaster's versioned state; ``device|channel|<block>`` -> a block of its rolling
  arrays (see ``codecs.encode_forecast_entry``, :mod:`aurora_streams.domain.forecast_blocks`
  and :mod:`aurora_streams.domain.forecast`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faust
from faust.streams import current_event

from aurora_streams.faust_adapter import partition_db
from aurora_streams.settings import Settings

__all__ = ["define_view_tables", "keys_with_prefix", "partition_store"]


def _raw_table(app: faust.App, settings: Settings, name: str, help: str) -> Any:
    changelog = app.topic(
        f"{settings.app_id}-{name}-changelog", key_type=str, value_type=bytes, key_serializer="raw",
        value_serializer="raw", partitions=settings.partitions, compacting=True, deleting=False, acks=False,
        internal=True,
    )  # fmt: skip
    table = app.Table(name, key_type=str, value_type=bytes, partitions=settings.partitions,
                      changelog_topic=changelog, help=help)  # fmt: skip
    table.key_serializer = "raw"  # type: ignore[attr-defined]
    table.value_serializer = "raw"  # type: ignore[attr-defined]
    return table


def define_view_tables(app: faust.App, settings: Settings) -> tuple[Any, Any, Any]:
    days = _raw_table(app, settings, "device_days", "Per device, channel and UTC day: reading slots.")
    recent = _raw_table(app, settings, "recent_anomalies", "Per device: its latest anomaly events.")
    forecasts = _raw_table(app, settings, "forecasts", "Per device|channel: the online forecaster's state.")
    return days, recent, forecasts


def partition_store(table: Any) -> Any:
    """The RocksDB database (``rocksdict.Rdict``, raw keys) of ``table``'s partition of the
    current event: the one its reads and writes go to (see ``agents.normalize``)."""
    event = current_event()
    if event is None:
        raise RuntimeError("a partition's store is reached only with an event of it current")
    return partition_db(table, event.message.partition)


def _scan(db: Any, prefix: str) -> Iterator[Any]:
    """An iterator of ``db`` positioned on each key that starts with ``prefix`` in turn, in
    key order: one seek and a short scan, where a point read per candidate key costs a read
    each."""
    raw = prefix.encode()
    it = db.iter()
    it.seek(raw)
    while it.valid() and it.key().startswith(raw):
        yield it
        it.next()


def items_with_prefix(db: Any, prefix: str) -> list[tuple[str, bytes]]:
    """The keys of ``db`` that start with ``prefix`` and their values, in key order."""
    return [(it.key().decode(), it.value()) for it in _scan(db, prefix)]


def keys_with_prefix(db: Any, prefix: str) -> list[str]:
    """The keys of ``db`` that start with ``prefix``, in key order."""
    return [it.key().decode() for it in _scan(db, prefix)]
