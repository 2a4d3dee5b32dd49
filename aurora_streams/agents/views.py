"""The view tables, updated in the normalize agent's pass (no second consumer of the
output topics): ``device_days`` (a device channel's day of reading slots), ``recent_anomalies``
and ``forecasts``, plus the ``meter.forecasts`` records of every model that learned.

:class:`ViewUpdater` takes the normalized readings and anomaly events that one source
partition's batches produced (the same objects the output records were encoded from), applies
them to cached day records and anomaly lists (idempotent: a slot or an anomaly is replaced
only by a newer version), feeds each closed window to its channel's forecaster, and writes
each changed key once in :meth:`write`. The normalize agent calls :meth:`write` at its
checkpoint, before waiting for the outputs (and these forecasts) and the views' changelog
to be acknowledged by the broker, and before the device states are written, so the device
state, which fences replays, is never ahead of the views.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from typing import Any

from aurora_streams.agents.delivery import TableWriter
from aurora_streams.codecs import (
    anomaly_fields,
    decode_forecast_entry,
    encode_forecast,
    encode_forecast_entry,
)
from aurora_streams.domain import forecast_blocks
from aurora_streams.domain.aggregates import (
    DayRecord,
    day_key,
    day_key_prefix,
    day_of,
    row_excluded,
)
from aurora_streams.domain.fleet import (
    SUMMARY_KEY,
    Change,
    DayBefore,
    DayTotals,
    OpenAnomalies,
    RecentAnomalies,
    anomaly_key_prefix,
    contribution_change,
    day_change,
    day_contributions,
    open_types,
    totals_key,
)
from aurora_streams.domain.forecast import DeviceForecaster, forecast_record
from aurora_streams.domain.model import AnomalyEvent, NormalizedReading
from aurora_streams.processing import OutRecord
from aurora_streams.settings import Settings
from aurora_streams.tables.device_state import StateCache
from aurora_streams.tables.views import items_with_prefix, keys_with_prefix, partition_store

__all__ = ["CachedModel", "ViewUpdater"]

CachedModel = tuple[int, bytes, forecast_blocks.Mark | None]
"""A models-cache entry: the open window's end, the encoded forecaster as last written
(whole, or a head whose blocks are in the table) and its :class:`~forecast_blocks.Mark`
(kept beside it: computing it unpacks the header, once per channel per epoch otherwise)."""


class ViewUpdater:
    """The view updates of one source partition's epoch (one or more batches, see
    ``agents.normalize``), held in memory until :meth:`write`. Must run with an event of
    that partition current (the RocksDB stores read and write that partition's database)."""

    def __init__(
        self,
        settings: Settings,
        days: Any,
        recent: Any,
        forecasts: Any,
        models: StateCache[CachedModel] | None = None,
    ) -> None:
        self.settings = settings
        self.days, self.recent = days, recent
        self.day_cache: dict[str, DayRecord] = {}
        self.day_encoded: dict[str, bytes] = {}
        """Day records this epoch changed, encoded again after a batch once the decoded ones
        held more than ``_DAYS_DECODED_ROWS`` rows (see :meth:`forecast_records`): an epoch at 10,000
        meters touches every meter's day (a day of 5-minute rows: ~10 KB decoded, 46 KB when
        days were held as lists of Python numbers). A key is in ``day_cache`` or here, never both."""
        self.day_before: dict[str, DayBefore] = {}
        """Per day key loaded: what its fleet contribution was as stored (see ``domain.fleet``)."""
        self.dirty_days: set[str] = set()
        self.anomaly_cache: dict[str, RecentAnomalies] = {}
        self.open_before: dict[str, Counter[str]] = {}
        """Per device loaded: its open anomalies by type as stored."""
        self.dirty_devices: set[str] = set()
        self.expired: set[str] = set()
        window_ms = settings.forecast_window_min * 60_000
        every_ms = settings.forecast_publish_every_min * 60_000
        self.closing = WindowCloser(window_ms, forecasts, models, every_ms)

    def apply(self, emitted: Iterable[NormalizedReading | AnomalyEvent]) -> None:
        """Apply records in the order they were produced (batch after batch)."""
        for rec in emitted:
            if isinstance(rec, NormalizedReading):
                self._reading(rec)
            else:
                self._anomaly(anomaly_fields(rec))

    def _anomaly(self, doc: dict[str, Any]) -> None:
        device = doc["device_id"]
        recent = self.anomaly_cache.get(device)
        if recent is None:
            items = items_with_prefix(partition_store(self.recent), anomaly_key_prefix(device))
            legacy = self.recent.get(device)  # the whole list, stored before event keys
            if legacy is not None:
                items.append((device, legacy))
            recent = self.anomaly_cache[device] = RecentAnomalies.load(device, items)
            self.open_before[device] = open_types(recent.events.values())
        if recent.apply(device, doc, self.settings.recent_anomalies_per_device):
            self.dirty_devices.add(device)

    def _reading(self, rec: NormalizedReading) -> None:
        day = day_of(rec.ts_end)
        key = day_key(rec.device_id, rec.channel, day)
        record = self.day_cache.get(key)
        if record is None and key in self.day_encoded:
            record = self.day_cache[key] = DayRecord.from_bytes(self.day_encoded.pop(key))
        if record is None:
            stored = self.days.get(key)
            if stored is None:
                self.expired |= _expired(self.settings, self.days, rec.device_id, rec.channel, day)
                record = DayRecord()
                self.day_before[key] = DayBefore(None)
            else:
                record = DayRecord.from_bytes(stored)
                self.day_before[key] = DayBefore(record)
            self.day_cache[key] = record
        before = self.day_before.get(key)
        if before is None:
            # Loaded by a forecaster learning a closed window (WindowCloser._energy), which
            # only reads: the record is still as stored.
            before = self.day_before[key] = DayBefore(record)
        before.touch(record, rec.ts_end)
        if record.apply_reading(rec):
            self.dirty_days.add(key)
        if rec.unit == "kWh":
            self.closing.observe(
                rec.device_id, rec.channel, rec.ts_end, self.days, self.day_cache, self.day_encoded
            )

    def forecast_records(self) -> list[OutRecord]:
        """The forecasts of the models that learned since the last call. Called after each
        batch: past ``_DAYS_DECODED_ROWS`` rows of decoded day records, the changed ones are
        encoded again and all are dropped (a later batch decodes what it touches again)."""
        cache = self.day_cache
        if len(cache) > _DAYS_DECODED_MIN and sum(r.size() for r in cache.values()) > _DAYS_DECODED_ROWS:
            for key, record in cache.items():
                if key in self.dirty_days:
                    self.day_encoded[key] = record.to_bytes()
            cache.clear()
        return self.closing.forecast_records(self.settings)

    def _day(self, key: str) -> DayRecord:
        """A changed day record as this epoch left it."""
        record = self.day_cache.get(key)
        return record if record is not None else DayRecord.from_bytes(self.day_encoded[key])

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_days or self.dirty_devices or self.expired or self.closing.dirty)

    def release(self) -> None:
        """Forget everything loaded, once written: a sealed epoch's day records, anomaly lists
        and decoded forecasters (~45 KB each) stayed in memory until its checkpoint was
        stored, beside the next epoch's."""
        for held in (
            self.day_cache, self.day_encoded, self.day_before, self.dirty_days, self.anomaly_cache,
            self.open_before, self.dirty_devices, self.expired, self.closing.cache, self.closing.decoded,
        ):  # fmt: skip
            held.clear()

    def write(self, writer: TableWriter) -> None:
        """Write each changed key once (and delete the days that left the retention), with
        the fleet's summaries of them in the same write batch (see ``domain.fleet``)."""
        totals: dict[str, DayTotals] = {}
        sites = self.settings.sites

        def replace(device: str, day: str, change: Change) -> None:
            if not change:
                return
            site = sites.get(device)
            for scope in ("", site) if site else ("",):
                tkey = totals_key(scope, int(day))
                day_totals = totals.get(tkey)
                if day_totals is None:
                    day_totals = totals[tkey] = DayTotals.from_bytes(self.days.get(tkey))
                day_totals.add(change)

        for key in self.expired - self.dirty_days:
            device, channel, day = key.split("|")
            stored = day_contributions(_stored_day(self.days, key), channel)
            replace(device, day, contribution_change(stored, {}))
            writer.put(self.days, key, None)
        for key in self.dirty_days:
            device, channel, day = key.split("|")
            encoded = self.day_encoded.get(key)
            record = self._day(key)
            replace(device, day, day_change(record, channel, self.day_before[key]))
            writer.put(self.days, key, encoded if encoded is not None else record.to_bytes())
        for tkey, day_totals in totals.items():
            writer.put(self.days, tkey, day_totals.to_bytes() if day_totals else None)
        if self.dirty_devices:
            summary = OpenAnomalies.from_bytes(self.recent.get(SUMMARY_KEY))
            for device in self.dirty_devices:
                recent = self.anomaly_cache[device]
                summary.replace(self.open_before[device], open_types(recent.events.values()))
                for key, value in recent.changes().items():
                    writer.put(self.recent, key, value)
            writer.put(self.recent, SUMMARY_KEY, summary.to_bytes())
        self.closing.write(writer)


