"""Consumption aggregates over event time, built from normalized records. Pure.

State is one :class:`DayRecord` per device, channel and UTC day: a slot per reading (keyed
by its interval end) holding the latest version of its delta. A record replaces its slot
only when it is newer: a higher ``revision``, or the same revision with a newer
``updated_at`` (the sink's rule). So a late reading lands in its own day and window, a
revision replaces exactly what it revises, and a replay changes nothing.

Windows (15 minutes, an hour, a day) are computed from the slots when asked. Intervals are
period-ending, so a reading belongs to the window that holds ``ts_end - 1 ms``: the
interval 00:00-00:15 is in the 00:00 window, not the 00:15 one.

A window's ``sum`` is **validated** energy: readings flagged with an
:data:`~aurora_streams.domain.flags.UNVALIDATED_FLAGS` flag (an implausible jump, a
future-stamped reading) are left out of it and counted beside it (``excluded_sum``,
``excluded_count``), so one injected spike cannot make a fleet's hour 125 times its usual
and the energy is still all there to see.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final

import orjson

from aurora_streams.domain.flags import UNVALIDATED_FLAGS
from aurora_streams.domain.model import NormalizedReading
from aurora_streams.errors import CorruptState

__all__ = [
    "DAY_MS",
    "DAY_VERSION",
    "SIZES",
    "Bucket",
    "DayRecord",
    "bucket_windows",
    "day_key",
    "day_key_prefix",
    "day_of",
    "is_validated",
    "row_excluded",
]

DAY_MS: Final = 86_400_000
SIZES: Final[Mapping[str, int]] = {"15m": 900_000, "1h": 3_600_000, "1d": DAY_MS}
_NO_VERSION: Final = -(2**62)
DAY_VERSION: Final = 2
"""The encoding :meth:`DayRecord.to_bytes` writes: a header (``_DAY_HEADER``: version, 1 if a
direction follows, the unit's and direction's UTF-8 lengths, the number of rows), the unit,
the direction, then the five columns little-endian: ``ts_end`` int64, ``delta`` float64
(NaN: none), ``revision`` int64, ``updated_at`` int64 (-2**63: none), ``excluded`` int8 (-1:
a row stored with four fields). Version 1 was JSON (``{"u", "s": rows, "d"}``), still read.
Decoding copies the columns (microseconds for a day); version 1 took ~40 us to parse and
more to hold (46 KB for a day of 5-minute rows as lists, 10 KB as columns)."""
_DAY_HEADER: Final = struct.Struct("<BBHHI")
_DAY_ROW_BYTES: Final = 8 + 8 + 8 + 8 + 1
_NO_UPDATED: Final = -(2**63)
"""A slot's ``updated_at`` column value for none."""
_NAN: Final = float("nan")


def day_of(ts_end: int) -> int:
    """The UTC day (days since the epoch) a reading ending at ``ts_end`` belongs to."""
    return (ts_end - 1) // DAY_MS


def is_validated(flags: Iterable[str]) -> bool:
    """Whether a reading with ``flags`` counts in validated energy."""
    return UNVALIDATED_FLAGS.isdisjoint(flags)


def day_key(device_id: str, channel: str, day: int) -> str:
    return f"{device_id}|{channel}|{day}"


def day_key_prefix(device_id: str, channel: str) -> str:
    """What every :func:`day_key` of the channel starts with, and no other channel's (device
    ids and channel names cannot hold ``|``)."""
    return f"{device_id}|{channel}|"


