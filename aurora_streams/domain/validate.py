"""Validation of decoded raw messages into :class:`~aurora_streams.domain.model.Reading`.

A raw message is one reading or a gateway batch ``{"device_id": ..., "readings": [...]}``.
Validation is a pure function of (payload, message key, broker timestamp, policy), so a
replay validates identically. Message-level problems raise :class:`InvalidReading`; a bad
reading inside a batch is reported on its own (with its index) and the rest of the batch
goes on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from aurora_streams.domain.flags import QUALITY_RANK, Flag
from aurora_streams.domain.model import DIRECTIONS, Kind, Reading
from aurora_streams.domain.timeutil import TimestampError, parse_timestamp
from aurora_streams.domain.units import normalize_unit
from aurora_streams.errors import InvalidReading

__all__ = [
    "CHANNEL_RE",
    "DEVICE_ID_RE",
    "MAX_ABS_VALUE",
    "MAX_INTERVAL_S",
    "ValidationPolicy",
    "id_problem",
    "validate_message",
]

# \Z, not $: "$" also matches before a trailing newline, and "m1\n" passed as an id.
DEVICE_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}\Z")
CHANNEL_RE: Final = re.compile(r"[A-Za-z0-9]{1,8}\Z")
_KINDS: Final = ("register", "interval")
MAX_ABS_VALUE: Final = 1e12
"""The largest magnitude a reading may have in its normalized unit (a terawatt-hour)."""
MAX_INTERVAL_S: Final = 366 * 86_400
"""Any length up to a year: a DST day is 82,800 or 90,000 s, and a NEM13 accumulation
spans its read period (months)."""


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    device_zones: Mapping[str, str] = field(default_factory=dict)
    """Zone per device for naive timestamps; without one a naive timestamp is rejected."""
    max_future_s: int = 300
    """A reading more than this far ahead of its broker timestamp is ``future_timestamp``."""
    max_batch_readings: int = 10_000


def validate_message(
    payload: object, *, key: str | None, broker_ts_ms: int, policy: ValidationPolicy
) -> list[Reading | InvalidReading]:
    """Validate one decoded raw message.

    Returns one entry per reading, in message order: the :class:`Reading`, or the
    :class:`InvalidReading` that reading raised. Raises :class:`InvalidReading` when the
    message as a whole is unusable (not an object, no device, key/device mismatch, ...).
    """
    if not _is_object(payload):
        raise InvalidReading("invalid_type", f"message must be a JSON object, got {type(payload).__name__}")
    if "readings" in payload:
        device_id = _device(payload.get("device_id"), "device_id")
        _check_key(key, device_id)
        readings = payload["readings"]
        if not _is_array(readings):
            raise InvalidReading("invalid_type", "field 'readings' must be an array", field="readings")
        if not readings:
            raise InvalidReading("empty_batch", "gateway batch has no readings", field="readings")
        if len(readings) > policy.max_batch_readings:
            raise InvalidReading(
                "batch_too_large",
                f"gateway batch has {len(readings)} readings, limit {policy.max_batch_readings}",
                field="readings",
            )
        out: list[Reading | InvalidReading] = []
        source = payload.get("source")
        for i, item in enumerate(readings):
            try:
                if not _is_object(item):
                    raise InvalidReading(
                        "invalid_type", f"reading must be an object, got {type(item).__name__}"
                    )
                own = item.get("device_id")
                if own is not None and own != device_id:
                    raise InvalidReading(
                        "device_mismatch",
                        f"reading names device {str(own)[:64]!r} inside a batch of {device_id!r}",
                        field="device_id",
                    )
                out.append(_reading(item, device_id, broker_ts_ms, policy, default_source=source))
            except InvalidReading as exc:
                out.append(exc.at_index(i))
        return out
    device_id = _device(payload.get("device_id"), "device_id")
    _check_key(key, device_id)
    return [_reading(payload, device_id, broker_ts_ms, policy, default_source=None)]


# ``type(x) is dict`` / ``list`` first: decoded JSON and Avro are plain dicts and lists, and
# an ABC's isinstance check costs more than a reading's other type checks together.
def id_problem(device_id: str, channel: str) -> str | None:
    """Why the worker would refuse a reading of ``device_id`` and ``channel`` (None: it
    would not): for producers (NEM12 ingest) to refuse before publishing what the worker
    can only dead-letter."""
    if not DEVICE_ID_RE.match(device_id):
        return f"device id {device_id[:64]!r} is not 1-64 of [A-Za-z0-9._:-] starting with a letter or digit"
    if not CHANNEL_RE.match(channel):
        return f"channel {channel[:16]!r} is not 1-8 letters or digits"
    return None


def _is_object(value: object) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)


def _is_array(value: object) -> TypeGuard[Sequence[Any]]:
    return type(value) is list or (isinstance(value, Sequence) and not isinstance(value, str | bytes))


def _check_key(key: str | None, device_id: str) -> None:
    # The raw topic is partitioned by device; a message keyed by another device would update
    # that device's state on the wrong partition.
    if key is not None and key != device_id:
        raise InvalidReading(
            "key_mismatch",
            f"message key {key[:64]!r} differs from device_id {device_id!r}",
            field="device_id",
        )


def _device(raw: object, name: str) -> str:
    if raw is None:
        raise InvalidReading("missing_field", f"field {name!r} is required", field=name)
    if not isinstance(raw, str):
        raise InvalidReading(
            "invalid_type", f"field {name!r} must be a string, got {type(raw).__name__}", field=name
        )
    if not DEVICE_ID_RE.match(raw):
        raise InvalidReading(
            "invalid_value",
            f"field {name!r} must be 1-64 of [A-Za-z0-9._:-], got {raw[:64]!r}",
            field=name,
        )
    return raw


def _number(raw: object, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidReading(
            "invalid_type",
            f"field {name!r} must be a number, got {type(raw).__name__}",
            field=name,
        )
    value = float(raw)
    if not math.isfinite(value):
        raise InvalidReading("not_finite", f"field {name!r} must be finite, got {raw}", field=name)
    return value


def _timestamp(raw: object, name: str, zone: str | None) -> int:
    try:
        return parse_timestamp(raw, naive_zone=zone)
    except TimestampError as exc:
        raise InvalidReading(exc.reason, f"field {name!r}: {exc}", field=name) from exc


def _reading(
    item: Mapping[str, Any],
    device_id: str,
    broker_ts_ms: int,
    policy: ValidationPolicy,
    *,
    default_source: object,
) -> Reading:
    channel = item.get("channel", "E1")
    if not isinstance(channel, str) or (channel not in _VALID_CHANNELS and not _valid_channel(channel)):
        raise InvalidReading(
            "invalid_value",
            f"field 'channel' must be 1-8 letters or digits, got {channel!r}"[:160],
            field="channel",
        )
    kind = item.get("kind")
    if kind is None:
        raise InvalidReading("missing_field", "field 'kind' is required", field="kind")
    if kind not in _KINDS:
        raise InvalidReading(
            "invalid_value",
            f"field 'kind' must be 'register' or 'interval', got {kind!r}"[:160],
            field="kind",
        )
    if "ts" not in item:
        raise InvalidReading("missing_field", "field 'ts' is required", field="ts")
    zone = policy.device_zones.get(device_id)
    ts_ms = _timestamp(item["ts"], "ts", zone)
    if "value" not in item:
        raise InvalidReading("missing_field", "field 'value' is required", field="value")
    original_value = _number(item["value"], "value")
    unit_raw = item.get("unit")
    if unit_raw is None:
        raise InvalidReading("missing_field", "field 'unit' is required", field="unit")
    if not isinstance(unit_raw, str):
        raise InvalidReading(
            "invalid_type",
            f"field 'unit' must be a string, got {type(unit_raw).__name__}",
            field="unit",
        )
    unit = normalize_unit(unit_raw)
    if unit is None:
        raise InvalidReading("unknown_unit", f"unknown unit {unit_raw[:32]!r}", field="unit")

    interval_raw = item.get("interval_s")
    interval_s: int | None = None
    if interval_raw is not None:
        if isinstance(interval_raw, bool) or not isinstance(interval_raw, int):
            raise InvalidReading("invalid_type", "field 'interval_s' must be an integer", field="interval_s")
        if not 1 <= interval_raw <= MAX_INTERVAL_S:
            raise InvalidReading(
                "invalid_value",
                f"field 'interval_s' must be 1..{MAX_INTERVAL_S} seconds, got {interval_raw}",
                field="interval_s",
            )
        interval_s = interval_raw
    elif kind == "interval":
        raise InvalidReading(
            "missing_field",
            "field 'interval_s' is required for interval readings",
            field="interval_s",
        )

    quality = item.get("quality", "A")
    if not isinstance(quality, str) or quality.upper() not in QUALITY_RANK:
        raise InvalidReading(
            "invalid_value",
            f"field 'quality' must be one of A E F S N V, got {quality!r}"[:160],
            field="quality",
        )
    quality = quality.upper()
    method = item.get("method")
    if method is not None:
        if isinstance(method, bool) or not isinstance(method, str | int):
            raise InvalidReading("invalid_type", "field 'method' must be a string", field="method")
        method = str(method)[:8]
    reason = item.get("reason_code")
    if reason is not None:
        if isinstance(reason, str) and reason.isdigit():
            reason = int(reason)
        if isinstance(reason, bool) or not isinstance(reason, int) or not 0 <= reason <= 999:
            raise InvalidReading(
                "invalid_value",
                "field 'reason_code' must be an integer 0..999",
                field="reason_code",
            )
    updated_at = item.get("updated_at")
    updated_at_ms = None if updated_at is None else _timestamp(updated_at, "updated_at", zone)
    source = item.get("source", default_source)
    if source is not None and not isinstance(source, str):
        raise InvalidReading("invalid_type", "field 'source' must be a string", field="source")
    if source is not None and len(source) > 128:
        raise InvalidReading("invalid_value", "field 'source' is longer than 128 characters", field="source")

    direction = item.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise InvalidReading(
            "invalid_value",
            f"field 'direction' must be 'consumption' or 'generation', got {direction!r}"[:160],
            field="direction",
        )

    value = original_value * unit.factor
    if not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
        # 1e306 MWh became an infinite kWh, and two 1.7e308 kWh readings an infinite day.
        raise InvalidReading(
            "value_out_of_range",
            f"value {original_value:g} {unit_raw[:16]} is beyond +-{MAX_ABS_VALUE:g} {unit.unit}",
            field="value",
        )
    flags: list[str] = []
    if unit.factor != 1.0:
        flags.append(Flag.UNIT_CONVERTED)
    if ts_ms > broker_ts_ms + policy.max_future_s * 1000:
        flags.append(Flag.FUTURE_TIMESTAMP)
    k: Kind = "register" if kind == "register" else "interval"
    # Positional: a named tuple built from keywords costs twice as much (per reading).
    return Reading(
        device_id,
        channel,
        k,
        ts_ms,
        value,
        unit.unit,
        original_value,
        unit_raw,
        interval_s,
        quality,
        method,
        reason,
        updated_at_ms,
        source or None,
        broker_ts_ms,
        tuple(flags),
        direction,
    )


_VALID_CHANNELS: Final[set[str]] = set()
"""Channel names already checked: a fleet has a handful, and the check runs per reading."""


def _valid_channel(channel: str) -> bool:
    if not CHANNEL_RE.match(channel):
        return False
    if len(_VALID_CHANNELS) < 1024:
        _VALID_CHANNELS.add(channel)
    return True
