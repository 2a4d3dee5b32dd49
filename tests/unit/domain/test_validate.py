"""Validation of raw messages: every rejection reason, and what passes."""

from __future__ import annotations

from typing import Any

import pytest

from aurora_streams.domain.flags import Flag
from aurora_streams.domain.model import Reading
from aurora_streams.domain.timeutil import format_ms, parse_timestamp
from aurora_streams.domain.units import normalize_unit
from aurora_streams.domain.validate import ValidationPolicy, validate_message
from aurora_streams.errors import InvalidReading

NOW = 1_735_653_600_000
POLICY = ValidationPolicy(device_zones={"zoned": "Australia/Brisbane"}, max_batch_readings=3)


def one(payload: Any, key: str | None = "m1") -> Reading:
    [item] = validate_message(payload, key=key, broker_ts_ms=NOW, policy=POLICY)
    if isinstance(item, InvalidReading):
        raise item
    return item


def good(**kw: Any) -> dict[str, Any]:
    return {
        "device_id": "m1",
        "ts": "2025-01-01T00:00:00+10:00",
        "kind": "interval",
        "value": 500,
        "unit": "Wh",
        "interval_s": 1800,
        **kw,
    }


def test_valid_reading_is_normalized_to_kwh_and_utc() -> None:
    r = one(good())
    assert r.value == 0.5 and r.unit == "kWh" and r.original_value == 500 and r.original_unit == "Wh"
    assert r.ts_ms == NOW and r.channel == "E1" and r.quality == "A"
    assert r.arrival_flags == (Flag.UNIT_CONVERTED,)
    assert r.ingested_at_ms == NOW


@pytest.mark.parametrize(
    ("unit", "value", "expected", "norm"),
    [
        ("kWh", 2.0, 2.0, "kWh"),
        ("KWH", 2.0, 2.0, "kWh"),
        ("MWh", 0.002, 2.0, "kWh"),
        ("varh", 1000, 1.0, "kvarh"),
        ("kVAh", 3.0, 3.0, "kVAh"),
    ],
)
def test_units(unit: str, value: float, expected: float, norm: str) -> None:
    r = one(good(unit=unit, value=value))
    assert r.value == pytest.approx(expected) and r.unit == norm
    assert normalize_unit(unit) is not None


@pytest.mark.parametrize(
    ("patch", "reason", "field"),
    [
        ({"device_id": None}, "missing_field", "device_id"),
        ({"device_id": 5}, "invalid_type", "device_id"),
        ({"device_id": "bad id!"}, "invalid_value", "device_id"),
        ({"device_id": "m1\n"}, "invalid_value", "device_id"),  # "$" matched before the newline
        ({"kind": None}, "missing_field", "kind"),
        ({"kind": "gauge"}, "invalid_value", "kind"),
        ({"ts": None}, "invalid_type", "ts"),
        ({"ts": "2025-01-01T00:00:00"}, "naive_timestamp", "ts"),
        ({"ts": "yesterday"}, "invalid_timestamp", "ts"),
        ({"ts": 1.5e12 + 0.5}, "invalid_type", "ts"),
        ({"ts": True}, "invalid_type", "ts"),
        ({"ts": "1970-01-01T00:00:00Z"}, "absurd_timestamp", "ts"),
        ({"ts": "9999-12-31T00:00:00Z"}, "absurd_timestamp", "ts"),
        ({"value": "12"}, "invalid_type", "value"),
        ({"value": float("nan")}, "not_finite", "value"),
        ({"value": float("inf")}, "not_finite", "value"),
        ({"value": True}, "invalid_type", "value"),
        ({"value": 1e306, "unit": "MWh"}, "value_out_of_range", "value"),  # was an infinite kWh
        ({"value": 1.7e308, "unit": "kWh"}, "value_out_of_range", "value"),
        ({"value": -2e12, "unit": "kWh"}, "value_out_of_range", "value"),
        ({"unit": "furlongs"}, "unknown_unit", "unit"),
        ({"unit": None}, "missing_field", "unit"),
        ({"interval_s": None}, "missing_field", "interval_s"),
        ({"interval_s": 0}, "invalid_value", "interval_s"),
        ({"interval_s": 366 * 86_400 + 1}, "invalid_value", "interval_s"),
        ({"interval_s": "1800"}, "invalid_type", "interval_s"),
        ({"quality": "Z"}, "invalid_value", "quality"),
        ({"reason_code": 5000}, "invalid_value", "reason_code"),
        ({"channel": "E 1"}, "invalid_value", "channel"),
        ({"channel": "E1\n"}, "invalid_value", "channel"),
        ({"channel": {}}, "invalid_value", "channel"),  # unhashable: not a crash (schemathesis)
        ({"channel": ["E1"]}, "invalid_value", "channel"),
        ({"ts": ["2025-01-01T00:00:00Z"]}, "invalid_type", "ts"),
        ({"source": 3}, "invalid_type", "source"),
        ({"direction": "import"}, "invalid_value", "direction"),  # ambiguous: whose import?
        ({"direction": ["consumption"]}, "invalid_value", "direction"),
    ],
)
def test_rejections_name_reason_and_field(patch: dict[str, Any], reason: str, field: str) -> None:
    payload = good(**patch)
    if patch.get(field, "x") is None and field in ("kind", "unit", "interval_s", "device_id"):
        payload.pop(field)
    with pytest.raises(InvalidReading) as info:
        one(payload)
    assert info.value.reason == reason and info.value.field == field
    assert field in info.value.message