class DayRecord:
    """Slots of one device, channel and UTC day, in time order: rows of
    ``[ts_end, delta, revision, updated_at, excluded]``, one per interval end (``excluded``:
    1 when the reading is not validated; rows stored before it existed have four fields and
    count as validated).

    Held as columns of C numbers, not as the rows of lists the encoding holds: an epoch
    keeps every day record it touched, and a day of 5-minute rows took 46 KB as lists of
    Python numbers against 11 KB here. :attr:`rows` builds the lists when asked (encoding, a
    whole-day scan); the epoch's own work (:meth:`apply`, :meth:`row_at`, :meth:`between`,
    :meth:`index_after`, :meth:`ts_at`, :meth:`delta_at`) reads the columns. A reading after
    the last slot, the usual case, is an append.
    """

    __slots__ = ("_delta", "_excluded", "_revision", "_ts", "_updated", "direction", "unit")

    def __init__(
        self, unit: str = "kWh", rows: list[list[Any]] | None = None, direction: str | None = None
    ) -> None:
        self.unit = unit
        self._ts: array[int] = array("q")
        self._delta: array[float] = array("d")
        """NaN: no delta (JSON has no NaN, so a stored delta never is one)."""
        self._revision: array[int] = array("q")
        self._updated: array[int] = array("q")
        """``_NO_UPDATED``: none."""
        self._excluded: array[int] = array("b")
        """1 or 0, or -1 for a row stored with four fields."""
        self.direction = direction
        """The channel's direction as its latest reading gave it (``None``: unknown, or a
        record stored before it was kept); what the fleet's import and export book it as."""
        if rows:
            self._load(rows)

    def _load(self, rows: list[list[Any]]) -> None:
        """Fill the empty columns from ``rows``, a column at a time, with the usual cases
        (every row has a delta, no row an ``updated_at``) done in C: a day's 288 rows were
        170 us a row at a time."""
        try:
            ts, delta, revision, updated, excluded = zip(*rows, strict=True)
        except ValueError:  # rows stored before ``excluded`` (four fields), or a mix
            for row in rows:
                self._put(len(self._ts), row, insert=True)
            return
        self._ts = array("q", ts)
        self._delta = array("d", [_NAN if v is None else v for v in delta] if None in delta else delta)
        self._revision = array("q", revision)
        if updated.count(None) == len(updated):
            self._updated = array("q", [_NO_UPDATED]) * len(updated)
        else:
            self._updated = array("q", [_NO_UPDATED if v is None else v for v in updated])
        self._excluded = array("b", excluded)

    def _put(self, i: int, row: list[Any], *, insert: bool) -> None:
        """Write ``row`` into slot ``i`` (``insert``: a new slot there, else replace it)."""
        ts, delta, updated = int(row[0]), row[1], row[3]
        d = _NAN if delta is None else float(delta)
        revision = int(row[2])
        u = _NO_UPDATED if updated is None else int(updated)
        x = int(row[4]) if len(row) > 4 else -1
        if not insert:
            self._ts[i], self._delta[i], self._revision[i] = ts, d, revision
            self._updated[i], self._excluded[i] = u, x
        elif i == len(self._ts):
            self._ts.append(ts)
            self._delta.append(d)
            self._revision.append(revision)
            self._updated.append(u)
            self._excluded.append(x)
        else:
            self._ts.insert(i, ts)
            self._delta.insert(i, d)
            self._revision.insert(i, revision)
            self._updated.insert(i, u)
            self._excluded.insert(i, x)

    def _row(self, i: int) -> list[Any]:
        delta = self._delta[i]
        updated = self._updated[i]
        row: list[Any] = [
            self._ts[i],
            None if delta != delta else delta,
            self._revision[i],
            None if updated == _NO_UPDATED else updated,
        ]
        excluded = self._excluded[i]
        if excluded >= 0:
            row.append(excluded)
        return row

    def size(self) -> int:
        """The number of slots (a method, not ``__len__``: an empty record stays truthy)."""
        return len(self._ts)

    @property
    def rows(self) -> list[list[Any]]:
        """The rows, built now (a new list of new lists: changing them changes nothing)."""
        return list(map(list, self._tuples()))

    def _tuples(self) -> list[tuple[Any, ...]]:
        """The rows as tuples (what :meth:`to_json` encodes: JSON arrays either way)."""
        n = len(self._ts)
        excluded = self._excluded
        if n and min(excluded) < 0:  # some rows stored with four fields
            return [tuple(self._row(i)) for i in range(n)]
        delta = self._delta
        deltas: Any = delta if sum(delta) == sum(delta) else [None if v != v else v for v in delta]
        upd = self._updated
        updated: Any = (
            repeat(None, n)
            if n and max(upd) == _NO_UPDATED
            else [None if v == _NO_UPDATED else v for v in upd]
        )
        return list(zip(self._ts, deltas, self._revision, updated, excluded, strict=False))

    @property
    def slots(self) -> dict[int, list[Any]]:
        """ts_end -> [delta, revision, updated_at] (a copy, for readers)."""
        return {row[0]: row[1:] for row in self.rows}

    def ts_at(self, i: int) -> int:
        """The ``i``-th slot's ``ts_end``."""
        return self._ts[i]

    def delta_at(self, i: int) -> float | None:
        """The ``i``-th slot's delta (``None``: none)."""
        delta = self._delta[i]
        return None if delta != delta else delta

    def between(self, start: int, end: int) -> list[list[Any]]:
        """Rows with ``start < ts_end <= end``."""
        lo = bisect_right(self._ts, start)
        hi = bisect_right(self._ts, end)
        return [self._row(i) for i in range(lo, hi)]

    def index_after(self, ts: int) -> int:
        """The index of the first row with ``ts_end > ts`` (:meth:`size` if none)."""
        return bisect_right(self._ts, ts)

    def row_at(self, ts_end: int) -> list[Any] | None:
        """The slot's row, None when the slot is empty (an append's slot: no search)."""
        times = self._ts
        if not times or ts_end > times[-1]:
            return None
        i = bisect_left(times, ts_end)
        return self._row(i) if i < len(times) and times[i] == ts_end else None

    def apply(
        self,
        ts_end: int,
        delta: float | None,
        revision: int,
        updated_at: int | None,
        unit: str,
        excluded: bool = False,
        direction: str | None = None,
    ) -> bool:
        """Store a record if it is newer than the slot's; returns whether anything changed."""
        times = self._ts
        new = [ts_end, delta, revision, updated_at, 1 if excluded else 0]
        if not times or ts_end > times[-1]:
            self._put(len(times), new, insert=True)
        else:
            i = bisect_left(times, ts_end)
            if i < len(times) and times[i] == ts_end:
                old_updated = self._updated[i]
                new_version = (revision, updated_at if updated_at is not None else _NO_VERSION)
                old_version = (self._revision[i], old_updated if old_updated != _NO_UPDATED else _NO_VERSION)
                if new_version <= old_version:
                    return False
                self._put(i, new, insert=False)
            else:
                self._put(i, new, insert=True)
        self.unit = unit
        if direction is not None:
            self.direction = direction
        return True

    def apply_reading(self, rec: NormalizedReading) -> bool:
        """:meth:`apply` a normalized reading of this day (excluded unless validated)."""
        return self.apply(rec.ts_end, rec.delta_kwh, rec.revision, rec.updated_at, rec.unit,
                          not is_validated(rec.flags), rec.direction)  # fmt: skip

    def to_bytes(self) -> bytes:
        """The record, version 2 (see :data:`DAY_VERSION`): its columns as they are held."""
        unit = self.unit.encode()
        direction = b"" if self.direction is None else self.direction.encode()
        n = len(self._ts)
        head = _DAY_HEADER.pack(DAY_VERSION, 0 if self.direction is None else 1, len(unit), len(direction), n)
        columns: list[Any] = [self._ts, self._delta, self._revision, self._updated, self._excluded]
        if sys.byteorder != "little":
            columns = [array(c.typecode, c) for c in columns]
            for c in columns:
                c.byteswap()
        return b"".join([head, unit, direction, *(c.tobytes() for c in columns)])

    def to_json(self) -> bytes:
        """The record as version 1 stored it (JSON rows): for inspection and tests."""
        if self.direction is None:
            return orjson.dumps({"u": self.unit, "s": self._tuples()})
        return orjson.dumps({"u": self.unit, "s": self._tuples(), "d": self.direction})

    @classmethod
    def from_bytes(cls, data: bytes) -> DayRecord:
        """Decode :meth:`to_bytes`, or version 1 (JSON, what records were stored as before)."""
        if data[:1] == b"{":
            doc = orjson.loads(data)
            return cls(doc["u"], doc["s"], doc.get("d"))
        if len(data) < _DAY_HEADER.size or data[0] != DAY_VERSION:
            raise CorruptState(f"unsupported day record (first byte {data[:1]!r}, {len(data)} bytes)")
        _, has_direction, n_unit, n_direction, n = _DAY_HEADER.unpack_from(data)
        at = _DAY_HEADER.size
        if len(data) != at + n_unit + n_direction + n * _DAY_ROW_BYTES:
            raise CorruptState(f"a day record of {len(data)} bytes does not match its header ({n} rows)")
        unit = data[at : at + n_unit].decode()
        at += n_unit
        direction = data[at : at + n_direction].decode() if has_direction else None
        at += n_direction
        record = cls(unit, None, direction)
        columns: list[Any] = [record._ts, record._delta, record._revision, record._updated, record._excluded]
        for column in columns:
            size = n * column.itemsize
            column.frombytes(data[at : at + size])
            if sys.byteorder != "little":
                column.byteswap()
            at += size
        return record


