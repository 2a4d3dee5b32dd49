"""What the read API answers, over one worker's stores: no HTTP, no Faust.

:class:`Queries` reads the stream tables through :class:`Stores` (a key's stored bytes, and
the RocksDB databases of the partitions this worker actively owns) and returns plain dicts.
The ``merge_*`` and ``*_page`` functions combine several workers' local answers into one
response body; they are pure. The HTTP layer (:mod:`aurora_streams.web.api`) parses
requests, routes a device's requests to its owner, fans fleet requests out to every worker
and calls these.

**Guarantees.** A fleet-wide local answer covers only actively owned partitions (never a
standby's copy), so merging every worker's counts each device once. Reads are of committed
checkpoints: a table's stores hold what the last stored checkpoint wrote, never part of one.
Lists are ordered (device ids bytewise; anomalies newest first, then by id, descending) so
pages and cursors are stable.
"""

from __future__ import annotations

import time
from typing import Any, Final, Literal, Protocol

from aurora_streams.codecs import decode_forecast_entry
from aurora_streams.domain.aggregates import (
    DAY_MS,
    SIZES,
    DayRecord,
    bucket_windows,
    day_key,
    day_of,
    row_excluded,
)
from aurora_streams.domain.device import DeviceState
from aurora_streams.domain.fleet import (
    SUMMARY_KEY,
    DayTotals,
    DeviceCounts,
    OpenAnomalies,
    anomaly_key_prefix,
    stored_anomalies,
    totals_key,
)
from aurora_streams.domain.timeutil import format_ms
from aurora_streams.errors import InvalidQuery
from aurora_streams.processing import log_offset
from aurora_streams.tables.device_state import is_device_key
from aurora_streams.tables.views import items_with_prefix

__all__ = [
    "MAX_LIMIT",
    "MAX_RANGE_DAYS",
    "Queries",
    "Stores",
    "Table",
    "anomalies_page",
    "check_range",
    "consumption_body",
    "devices_page",
    "merge_consumption",
    "merge_fleet",
]

MAX_LIMIT: Final = 1000
MAX_RANGE_DAYS: Final = 400

Table = Literal["device_state", "days", "recent", "forecasts"]


class Stores(Protocol):
    """One worker's view of the stream tables."""

    def get(self, table: Table, key: str) -> bytes | None:
        """``key``'s stored value in ``table`` (any partition this worker holds)."""

    def active(self, table: Table) -> list[Any]:
        """The databases (``rocksdict.Rdict``-like: ``get``, ``items``, ``iter``) of the
        partitions of ``table`` this worker actively owns, in partition order."""


def check_range(start: int, end: int) -> None:
    if not start < end or end - start > MAX_RANGE_DAYS * SIZES["1d"]:
        raise InvalidQuery("invalid_range", f"need from < to, at most {MAX_RANGE_DAYS} days apart", "from")


