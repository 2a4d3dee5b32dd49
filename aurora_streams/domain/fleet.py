"""Fleet-wide summaries stored beside what they summarize, so fleet views read a few keys per
partition at any fleet size (a loop over 92,000 devices took 37.6 s and held
``/healthz`` behind it).

Each table partition holds its own summary under a key no device can have (it starts with
NUL), written in the same RocksDB write batch as the values it summarizes, and sent to the
same changelog, so it is exactly as current as they are after a crash, a replay, a restore or
a standby's promotion:

* ``device_state``: :class:`DeviceCounts` (devices, channels, newest reading time);
* ``recent_anomalies``: :class:`OpenAnomalies` (open anomalies by type);
* ``device_days``: one :class:`DayTotals` per UTC day and site ("" is the whole fleet, see
  :func:`totals_key`): per window of each size (15 min, 1 h, 1 day) validated import and
  export kWh, the channel-windows that contributed and the excluded kWh.

Each write of a summarized value changes its summary by the difference between the value's
old and new contribution (the old one as stored, which the writer read before changing it),
so replaying a write that is already stored changes nothing. A day record's difference is
computed from the slots that changed (:class:`DayBefore`, :func:`day_change`), not from the
whole day twice: a day of 5-minute slots is 288 rows, and a batch touches one or two.
Sums are floats: adding and subtracting contributions leaves rounding near 1e-12 of a
window's energy; a window no channel contributes to any more is removed, and with it any
rounding left in it.

A device's recent anomalies, what :class:`OpenAnomalies` counts, are kept by
:class:`RecentAnomalies` (the highest revision of each anomaly, newest first, bounded), one
key per event (:func:`anomaly_key`), so a new anomaly writes itself and the one it evicts,
not the device's whole list (up to 200 events, ~60 KB, rewritten per anomaly before).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from aurora_streams.domain.aggregates import SIZES, DayRecord, row_excluded
from aurora_streams.domain.model import channel_direction

__all__ = [
    "SUMMARY_KEY",
    "TOTALS_PREFIX",
    "Change",
    "Contribution",
    "DayBefore",
    "DayTotals",
    "DeviceCounts",
    "OpenAnomalies",
    "RecentAnomalies",
    "anomaly_key",
    "anomaly_key_prefix",
    "apply_anomaly",
    "contribution_change",
    "day_change",
    "day_contributions",
    "open_types",
    "stored_anomalies",
    "totals_key",
]

SUMMARY_KEY: Final = "\x00fleet"
"""The key of a partition's :class:`DeviceCounts` or :class:`OpenAnomalies`."""

TOTALS_PREFIX: Final = "\x00fleet|"

_SIZES_MS: Final = tuple(SIZES.values())

Contribution = dict[tuple[int, int], list[float]]
"""(size_ms, window start) -> [import kWh, export kWh, excluded kWh] of one day record."""


def totals_key(site: str, day: int) -> str:
    """The key of the :class:`DayTotals` of ``site`` ("" for the fleet) on UTC ``day``."""
    return f"{TOTALS_PREFIX}{site}|{day}"


def _column(unit: str | None, declared: str | None, channel: str) -> int | None:
    """Where a channel's validated energy is booked: 0 import, 1 export, ``None`` nowhere."""
    if unit != "kWh":
        return None
    direction = channel_direction(channel, declared)
    if direction is None:
        return None
    return 0 if direction == "consumption" else 1


def _contribution(rows: Iterable[list[Any]], column: int | None) -> Contribution:
    out: Contribution = {}
    if column is None:
        return out
    for row in rows:
        delta = row[1]
        if delta is None:
            continue
        at = row[0] - 1
        excluded = row_excluded(row)
        for size in _SIZES_MS:
            key = (size, at - at % size)
            totals = out.get(key)
            if totals is None:
                totals = out[key] = [0.0, 0.0, 0.0]
            totals[2 if excluded else column] += delta
    return out


def day_contributions(record: DayRecord | None, channel: str) -> Contribution:
    """What one device channel's day adds to the fleet's windows: per window holding at
    least one reading with a delta, its validated energy in the import or export column (by
    the record's direction, else the channel's name) and its excluded energy. Empty for a
    channel with no direction or a unit other than kWh, as the consumption view counts."""
    if record is None:
        return {}
    return _contribution(record.rows, _column(record.unit, record.direction, channel))


Change = dict[tuple[int, int], list[float]]
"""(size_ms, window start) -> differences of [import kWh, export kWh, channel windows,
excluded kWh], what :meth:`DayTotals.add` applies."""


def contribution_change(old: Contribution, new: Contribution) -> Change:
    """The change of a window's totals when one channel's day goes from ``old`` to ``new``."""
    out: Change = {}
    for contribution, sign in ((old, -1.0), (new, 1.0)):
        for key, (imp, exp, excluded) in contribution.items():
            change = out.get(key)
            if change is None:
                change = out[key] = [0.0, 0.0, 0.0, 0.0]
            change[0] += sign * imp
            change[1] += sign * exp
            change[2] += sign
            change[3] += sign * excluded
    return {key: c for key, c in out.items() if any(c)}


