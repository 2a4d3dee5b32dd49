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

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from aurora_streams.domain.flags import UNVALIDATED_FLAGS
from aurora_streams.domain.model import NormalizedReading

__all__ = [
    "DAY_MS",
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

    Kept as the rows themselves (what the encoding holds), so decoding is one ``orjson``
    call and a reading after the last slot, the usual case, is an append.
    """

    __slots__ = ("direction", "rows", "unit")

    def __init__(
        self, unit: str = "kWh", rows: list[list[Any]] | None = None, direction: str | None = None
    ) -> None:
        self.unit = unit
        self.rows: list[list[Any]] = rows if rows is not None else []
        self.direction = direction
        """The channel's direction as its latest reading gave it (``None``: unknown, or a
        record stored before it was kept); what the fleet's import and export book it as."""

    @property
    def slots(self) -> dict[int, list[Any]]:
        """ts_end -> [delta, revision, updated_at] (a copy, for readers)."""
        return {row[0]: row[1:] for row in self.rows}

    def between(self, start: int, end: int) -> list[list[Any]]:
        """Rows with ``start < ts_end <= end``."""
        lo = bisect_right(self.rows, start, key=_ts)
        hi = bisect_right(self.rows, end, key=_ts)
        return self.rows[lo:hi]

    def index_after(self, ts: int) -> int:
        """The index of the first row with ``ts_end > ts`` (``len(rows)`` if none)."""
        return bisect_right(self.rows, ts, key=_ts)

    def row_at(self, ts_end: int) -> list[Any] | None:
        """The slot's row, None when the slot is empty (an append's slot: no search)."""
        rows = self.rows
        if not rows or ts_end > rows[-1][0]:
            return None
        i = bisect_left(rows, ts_end, key=_ts)
        return rows[i] if i < len(rows) and rows[i][0] == ts_end else None

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
        rows = self.rows
        new = [ts_end, delta, revision, updated_at, 1 if excluded else 0]
        if not rows or ts_end > rows[-1][0]:
            rows.append(new)
        else:
            i = bisect_left(rows, ts_end, key=_ts)
            if i < len(rows) and rows[i][0] == ts_end:
                old = rows[i]
                new_version = (revision, updated_at if updated_at is not None else _NO_VERSION)
                old_version = (old[2], old[3] if old[3] is not None else _NO_VERSION)
                if new_version <= old_version:
                    return False
                rows[i] = new
            else:
                rows.insert(i, new)
        self.unit = unit
        if direction is not None:
            self.direction = direction
        return True

    def apply_reading(self, rec: NormalizedReading) -> bool:
        """:meth:`apply` a normalized reading of this day (excluded unless validated)."""
        return self.apply(rec.ts_end, rec.delta_kwh, rec.revision, rec.updated_at, rec.unit,
                          not is_validated(rec.flags), rec.direction)  # fmt: skip

    def to_bytes(self) -> bytes:
        if self.direction is None:
            return orjson.dumps({"u": self.unit, "s": self.rows})
        return orjson.dumps({"u": self.unit, "s": self.rows, "d": self.direction})

    @classmethod
    def from_bytes(cls, data: bytes) -> DayRecord:
        doc = orjson.loads(data)
        return cls(doc["u"], doc["s"], doc.get("d"))


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