class Queries:
    """The read API's answers from this worker's stores. Methods returning ``None`` mean
    "no such device here"; malformed arguments raise :class:`InvalidQuery`."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    # -- devices ----------------------------------------------------------------------------

    def device_state(self, device_id: str) -> DeviceState | None:
        data = self.stores.get("device_state", device_id) if is_device_key(device_id) else None
        return None if data is None else DeviceState.from_bytes(data)

    def devices_after(self, cursor: str, n: int) -> list[str]:
        """The first ``n`` device ids after ``cursor`` over the active partitions: a seek and
        at most ``n`` keys per partition (RocksDB orders keys bytewise, as ids sort), where
        listing every device to page through them cost seconds at 100,000 devices."""
        start = cursor.encode() + b"\x00" if cursor else b""
        found: list[str] = []
        for db in self.stores.active("device_state"):
            it = db.iter()
            it.seek(start)
            taken = 0
            while it.valid() and taken < n:
                key = it.key().decode()
                it.next()
                if is_device_key(key):
                    found.append(key)
                    taken += 1
        return sorted(found)[:n]

    def device(self, device_id: str) -> dict[str, Any] | None:
        """The device's channels, each with its window size and latest reading."""
        state = self.device_state(device_id)
        if state is None:
            return None
        channels = []
        for name, ch in sorted(state.channels.items()):
            last = ch.entries[-1] if ch.entries else None
            latest = None
            if last is not None:
                latest = {
                    "ts_end": format_ms(last.ts),
                    "value": last.value,
                    "unit": last.unit,
                    "delta": last.delta,
                    "flags": list(last.flags),
                    "revision": last.revision,
                    "quality": last.quality,
                }
            channels.append(
                {"channel": name, "kind": ch.kind, "window": len(ch.entries), "anchored": ch.anchored,
                 "latest": latest}
            )  # fmt: skip
        return {"device_id": device_id, "last_offset": log_offset(state.last_offset), "channels": channels}

    def _days(self, device_id: str, channel: str, start: int, end: int) -> list[DayRecord]:
        """The stored day records of one channel that overlap (start, end]."""
        records = []
        for day in range(day_of(start + 1), day_of(end) + 1):
            stored = self.stores.get("days", day_key(device_id, channel, day))
            if stored is not None:
                records.append(DayRecord.from_bytes(stored))
        return records

    def aggregates(
        self,
        device_id: str,
        channel: str,
        size: str,
        start: int | None,
        end: int | None,
        cursor: int | None,
        limit: int,
    ) -> dict[str, Any] | None:
        """Windows of ``size`` over [start, end), oldest first, ``limit`` per page. Without
        ``to``: up to the device's latest reading (the end of its day for ``1d``); without
        ``from``: a day before ``to``. A ``cursor`` is a window start from ``next_cursor``."""
        if size not in SIZES:
            raise InvalidQuery("invalid_size", f"size must be one of {', '.join(SIZES)}", "size")
        if start is not None and end is not None and not start < end:
            raise InvalidQuery("invalid_range", "need from < to", "from")
        state = self.device_state(device_id)
        if state is None:
            return None
        if end is None:
            latest = state.latest_ts() or int(time.time() * 1000)
            end = latest - latest % SIZES["1d"] + SIZES["1d"] if size == "1d" else latest
        if start is None:
            start = end - SIZES["1d"]
        check_range(start, end)
        if cursor is not None:
            if cursor >= end:
                raise InvalidQuery("invalid_cursor", "cursor must come from next_cursor", "cursor")
            start = max(start, cursor)
        records = self._days(device_id, channel, start, end)
        buckets = bucket_windows(records, SIZES[size], start, end)
        page = buckets[:limit]
        return {
            "device_id": device_id,
            "channel": channel,
            "size": size,
            "unit": records[0].unit if records else "kWh",
            "from": format_ms(start),
            "to": format_ms(end),
            "items": [{**b.to_dict(), "start": format_ms(b.start), "end": format_ms(b.end)} for b in page],
            "next_cursor": str(buckets[limit].start) if len(buckets) > limit else None,
        }

    def readings(
        self, device_id: str, channel: str, start: int | None, end: int | None
    ) -> dict[str, Any] | None:
        """The latest revision of each reading's delta in [from, to) (default: the day up to
        the device's latest reading), in time order, from the day aggregates; at most
        ``5 * MAX_LIMIT`` of them."""
        state = self.device_state(device_id)
        if state is None:
            return None
        if end is None:
            end = (state.latest_ts() or int(time.time() * 1000)) + 1
        if start is None:
            start = end - SIZES["1d"]
        check_range(start, end)
        items = []
        unit = "kWh"
        for record in self._days(device_id, channel, start, end):
            unit = record.unit
            for row in record.between(start - 1, end - 1):
                items.append(
                    {"ts_end": format_ms(row[0]), "delta": row[1], "revision": row[2],
                     "validated": not row_excluded(row)}
                )  # fmt: skip
        return {"device_id": device_id, "channel": channel, "unit": unit, "from": format_ms(start),
                "to": format_ms(end), "items": items[: MAX_LIMIT * 5]}  # fmt: skip

    # -- anomalies --------------------------------------------------------------------------

    def anomalies(
        self,
        device: str | None,
        since: int | None,
        kind: str | None,
        after: tuple[int, str] | None,
        n: int,
    ) -> list[dict[str, Any]]:
        """Open anomalies (the recent lists), newest first, at most ``n``: of one device, or of
        every actively owned device in one pass over the partitions' lists. ``after`` is a
        cursor (ts_end, anomaly_id): only events before it."""
        stored: list[tuple[str, bytes]] = []
        if device is not None:
            prefix = anomaly_key_prefix(device)
            for db in self.stores.active("recent"):
                stored += items_with_prefix(db, prefix)
            legacy = self.stores.get("recent", device)
            if legacy is not None:
                stored.append((device, legacy))
        else:
            stored = [
                (k, value)
                for db in self.stores.active("recent")
                for key, value in db.items()
                if is_device_key(k := key.decode())
            ]
        events: list[dict[str, Any]] = []
        for key, value in stored:
            for e in stored_anomalies(key, value):
                if since is not None and e["ts_end"] < since:
                    continue
                if kind is not None and e["type"] != kind:
                    continue
                if after is not None and (e["ts_end"], e["anomaly_id"]) >= after:
                    continue
                events.append(e)
        events.sort(key=lambda e: (e["ts_end"], e["anomaly_id"]), reverse=True)
        return events[:n]

    # -- fleet ------------------------------------------------------------------------------

    def consumption(self, site: str | None, size: str, start: int, end: int) -> dict[str, list[float]]:
        """This worker's fleet (or one site's) totals per window start of ``size`` in
        [start, end): [import kWh, export kWh, channel windows, excluded kWh], from the
        partitions' stored day totals (domain.fleet): a few keys per day, whatever the
        fleet's size. ``start`` and ``end`` must be on window boundaries."""
        if size not in SIZES:
            raise InvalidQuery("invalid_size", f"size must be one of {', '.join(SIZES)}", "size")
        if not start < end or end - start > 31 * SIZES["1d"]:
            raise InvalidQuery("invalid_range", "need from < to, at most 31 days apart", "from")
        size_ms = SIZES[size]
        if start % size_ms or end % size_ms:
            raise InvalidQuery(
                "unaligned_range", f"from and to must be on {size} window boundaries (UTC)", "from"
            )
        totals: dict[int, list[float]] = {}
        keys = [
            totals_key(site or "", day).encode() for day in range(start // DAY_MS, (end - 1) // DAY_MS + 1)
        ]
        for db in self.stores.active("days"):
            for stored in db.get(keys):
                for (window_size, w), row in DayTotals.from_bytes(stored).windows.items():
                    if window_size != size_ms or not start <= w < end:
                        continue
                    acc = totals.setdefault(w, [0.0, 0.0, 0.0, 0.0])
                    for i in range(4):
                        acc[i] += row[i]
        return {str(k): v for k, v in totals.items()}

    def fleet(self) -> dict[str, Any]:
        """Devices, channels, the newest reading (ms) and open anomalies by type over the
        active partitions, from their stored counts (domain.fleet), not from their devices."""
        counts = DeviceCounts()
        for db in self.stores.active("device_state"):
            part = DeviceCounts.from_bytes(db.get(SUMMARY_KEY.encode()))
            counts.devices += part.devices
            counts.channels += part.channels
            if part.latest_ts is not None and (counts.latest_ts is None or part.latest_ts > counts.latest_ts):
                counts.latest_ts = part.latest_ts
        open_anomalies = OpenAnomalies()
        for db in self.stores.active("recent"):
            open_anomalies.by_type.update(OpenAnomalies.from_bytes(db.get(SUMMARY_KEY.encode())).by_type)
        return {
            "devices": counts.devices,
            "channels": counts.channels,
            "latest_reading_ms": counts.latest_ts,
            "open_anomalies_by_type": dict(sorted(open_anomalies.by_type.items())),
            "workers": 1,
        }

    def forecast(self, device_id: str, channel: str, horizon: int) -> dict[str, Any] | None:
        """Point forecasts with a 90% band for the next ``horizon`` windows, the model's
        identity, how much it has learned and its running day-ahead accuracy beside the
        seasonal-naive baseline. A model still warming up says so and forecasts nothing."""
        from aurora_streams.domain import forecast_blocks
        from aurora_streams.domain.forecast import DeviceForecaster

        key = f"{device_id}|{channel}"
        stored = self.stores.get("forecasts", key)
        if stored is None:
            return None
        state = decode_forecast_entry(stored)[1]
        if forecast_blocks.is_head(state):
            state = forecast_blocks.join(state, lambda name: self.stores.get("forecasts", f"{key}|{name}"))
        snap = DeviceForecaster.from_bytes(state).snapshot(horizon)
        return {
            "device_id": device_id,
            "channel": channel,
            **snap,
            "origin_ts": format_ms(snap["origin_ts"]) if snap["origin_ts"] is not None else None,
            "points": [
                {"ts_end": format_ms(p.ts_end), "value": p.value, "lower": p.lower, "upper": p.upper}
                for p in snap["points"]
            ],
        }


# -- merging workers' local answers ---------------------------------------------------------


def devices_page(ids: list[str], limit: int) -> dict[str, Any]:
    """One page of ``limit`` from every worker's first ``limit + 1`` ids after the cursor."""
    ids = sorted(set(ids))
    page = ids[:limit]
    return {"items": [{"device_id": d} for d in page], "next_cursor": page[-1] if len(ids) > limit else None}


def anomalies_page(events: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """One page of ``limit`` from every worker's first ``limit + 1`` events after the
    cursor; the cursor is the last event's ``ts_end:anomaly_id``."""
    events = sorted(events, key=lambda e: (e["ts_end"], e["anomaly_id"]), reverse=True)
    page = events[:limit]
    next_cursor = f"{page[-1]['ts_end']}:{page[-1]['anomaly_id']}" if len(events) > limit else None
    items = [
        {**e, "ts_end": format_ms(e["ts_end"]), "detected_at": format_ms(e["detected_at"])} for e in page
    ]
    return {"items": items, "next_cursor": next_cursor}


def merge_consumption(
    local: dict[str, list[float]], others: list[dict[str, list[float]]]
) -> dict[str, list[float]]:
    """Window totals summed over workers (each counted its own partitions)."""
    total = {k: list(v) for k, v in local.items()}
    for other in others:
        for k, values in other.items():
            row = total.setdefault(k, [0.0, 0.0, 0.0, 0.0])
            for i in range(4):
                row[i] += values[i]
    return total


def consumption_body(
    site: str | None, size: str, start: int, end: int, totals: dict[str, list[float]]
) -> dict[str, Any]:
    items = [
        {
            "start": format_ms(int(k)),
            "end": format_ms(int(k) + SIZES[size]),
            # Sums kept by adding and subtracting contributions: rounded to 1e-9 kWh.
            "import_kwh": round(v[0], 9),
            "export_kwh": round(v[1], 9),
            "channel_windows": int(v[2]),
            "excluded_kwh": round(v[3], 9),
        }
        for k, v in sorted(totals.items(), key=lambda kv: int(kv[0]))
    ]
    return {"site": site, "size": size, "from": format_ms(start), "to": format_ms(end), "items": items}


def merge_fleet(local: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    """Workers' local fleet answers summed; ``latest_reading`` formatted."""
    total: dict[str, Any] = {**local, "open_anomalies_by_type": dict(local["open_anomalies_by_type"])}
    for other in others:
        total["devices"] += other["devices"]
        total["channels"] += other["channels"]
        total["workers"] += 1
        if other["latest_reading_ms"] is not None:
            total["latest_reading_ms"] = max(total["latest_reading_ms"] or 0, other["latest_reading_ms"])
        for k, v in other["open_anomalies_by_type"].items():
            total["open_anomalies_by_type"][k] = total["open_anomalies_by_type"].get(k, 0) + v
    latest_ms = total.pop("latest_reading_ms")
    total["latest_reading"] = format_ms(latest_ms) if latest_ms is not None else None
    return total