class DayBefore:
    """A day record as it was stored, kept by what changes: its unit, its direction and the
    stored rows of the slots written since (``None``: the slot did not exist). Call
    :meth:`touch` before each :meth:`DayRecord.apply`; rows are never removed from a day
    record, so these and the record's current rows give back the stored record."""

    __slots__ = ("column_of", "rows")

    def __init__(self, record: DayRecord | None) -> None:
        self.column_of: tuple[str, str | None] | None = (
            None if record is None else (record.unit, record.direction)
        )
        self.rows: dict[int, list[Any] | None] = {}

    def touch(self, record: DayRecord, ts_end: int) -> None:
        """Remember the stored row of slot ``ts_end`` (the first time only)."""
        if ts_end in self.rows:
            return
        self.rows[ts_end] = record.row_at(ts_end)

    def column(self, channel: str) -> int | None:
        return None if self.column_of is None else _column(*self.column_of, channel)

    def stored_rows(self, record: DayRecord) -> list[list[Any]]:
        """The rows as stored."""
        before = self.rows
        out: list[list[Any]] = []
        for row in record.rows:
            if row[0] in before:
                old = before[row[0]]
                if old is not None:
                    out.append(old)
            else:
                out.append(row)
        return out


def _has_delta(record: DayRecord, start: int, end: int, before: dict[int, list[Any] | None] | None) -> bool:
    """Whether a row with ``start < ts_end <= end`` has a delta (as stored, with ``before``)."""
    for i in range(record.index_after(start), record.size()):
        ts = record.ts_at(i)
        if ts > end:
            return False
        if before is not None and ts in before:
            row = before[ts]
            if row is not None and row[1] is not None:
                return True
        elif record.delta_at(i) is not None:
            return True
    return False


def day_change(record: DayRecord, channel: str, before: DayBefore) -> Change:
    """The change of the fleet's windows from one channel's day as ``before`` says it was
    stored to ``record`` as it is: from the changed slots alone, unless the record's unit
    or direction moved it to another column (then from both days whole)."""
    old_column = before.column(channel)
    new_column = _column(record.unit, record.direction, channel)
    if old_column != new_column:
        return contribution_change(
            _contribution(before.stored_rows(record), old_column), _contribution(record.rows, new_column)
        )
    if new_column is None or not before.rows:
        return {}
    out: Change = {}
    touched: set[tuple[int, int]] = set()
    for ts, old in before.rows.items():
        new = record.row_at(ts)
        at = ts - 1
        for row, sign in ((old, -1.0), (new, 1.0)):
            if row is None or row[1] is None:
                continue
            index = 3 if row_excluded(row) else new_column
            for size in _SIZES_MS:
                key = (size, at - at % size)
                change = out.get(key)
                if change is None:
                    change = out[key] = [0.0, 0.0, 0.0, 0.0]
                change[index] += sign * row[1]
        touched.update((size, at - at % size) for size in _SIZES_MS)
    for key in touched:
        size, start = key
        was = _has_delta(record, start, start + size, before.rows)
        now = _has_delta(record, start, start + size, None)
        if was != now:
            change = out.get(key)
            if change is None:
                change = out[key] = [0.0, 0.0, 0.0, 0.0]
            change[2] += 1.0 if now else -1.0
    return {key: c for key, c in out.items() if any(c)}


class DayTotals:
    """One UTC day's windows for a site or the fleet: (size_ms, start) -> [import kWh,
    export kWh, channel windows, excluded kWh]."""

    __slots__ = ("windows",)

    def __init__(self, windows: dict[tuple[int, int], list[float]] | None = None) -> None:
        self.windows = windows if windows is not None else {}

    def add(self, change: Change) -> None:
        """Apply one channel's :func:`day_change` (or :func:`contribution_change`); a window
        no channel contributes to any more is removed."""
        windows = self.windows
        for key, (imp, exp, n, excluded) in change.items():
            totals = windows.get(key)
            if totals is None:
                totals = windows[key] = [0.0, 0.0, 0.0, 0.0]
            totals[0] += imp
            totals[1] += exp
            totals[2] += n
            totals[3] += excluded
            if totals[2] <= 0:
                del windows[key]

    def __bool__(self) -> bool:
        return bool(self.windows)

    def to_bytes(self) -> bytes:
        return orjson.dumps([[size, start, *t] for (size, start), t in sorted(self.windows.items())])

    @classmethod
    def from_bytes(cls, data: bytes | None) -> DayTotals:
        if not data:
            return cls()
        return cls({(int(r[0]), int(r[1])): [float(x) for x in r[2:6]] for r in orjson.loads(data)})


