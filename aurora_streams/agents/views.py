"""The views agent: normalized readings and anomaly events -> the HTTP view tables, and
the forecasts topic.

Per ``take_events`` batch and source partition (with an event of that partition current,
as the RocksDB store needs): decode each record, apply it to its day record or its device's
recent anomalies (both idempotent: a slot or an anomaly is replaced only by a newer version),
feed every window that closed to its channel's forecaster, produce one ``meter.forecasts``
record per channel whose model learned, **wait for the broker to take them**, and only then
write each changed key once. Re-deliveries therefore change nothing, and a crash between the
two replays into the same forecast records (same ``forecast_id`` and content).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import faust
import orjson
from faust.streams import _current_event

from aurora_streams.agents.delivery import deliver
from aurora_streams.codecs import decode_output, encode_forecast
from aurora_streams.domain.aggregates import DayRecord, day_key, day_of
from aurora_streams.processing import OutRecord
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


def attach_views(app: faust.App, settings: Settings, days: Any, recent: Any, forecasts: Any) -> Any:
    topic = app.topic(
        settings.topic_normalized,
        settings.topic_anomalies,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(topic, name="views")
    async def views(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            await handle_batch(app, settings, days, recent, forecasts, events)

    return views


async def handle_batch(
    app: faust.App, settings: Settings, days: Any, recent: Any, forecasts: Any, events: Sequence[Any]
) -> None:
    by_partition: dict[int, list[Any]] = {}
    for event in events:
        by_partition.setdefault(event.message.partition, []).append(event)
    for partition_events in by_partition.values():
        token = _current_event.set(weakref.ref(partition_events[0]))
        try:
            await _apply_partition(app, settings, days, recent, forecasts, partition_events)
        finally:
            _current_event.reset(token)


async def _apply_partition(
    app: faust.App, settings: Settings, days: Any, recent: Any, forecasts: Any, events: Sequence[Any]
) -> None:
    day_cache: dict[str, DayRecord] = {}
    closing = WindowCloser(settings.forecast_window_min * 60_000, forecasts)
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
        if doc["unit"] == "kWh":
            closing.observe(doc["device_id"], doc["channel"], doc["ts_end"], days, day_cache)
    await deliver(app, closing.forecast_records(settings))
    for key in dirty_days:
        days[key] = day_cache[key].to_bytes()
    for device in dirty_devices:
        recent[device] = orjson.dumps(anomaly_cache[device])
    closing.write()


class WindowCloser:
    """Feeds each device channel's forecaster the energy of every window that closed.

    A window closes when a reading of a later window arrives; its energy is the sum of the
    day slots (latest revisions) inside it. The forecaster ignores windows it has already
    learned, so a re-delivery changes nothing; a reading that arrives after its window closed
    is in the aggregates but not in the model (an online model does not relearn the past).
    """

    def __init__(self, window_ms: int, table: Any) -> None:
        self.window_ms = window_ms
        self.table = table
        self.cache: dict[str, dict[str, Any]] = {}

    def observe(
        self, device: str, channel: str, ts_end: int, days: Any, day_cache: dict[str, DayRecord]
    ) -> None:
        from aurora_streams.domain.forecast import DeviceForecaster

        key = f"{device}|{channel}"
        entry = self.cache.get(key)
        if entry is None:
            stored = self.table.get(key)
            doc = orjson.loads(stored) if stored else None
            entry = {
                "open": doc["open"] if doc else None,
                "model": DeviceForecaster.from_dict(doc["model"])
                if doc
                else DeviceForecaster(self.window_ms),
                "dirty": False,
            }
            self.cache[key] = entry
        end = (ts_end - 1) // self.window_ms * self.window_ms + self.window_ms
        if entry["open"] is None:
            entry["open"], entry["dirty"] = end, True
            return
        if end <= entry["open"]:
            return
        model = entry["model"]
        first = max(entry["open"], end - 2 * 86_400_000)  # after a long silence, learn the last two days
        for closed in range(first, end, self.window_ms):
            model.learn(closed, self._energy(device, channel, closed, days, day_cache))
        entry["open"], entry["dirty"], entry["learned"] = end, True, True

    def _energy(
        self, device: str, channel: str, end: int, days: Any, day_cache: dict[str, DayRecord]
    ) -> float:
        total = 0.0
        for day in {day_of(end - self.window_ms + 1), day_of(end)}:
            key = day_key(device, channel, day)
            record = day_cache.get(key)
            if record is None:
                stored = days.get(key)
                if stored is None:
                    continue
                record = day_cache[key] = DayRecord.from_bytes(stored)
            for ts, (delta, _rev, _upd) in record.slots.items():
                if delta is not None and end - self.window_ms < ts <= end:
                    total += delta
        return total

    def forecast_records(self, settings: Settings) -> list[OutRecord]:
        """One ``meter.forecasts`` record per channel whose model learned in this batch
        (keyed by device, so a device's forecasts stay in order)."""
        from aurora_streams.domain.forecast import forecast_record

        horizon = max(1, settings.forecast_publish_hours * 3_600_000 // self.window_ms)
        out = []
        for key, entry in self.cache.items():
            if not entry.get("learned"):
                continue
            device, channel = key.split("|", 1)
            record = forecast_record(device, channel, entry["model"], horizon)
            if record is not None:
                value = encode_forecast(record, settings.output_encoding)
                out.append(OutRecord(settings.topic_forecasts, device.encode(), value))
        return out

    def write(self) -> None:
        for key, entry in self.cache.items():
            if entry["dirty"]:
                self.table[key] = orjson.dumps({"open": entry["open"], "model": entry["model"].to_dict()})


def _expire(settings: Settings, days: Any, device: str, channel: str, day: int) -> None:
    """A new day for this channel: drop its days that fell out of the retention."""
    cutoff = day - settings.aggregate_retention_days
    for old in range(cutoff - 30, cutoff + 1):
        key = day_key(device, channel, old)
        if days.get(key) is not None:
            del days[key]