def test_naive_timestamp_accepted_with_device_zone() -> None:
    r = one(good(device_id="zoned", ts="2025-01-01T00:00:00"), key="zoned")
    assert r.ts_ms == NOW


def test_epoch_ms_and_z_suffix() -> None:
    assert one(good(ts=NOW)).ts_ms == NOW
    assert one(good(ts="2024-12-31T14:00:00Z")).ts_ms == NOW
    assert parse_timestamp(format_ms(NOW + 123)) == NOW + 123


def test_future_timestamp_flagged_not_rejected() -> None:
    r = one(good(ts=NOW + 3600_000))
    assert Flag.FUTURE_TIMESTAMP in r.arrival_flags


def test_key_must_match_device() -> None:
    with pytest.raises(InvalidReading) as info:
        one(good(), key="other")
    assert info.value.reason == "key_mismatch"


def test_not_an_object() -> None:
    with pytest.raises(InvalidReading) as info:
        one([1, 2])
    assert info.value.reason == "invalid_type"


def test_batch_keeps_good_readings_and_reports_bad_ones_by_index() -> None:
    batch = {
        "device_id": "m1",
        "source": "gw-7",
        "readings": [
            {k: v for k, v in good().items() if k != "device_id"},
            good(device_id="m2"),
            good(value=float("nan")),
        ],
    }
    items = validate_message(batch, key="m1", broker_ts_ms=NOW, policy=POLICY)
    assert isinstance(items[0], Reading) and items[0].source == "gw-7"
    assert (
        isinstance(items[1], InvalidReading) and items[1].reason == "device_mismatch" and items[1].index == 1
    )
    assert isinstance(items[2], InvalidReading) and items[2].reason == "not_finite"
    assert items[2].message.startswith("reading[2]:")


@pytest.mark.parametrize(
    ("batch", "reason"),
    [
        ({"device_id": "m1", "readings": []}, "empty_batch"),
        ({"device_id": "m1", "readings": "x"}, "invalid_type"),
        ({"device_id": "m1", "readings": [{}] * 4}, "batch_too_large"),
        ({"readings": [{}]}, "missing_field"),
        ({"device_id": "m1", "readings": {"ts": 1}}, "invalid_type"),
        ({"device_id": "m1", "readings": b"x"}, "invalid_type"),
    ],
)
def test_bad_batches(batch: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidReading) as info:
        validate_message(batch, key="m1", broker_ts_ms=NOW, policy=POLICY)
    assert info.value.reason == reason


def test_format_ms_matches_datetime() -> None:
    from datetime import UTC, datetime

    for ms in (946_684_800_000, 1_735_653_600_123, 4_102_444_799_999, 951_782_400_000):  # incl. 2000-02-29
        expected = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        assert format_ms(ms) == expected


@pytest.mark.parametrize("payload", [[1, 2], "x", 5, None, b"{}"])
def test_a_message_that_is_not_an_object_is_rejected(payload: object) -> None:
    with pytest.raises(InvalidReading) as info:
        validate_message(payload, key="m1", broker_ts_ms=NOW, policy=POLICY)
    assert info.value.reason == "invalid_type"


def test_any_mapping_and_sequence_pass_not_only_dicts_and_lists() -> None:
    """The checks take plain dicts and lists first (what JSON and Avro decode to); other
    mappings and sequences are still accepted, and a non-object reading is rejected alone."""
    from types import MappingProxyType

    one = MappingProxyType(good())
    [item] = validate_message(one, key="m1", broker_ts_ms=NOW, policy=POLICY)
    assert isinstance(item, Reading)
    batch = MappingProxyType({"device_id": "m1", "readings": (one, 7)})
    first, second = validate_message(batch, key="m1", broker_ts_ms=NOW, policy=POLICY)
    assert isinstance(first, Reading)
    assert isinstance(second, InvalidReading) and second.reason == "invalid_type" and second.index == 1


@pytest.mark.parametrize("interval_s", [82_800, 90_000, 7, 92 * 86_400])
def test_any_interval_length_up_to_a_year_is_accepted(interval_s: int) -> None:
    # A DST day is 23 or 25 hours, and a NEM13 accumulation spans its read period.
    [r] = validate_message(good(interval_s=interval_s), key="m1", broker_ts_ms=NOW, policy=POLICY)
    assert isinstance(r, Reading) and r.interval_s == interval_s


def test_direction_is_optional_and_carried() -> None:
    assert one(good()).direction is None
    assert one(good(direction="generation", channel="41")).direction == "generation"