class DeviceCounts:
    """A partition's devices, their channels and its newest reading time. The newest
    reading only moves forward: a device's readings are never removed."""

    __slots__ = ("channels", "devices", "latest_ts")

    def __init__(self, devices: int = 0, channels: int = 0, latest_ts: int | None = None) -> None:
        self.devices, self.channels, self.latest_ts = devices, channels, latest_ts

    def replace(self, old: tuple[int, int | None] | None, new: tuple[int, int | None]) -> None:
        """A device's (channels, newest reading time) changed from ``old`` (``None``: the
        device was not stored) to ``new``."""
        if old is None:
            self.devices += 1
        else:
            self.channels -= old[0]
        self.channels += new[0]
        if new[1] is not None and (self.latest_ts is None or new[1] > self.latest_ts):
            self.latest_ts = new[1]

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.devices, self.channels, self.latest_ts])

    @classmethod
    def from_bytes(cls, data: bytes | None) -> DeviceCounts:
        if not data:
            return cls()
        devices, channels, latest = orjson.loads(data)
        return cls(devices, channels, latest)


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


def anomaly_key_prefix(device_id: str) -> str:
    return f"{device_id}|"


def anomaly_key(device_id: str, event: Mapping[str, Any]) -> str:
    """``device|ts_end|anomaly_id``, ``ts_end`` as 13 digits of epoch ms: a device's keys
    sort oldest first in the order the list is kept in (reversed)."""
    return f"{device_id}|{event['ts_end']:013d}|{event['anomaly_id']}"


def stored_anomalies(key: str, value: bytes) -> list[dict[str, Any]]:
    """The events of one stored ``recent_anomalies`` item: an event key holds one event, a
    device id (no ``|``) the whole list an earlier version stored."""
    doc = orjson.loads(value)
    return [doc] if "|" in key else list(doc)


class RecentAnomalies:
    """One device's recent anomaly events as stored, one key per event (see the module),
    and what changed since they were loaded.

    :meth:`load` takes the device's stored items: its event keys, and a list stored whole
    under the device id by an earlier version, whose events are then stored under event
    keys and the list deleted. :meth:`apply` keeps what :func:`apply_anomaly` keeps;
    :meth:`changes` gives each key to put (its event's JSON) or delete (``None``)."""

    __slots__ = ("dirty", "events", "stored")

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.stored: set[str] = set()
        self.dirty: set[str] = set()

    @classmethod
    def load(cls, device_id: str, items: Iterable[tuple[str, bytes]]) -> RecentAnomalies:
        recent = cls()
        for key, value in items:
            recent.stored.add(key)
            if "|" in key:  # an event key (see stored_anomalies)
                recent.events[key] = orjson.loads(value)
            else:  # a whole list, stored before event keys: stored again under event keys
                for event in stored_anomalies(key, value):
                    k = anomaly_key(device_id, event)
                    recent.events[k] = event
                    recent.dirty.add(k)
        return recent

    def newest_first(self) -> list[dict[str, Any]]:
        return [self.events[k] for k in sorted(self.events, reverse=True)]

    def apply(self, device_id: str, event: dict[str, Any], limit: int) -> bool:
        """Upsert ``event`` (a higher revision of a listed anomaly replaces it) and keep the
        newest ``limit``; returns whether anything changed."""
        key = anomaly_key(device_id, event)
        old = self.events.get(key)
        if old is not None and event["revision"] <= old["revision"]:
            return False
        self.events[key] = event
        self.dirty.add(key)
        if len(self.events) > limit:
            for gone in sorted(self.events)[: len(self.events) - limit]:
                del self.events[gone]
        return True

    def changes(self) -> dict[str, bytes | None]:
        """Each changed key, in key order: its event's JSON, or ``None`` to delete it."""
        out: dict[str, bytes | None] = {}
        for key in sorted(self.dirty | self.stored):
            event = self.events.get(key)
            if event is not None and key in self.dirty:
                out[key] = orjson.dumps(event)
            elif event is None and key in self.stored:
                out[key] = None
        return out


def open_types(events: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """How many of a device's listed anomalies are open (not cleared), by type."""
    return Counter(e["type"] for e in events if not e["cleared"])


class OpenAnomalies:
    """A partition's open anomalies by type, over its devices' recent-anomaly lists."""

    __slots__ = ("by_type",)

    def __init__(self, by_type: Counter[str] | None = None) -> None:
        self.by_type = by_type if by_type is not None else Counter()

    def replace(self, old: Counter[str], new: Counter[str]) -> None:
        by_type = self.by_type
        for kind, n in old.items():
            by_type[kind] -= n
        for kind, n in new.items():
            by_type[kind] += n
        for kind in [k for k, n in by_type.items() if n <= 0]:
            del by_type[kind]

    def to_bytes(self) -> bytes:
        return orjson.dumps(dict(sorted(self.by_type.items())))

    @classmethod
    def from_bytes(cls, data: bytes | None) -> OpenAnomalies:
        return cls(Counter(orjson.loads(data)) if data else None)