def _ts(row: list[Any]) -> int:
    return int(row[0])


def row_excluded(row: list[Any]) -> bool:
    """Whether a slot's energy is left out of validated energy."""
    return len(row) > 4 and bool(row[4])


@dataclass(frozen=True, slots=True)
class Bucket:
    start: int
    end: int
    sum: float
    """Validated energy."""
    count: int
    min: float | None
    max: float | None
    excluded_sum: float = 0.0
    """Energy of the readings left out of ``sum`` (not validated)."""
    excluded_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "sum": self.sum, "count": self.count,
                "min": self.min, "max": self.max, "excluded_sum": self.excluded_sum,
                "excluded_count": self.excluded_count}  # fmt: skip


def bucket_windows(days: Iterable[DayRecord], size_ms: int, start: int, end: int) -> list[Bucket]:
    """Windows of ``size_ms`` covering [start, end) that hold at least one reading with a
    delta, in time order: validated energy in ``sum`` (``count``, ``min``, ``max`` of it),
    the rest beside it. Readings without a delta (a reset, a first register reading) are
    not counted."""
    acc: dict[int, tuple[list[float], list[float]]] = {}
    for day in days:
        for row in day.rows:
            delta = row[1]
            if delta is None:
                continue
            at = row[0] - 1
            if not start <= at < end:
                continue
            pair = acc.get(at - at % size_ms)
            if pair is None:
                pair = acc[at - at % size_ms] = ([], [])
            pair[1 if row_excluded(row) else 0].append(delta)
    return [
        Bucket(b, b + size_ms, sum(v), len(v), min(v, default=None), max(v, default=None), sum(x), len(x))
        for b, (v, x) in sorted(acc.items())
    ]
