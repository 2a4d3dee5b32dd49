"""Timestamps: parsing to UTC epoch milliseconds and formatting back to ISO-8601.

Inside the platform every instant is an ``int`` of UTC epoch milliseconds: cheap to compare,
exact, and the same in JSON, Avro (``timestamp-millis``) and RocksDB state.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aurora_streams.errors import InvalidReading

__all__ = [
    "MAX_EPOCH_MS",
    "MIN_EPOCH_MS",
    "NEM_TZ",
    "TimestampError",
    "format_ms",
    "parse_timestamp",
    "zone",
]

#: NEM12 time: AEST, UTC+10 all year, no daylight saving.
NEM_TZ: Final = ZoneInfo("Australia/Brisbane")

#: Readings outside [2000-01-01, 2100-01-01) are absurd for a meter fleet and rejected.
MIN_EPOCH_MS: Final = 946_684_800_000
MAX_EPOCH_MS: Final = 4_102_444_800_000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class TimestampError(InvalidReading):
    """A timestamp that cannot be placed on the UTC timeline; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)


@lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    """The time zone called ``name`` (IANA), cached."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TimestampError("unknown_zone", f"unknown time zone {name!r}") from exc


def parse_timestamp(raw: object, *, naive_zone: str | None = None) -> int:
    """Parse ``raw`` to UTC epoch milliseconds.

    Accepts an ISO-8601 string with an offset (``Z`` included) or an integer of epoch
    milliseconds. A naive ISO string is accepted only when ``naive_zone`` names the device's
    zone; then it is read as wall time there (ambiguous DST times take the first occurrence).
    Raises :class:`TimestampError` for anything else, or for instants outside
    [2000, 2100).
    """
    if isinstance(raw, bool):
        raise TimestampError("invalid_type", "expected ISO-8601 string or integer epoch ms, got bool")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # JSON has one number type: 1700000000000.0 is an integer
    if isinstance(raw, int):
        ms = raw
    elif isinstance(raw, str):
        cached = _PARSED.get((raw, naive_zone))
        if cached is not None:
            return cached
        text = raw.strip()
        if not text:
            raise TimestampError("invalid_timestamp", "empty timestamp")
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise TimestampError("invalid_timestamp", f"not ISO-8601: {raw[:64]!r}") from exc
        if dt.tzinfo is None:
            if naive_zone is None:
                raise TimestampError(
                    "naive_timestamp",
                    f"timestamp {raw[:64]!r} has no UTC offset and the device has no configured zone",
                )
            dt = _local(dt, raw, zone(naive_zone))
        ms = (dt - _EPOCH) // timedelta(milliseconds=1)
    else:
        raise TimestampError(
            "invalid_type",
            f"expected ISO-8601 string or integer epoch ms, got {type(raw).__name__}",
        )
    if not MIN_EPOCH_MS <= ms < MAX_EPOCH_MS:
        raise TimestampError("absurd_timestamp", f"timestamp {raw!r} is outside 2000..2100")
    if isinstance(raw, str):
        _keep(_PARSED, (raw, naive_zone), ms)
    return ms


def _local(naive: datetime, raw: str, tz: tzinfo) -> datetime:
    """Wall time ``naive`` in ``tz``. A time in the repeated hour when clocks go back names
    two instants, and one in the skipped hour when they go forward none: both are refused
    (the reading goes to the DLQ, with its reason) rather than guessed. Taking the first
    occurrence dropped the second half-hour of the repeated hour as a stale duplicate of
    the first: energy lost without a word."""
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset():
        kind = "ambiguous" if first.utcoffset() > second.utcoffset() else "nonexistent"  # type: ignore[operator]
        what = "occurs twice" if kind == "ambiguous" else "does not exist"
        raise TimestampError(
            f"{kind}_local_time",
            f"local time {raw[:64]!r} {what} in {tz} (a daylight-saving change): send it with its UTC offset",
        )
    return first


# Hot path (one or two instants per reading): a fleet's readings share their interval
# boundaries, so recent results are kept; bounded dicts, emptied when full. 8,192 covers four
# weeks of 5-minute boundaries; the three caches then hold ~4 MB at most (~30 MB at 65,536,
# filled within minutes when a simulator's clock runs fast, for no more hits).
_CACHE_MAX: Final = 8_192
_PARSED: Final[dict[tuple[str, str | None], int]] = {}
_FORMATTED: Final[dict[int, str]] = {}
_MINUTES: Final[dict[int, str]] = {}


def _keep(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    """Store ``value`` under ``key`` in a bounded cache (emptied when full); return it."""
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


def clear_caches() -> None:
    """Empty the caches (tests start from a known state; no caller needs it for
    correctness)."""
    for cache in (_PARSED, _FORMATTED, _MINUTES):
        cache.clear()


def format_ms(ms: int) -> str:
    """ISO-8601 UTC with millisecond precision and a ``Z`` suffix.

    Recent whole-second instants are kept: interval boundaries repeat across a fleet. Others
    (a broker timestamp is unique per message) are formatted each time: kept, they pushed
    the boundaries out of the cache before they repeated."""
    text = _FORMATTED.get(ms)
    if text is not None:
        return text
    return _keep(_FORMATTED, ms, _format(ms)) if ms % 1000 == 0 else _format(ms)


# Zero-padded pieces, looked up instead of formatted: a broker timestamp (``ingested_at``)
# is unique per message, so ``_format`` runs once per normalized record.
_SECONDS: Final = [f"{s:02d}." for s in range(60)]
_MILLIS: Final = [f"{ms:03d}Z" for ms in range(1000)]


def _format(ms: int) -> str:
    minute, rest = divmod(ms, 60_000)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        prefix = _keep(_MINUTES, minute, (_EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:"))
    seconds, millis = divmod(rest, 1000)
    return prefix + _SECONDS[seconds] + _MILLIS[millis]
