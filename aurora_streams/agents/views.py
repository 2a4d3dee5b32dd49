"""The views agent: normalized readings and anomaly events -> the HTTP view tables.

Per ``take_events`` batch and source partition (with an event of that partition current,
as the RocksDB store needs): decode each record, apply it to its day record or its device's
recent anomalies (both idempotent: a slot or an anomaly is replaced only by a newer version),
then write each changed key once. Re-deliveries therefore change nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import faust
import orjson
from faust.streams import _current_event

from aurora_streams.codecs import decode_output
from aurora_streams.domain.aggregates import DayRecord, day_key, day_of
from aurora_streams.settings import Settings

__all__ = ["apply_anomaly", "attach_views"]


def apply_anomaly(events: list[dict[str, Any]], event: dict[str, Any], limit: int) -> bool:
    """Upsert ``event`` into ``events`` (newest first by detection, then id); returns whether
    anything changed."""
    for i, old in enumerate(events):
        if old["anomaly_id"] == event["anomaly_id"]:
            if event["revision"] <= old["revision"]:
                return False
            events[i] = event
            break
    else:
        events.append(event)
    events.sort(key=lambda e: (e["ts_end"], e["anomaly_id"]), reverse=True)
    del events[limit:]
    return True


def attach_views(app: faust.App, settings: Settings, days: Any, recent: Any) -> Any:
    topic = app.topic(
        settings.topic_normalized, settings.topic_anomalies, key_type=bytes, value_type=bytes,
        key_serializer="raw", value_serializer="raw",
    )  # fmt: skip

    @app.agent(topic, name="views")
    async def views(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            handle_batch(settings, days, recent, events)

    return views


def handle_batch(settings: Settings, days: Any, recent: Any, events: Sequence[Any]) -> None:
    by_partition: dict[int, list[Any]] = {}
    for event in events:
        by_partition.setdefault(event.message.partition, []).append(event)
    for partition_events in by_partition.values():
        token = _current_event.set(weakref.ref(partition_events[0]))
        try:
            _apply_partition(settings, days, recent, partition_events)
        finally:
            _current_event.reset(token)


def _apply_partition(settings: Settings, days: Any, recent: Any, events: Sequence[Any]) -> None:
    day_cache: dict[str, DayRecord] = {}
    anomaly_cache: dict[str, list[dict[str, Any]]] = {}
    dirty_days: set[str] = set()
    dirty_devices: set[str] = set()
    for event in events:
        value = event.message.value
        if not value:
            continue
        try:
            doc = decode_output(value)
        except Exception:
            continue  # not ours to judge: the sink dead-letters undecodable records
        if event.message.topic == settings.topic_anomalies:
            device = doc["device_id"]
            if device not in anomaly_cache:
                stored = recent.get(device)
                anomaly_cache[device] = orjson.loads(stored) if stored else []
            if apply_anomaly(anomaly_cache[device], doc, settings.recent_anomalies_per_device):
                dirty_devices.add(device)
            continue
        day = day_of(doc["ts_end"])
        key = day_key(doc["device_id"], doc["channel"], day)
        record = day_cache.get(key)
        if record is None:
            stored = days.get(key)
            if stored is None:
                _expire(settings, days, doc["device_id"], doc["channel"], day)
                record = DayRecord()
            else:
                record = DayRecord.from_bytes(stored)
            day_cache[key] = record
        if record.apply(doc["ts_end"], doc["delta_kwh"], doc["revision"], doc["updated_at"], doc["unit"]):
            dirty_days.add(key)
    for key in dirty_days:
        days[key] = day_cache[key].to_bytes()
    for device in dirty_devices:
        recent[device] = orjson.dumps(anomaly_cache[device])


def _expire(settings: Settings, days: Any, device: str, channel: str, day: int) -> None:
    """A new day for this channel: drop its days that fell out of the retention."""
    cutoff = day - settings.aggregate_retention_days
    for old in range(cutoff - 30, cutoff + 1):
        key = day_key(device, channel, old)
        if days.get(key) is not None:
            del days[key]