_DAYS_DECODED_ROWS = 1_000_000
"""Rows of decoded day records an epoch keeps across batches (~35 B each as columns, so
~35 MB): past it, after a batch, the changed records are encoded again and all dropped (a
day encodes in ~6 us and decodes in ~5). The 1,300 channels of 1,000 meters (up to 375,000
rows of 5-minute days) and W1's 10,000 meters of a few hours each stay decoded for their
epoch; 10,000 meters of whole days (2.9 million rows, ~100 MB) are decoded again in each
batch that touches them."""
_DAYS_DECODED_MIN = 500
"""Fewer decoded records than this are kept whatever their rows (counting them is a pass
over the records, after every batch)."""

_DECODED_MAX = 250
"""Decoded forecasters a source partition's epoch keeps across batches (up to ~45 KB each):
past it, after a batch, they are encoded again and dropped, a decoding and an encoding
(~35 us each) per window learned. 1,000 until session 23: four partitions' epochs held up
to 4,000 (at W1's 10,000 meters a forecaster learns every ~30,000 messages, so one decoded
was mostly dropped before its next window anyway)."""


class WindowCloser:
    """Feeds each device channel's forecaster the energy of every window that closed.

    A window closes when a reading of a later window arrives; its energy is the sum of the
    day slots (latest revisions) inside it. The forecaster ignores windows it has already
    learned, so a re-delivery changes nothing; a reading that arrives after its window closed
    is in the aggregates but not in the model (an online model does not relearn the past).

    A channel's forecast is published when its model learns a window whose end is a multiple
    of ``publish_every_ms`` (0: every window it learns): a function of the windows learned,
    so a replay publishes the same forecasts, and at most one record per channel per period.
    """

    def __init__(
        self,
        window_ms: int,
        table: Any,
        models: StateCache[CachedModel] | None = None,
        publish_every_ms: int = 0,
    ) -> None:
        self.window_ms = window_ms
        self.publish_every_ms = publish_every_ms
        self.table = table
        self.cache: dict[str, dict[str, Any]] = {}
        self.learned: dict[str, None] = {}
        """Keys whose model learned since the last :meth:`forecast_records`, in the order
        they learned (a dict: deterministic order). Scanning ``cache`` for them on every
        batch grew with the epoch's devices: 3 us per reading in W1."""
        self.models = models
        """Each channel's :data:`CachedModel` (open window end, encoded forecaster and mark)
        as last written, across
        epochs (a RocksDB read per channel per epoch was a worker's hot spot). Encoded, not
        decoded: a decoded forecaster holds its floats as Python objects, about 45 KB against
        9 KB, and decoding one takes ~35 us, once per epoch for a channel whose
        window closes. Cleared with the device state cache (a rebalance); entries are put
        when written, if no clear happened since this epoch began (``generation``)."""
        self.generation = models.generation if models is not None else 0
        self.decoded: dict[str, None] = {}
        """Keys whose forecaster is decoded (``entry["model"]``): past ``_DECODED_MAX`` of
        them, encoded again and dropped after a batch (:meth:`forecast_records`). Kept
        decoded until the checkpoint, W1's 10,000 meters held ~45 KB each, 450 MB (the
        encoding round-trips exactly, so a forecaster learns the same either way)."""

    def observe(
        self,
        device: str,
        channel: str,
        ts_end: int,
        days: Any,
        day_cache: dict[str, DayRecord],
        day_encoded: dict[str, bytes] | None = None,
    ) -> None:
        key = f"{device}|{channel}"
        entry = self.cache.get(key)
        if entry is None and self.models is not None:
            cached = self.models.get(key)
            if cached is not None:
                entry = self.cache[key] = {
                    "open": cached[0],
                    "state": cached[1],
                    "dirty": False,
                    "mark": cached[2],
                }
        if entry is None:
            stored = self.table.get(key)
            open_end, state = decode_forecast_entry(stored) if stored else (None, None)
            # The model is decoded only when a window closes (a reading that stays in the
            # open window needs ``open`` alone): building a River model per touched device
            # per batch was a seventh of a busy worker's time. A head's blocks are read then.
            # A state stored whole (before the blocks, or as JSON) is stored again in blocks.
            mark = forecast_blocks.mark_of(state) if state and forecast_blocks.is_head(state) else None
            entry = {"open": open_end, "state": state, "dirty": False, "mark": mark}
            self.cache[key] = entry
        end = (ts_end - 1) // self.window_ms * self.window_ms + self.window_ms
        if entry["open"] is None:
            entry["open"], entry["dirty"] = end, True
            return
        if end <= entry["open"]:
            return
        model = entry.get("model")
        if model is None:
            model = self._decode(key, entry["state"])
            entry["model"] = model
            self.decoded[key] = None
        first = max(entry["open"], end - 2 * 86_400_000)  # after a long silence, learn the last two days
        for closed in range(first, end, self.window_ms):
            model.learn(closed, self._energy(device, channel, closed, days, day_cache, day_encoded))
        entry["open"], entry["dirty"] = end, True
        every = self.publish_every_ms
        # The windows just learned end at first .. end - window: publish if one of them ends
        # on a period boundary.
        if not every or (end - self.window_ms) // every > (first - 1) // every:
            self.learned[key] = None

    def _energy(
        self,
        device: str,
        channel: str,
        end: int,
        days: Any,
        day_cache: dict[str, DayRecord],
        day_encoded: dict[str, bytes] | None = None,
    ) -> float:
        total = 0.0
        for day in {day_of(end - self.window_ms + 1), day_of(end)}:
            key = day_key(device, channel, day)
            record = day_cache.get(key)
            if record is None and day_encoded and key in day_encoded:
                record = day_cache[key] = DayRecord.from_bytes(day_encoded.pop(key))
            if record is None:
                stored = days.get(key)
                if stored is None:
                    continue
                record = day_cache[key] = DayRecord.from_bytes(stored)
            for row in record.between(end - self.window_ms, end):
                # Models learn validated energy only: one spike must not teach a forecast.
                if row[1] is not None and not row_excluded(row):
                    total += row[1]
        return total

    def forecast_records(self, settings: Settings) -> list[OutRecord]:
        """One ``meter.forecasts`` record per channel whose model learned since the last
        call (keyed by device, so a device's forecasts stay in order)."""
        horizon = max(1, settings.forecast_publish_hours * 3_600_000 // self.window_ms)
        out = []
        learned, self.learned = self.learned, {}
        for key in learned:
            device, channel = key.split("|", 1)
            record = forecast_record(device, channel, self.cache[key]["model"], horizon)
            if record is not None:
                value = encode_forecast(record, settings.output_encoding)
                out.append(OutRecord(settings.topic_forecasts, device.encode(), value))
        if len(self.decoded) > _DECODED_MAX:
            for key in self.decoded:
                entry = self.cache[key]
                entry["state"] = entry.pop("model").to_bytes()
            self.decoded.clear()
        return out

    @property
    def dirty(self) -> bool:
        return any(entry["dirty"] for entry in self.cache.values())

    def _decode(self, key: str, state: bytes | None) -> DeviceForecaster:
        if not state:
            return DeviceForecaster(self.window_ms)
        if forecast_blocks.is_head(state):
            state = forecast_blocks.join(state, lambda name: self.table.get(f"{key}|{name}"))
        return DeviceForecaster.from_bytes(state)

    def write(self, writer: TableWriter) -> None:
        """Store every changed channel: the head under ``device|channel`` (the open window's
        end, then the head of :mod:`~aurora_streams.domain.forecast_blocks`) and, before it,
        the blocks of the steps learned since the state was last stored, under
        ``device|channel|<block>``. A window learned costs a few hundred bytes of changelog,
        not the whole ~9.5 KB state."""
        models = self.models
        for key, entry in self.cache.items():
            if not entry["dirty"]:
                continue
            model = entry.get("model")
            state = (
                model.to_bytes()
                if model is not None
                else entry["state"] or _fresh_model_state(self.window_ms)
            )
            if forecast_blocks.is_head(state):  # only the open window moved: the blocks stand
                writer.put(self.table, key, encode_forecast_entry(entry["open"], state))
            else:
                if state[:1] == b"{":  # stored as JSON by an old version, never decoded here
                    state = DeviceForecaster.from_bytes(state).to_bytes()
                head, blocks = forecast_blocks.split(state, entry["mark"])
                for name, value in blocks.items():
                    writer.put(self.table, f"{key}|{name}", value)
                writer.put(self.table, key, encode_forecast_entry(entry["open"], head))
                entry["mark"] = forecast_blocks.mark_of(state)
            if models is not None:
                models.put(key, (entry["open"], state, entry["mark"]), self.generation)


def _stored_day(days: Any, key: str) -> DayRecord | None:
    stored = days.get(key)
    return None if stored is None else DayRecord.from_bytes(stored)


@functools.cache
def _fresh_model_state(window_ms: int) -> bytes:
    """A new channel's forecaster, encoded once: a worker meeting many new devices held a
    River model per device until its checkpoint was stored."""
    return DeviceForecaster(window_ms).to_bytes()


def _expired(settings: Settings, days: Any, device: str, channel: str, day: int) -> set[str]:
    """A new day for this channel: its stored days that fell out of the retention. One scan
    of the channel's keys in the partition's store: a point read per day that might be
    stored was 31 reads per channel at every UTC midnight, 3% of a busy worker."""
    cutoff = day - settings.aggregate_retention_days
    prefix = day_key_prefix(device, channel)
    stored = keys_with_prefix(partition_store(days), prefix)
    return {key for key in stored if int(key[len(prefix) :]) <= cutoff}
