"""Every public record in both encodings, checked against the schemas in schemas/."""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import orjson
import pytest

from aurora_streams import codecs
from aurora_streams.domain.model import AnomalyEvent, NormalizedReading
from aurora_streams.errors import InvalidReading

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

NORMALIZED = NormalizedReading(
    event_id="e" * 32,
    device_id="m1",
    channel="E1",
    kind="register",
    ts_start=1_735_653_300_000,
    ts_end=1_735_653_600_000,
    value_kwh=12.5,
    register_kwh=12.5,
    delta_kwh=0.25,
    unit="kWh",
    quality="A",
    method=None,
    reason_code=None,
    flags=("gap",),
    revision=2,
    updated_at=None,
    source="gw",
    ingested_at=1_735_653_601_000,
    original_value=12500.0,
    original_unit="Wh",
    interval_s=None,
)
ANOMALY = AnomalyEvent(
    "a" * 32, "e" * 32, "m1", "E1", 1_735_653_600_000, "gap", 2.0, "2 missing", 1, False, 1_735_653_601_000
)
LETTER = {
    "source_topic": "meter.readings.raw",
    "source_partition": 3,
    "source_offset": 17,
    "source_timestamp": 1_735_653_600_000,
    "original_key": b"m1",
    "original_value": b"\xff{",
    "reading_index": None,
    "error_class": "InvalidReading",
    "error_reason": "invalid_json",
    "error_message": "not valid JSON",
    "original_size": 2,
    "original_sha256": "b26f99543485cab0666a50160ed4281d01669a10feb99985525b10dd791f1e9d",
    "original_truncated": False,
}


def test_schema_files_are_valid_avro() -> None:
    names = sorted(p.stem for p in SCHEMAS.glob("*.avsc"))
    assert names == sorted(codecs.SCHEMA_NAMES)
    for name in names:
        json.loads((SCHEMAS / f"{name}.avsc").read_text())
        assert codecs.schema(name) is not None


@pytest.mark.parametrize("encoding", ["json", "avro"])
def test_normalized_round_trip(encoding: str) -> None:
    data = codecs.encode_normalized(NORMALIZED, encoding)  # type: ignore[arg-type]
    back = codecs.decode_output(data)
    assert back == {**NORMALIZED._asdict(), "flags": ["gap"]}
    assert back["ts_end"] == NORMALIZED.ts_end and back["flags"] == ["gap"] and back["revision"] == 2
    if encoding == "json":
        doc = orjson.loads(data)
        assert doc["ts_end"] == "2024-12-31T14:00:00.000Z"
        fastavro.validate(
            {
                **doc,
                "ts_start": NORMALIZED.ts_start,
                "ts_end": NORMALIZED.ts_end,
                "ingested_at": NORMALIZED.ingested_at,
            },
            codecs.schema(codecs.NORMALIZED_READING),
            raise_errors=True,
        )


@pytest.mark.parametrize("encoding", ["json", "avro"])
def test_anomaly_and_dead_letter_round_trip(encoding: str) -> None:
    back = codecs.decode_output(codecs.encode_anomaly(ANOMALY, encoding))  # type: ignore[arg-type]
    assert back["anomaly_id"] == ANOMALY.anomaly_id and back["ts_end"] == ANOMALY.ts_end
    letter = codecs.decode_output(codecs.encode_dead_letter(LETTER, encoding))  # type: ignore[arg-type]
    assert letter == LETTER


@pytest.mark.parametrize(
    "doc",
    [
        {"device_id": "m1", "ts": 1_735_653_600_000, "kind": "register", "value": 1.0, "unit": "kWh"},
        {
            "device_id": "m1",
            "readings": [
                {
                    "ts": "2025-01-01T00:00:00+10:00",
                    "kind": "interval",
                    "value": 1.0,
                    "unit": "kWh",
                    "interval_s": 300,
                }
            ],
        },
    ],
)
def test_raw_accepts_json_and_avro(doc: dict[str, object]) -> None:
    assert codecs.decode_raw(orjson.dumps(doc), max_bytes=10_000) == doc
    if "readings" in doc:
        readings = [
            {
                **r,
                "device_id": None,
                "channel": "E1",
                "quality": "A",
                "method": None,
                "reason_code": None,
                "updated_at": None,
                "source": None,
            }
            for r in doc["readings"]
        ]  # type: ignore[attr-defined]
        avro = codecs.avro_encode(codecs.GATEWAY_BATCH, {**doc, "source": None, "readings": readings})
    else:
        avro = codecs.avro_encode(codecs.RAW_READING, {**doc, "channel": "E1"})
    decoded = codecs.decode_raw(avro, max_bytes=10_000)
    assert isinstance(decoded, dict) and decoded["device_id"] == "m1"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "empty_message"),
        (b"{not json", "invalid_json"),
        (b"x" * 20_000, "payload_too_large"),
        (codecs.AVRO_MAGIC + b"\x00\x01", "avro_truncated"),
        (codecs.AVRO_MAGIC + b"\x00" * 8 + b"\x02", "avro_unknown_schema"),
    ],
)
def test_raw_decode_errors(data: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidReading) as info:
        codecs.decode_raw(data, max_bytes=10_000)
    assert info.value.reason == reason


def test_truncated_avro_body_and_wrong_schema() -> None:
    good = codecs.avro_encode(
        codecs.RAW_READING, {"device_id": "m1", "ts": 1, "kind": "register", "value": 1.0, "unit": "kWh"}
    )
    with pytest.raises(InvalidReading) as info:
        codecs.decode_raw(good[:-3], max_bytes=10_000)
    assert info.value.reason == "avro_malformed"
    with pytest.raises(InvalidReading) as info:
        codecs.decode_raw(good + b"\x00", max_bytes=10_000)
    assert info.value.reason == "avro_malformed"
    wrong = codecs.avro_encode(codecs.ANOMALY_EVENT, ANOMALY._asdict())
    with pytest.raises(InvalidReading) as info:
        codecs.decode_raw(wrong, max_bytes=10_000)
    assert info.value.reason == "avro_wrong_schema"


@pytest.mark.parametrize(
    "rec",
    [
        NORMALIZED,
        NORMALIZED._replace(
            ts_start=None, updated_at=1_735_653_601_234, flags=(), ingested_at=1_735_653_601_999
        ),
        NORMALIZED._replace(
            kind="interval",
            register_kwh=None,
            delta_kwh=None,
            method="11",
            reason_code=79,
            flags=("estimated", "late", "out_of_order"),
            source=None,
            interval_s=300,
            ingested_at=946_684_800_001,
        ),
    ],
)
def test_normalized_json_written_out_equals_the_generic_encoding(rec: NormalizedReading) -> None:
    """``encode_normalized`` writes the JSON fields out (the hot path); it must produce the
    bytes the generic path does, field order included (a new field fails here)."""
    generic = dict(zip(NormalizedReading._fields, rec, strict=True))
    generic["flags"] = list(rec.flags)
    assert codecs.encode_normalized(rec, "json") == orjson.dumps(
        codecs._json_ready(codecs.NORMALIZED_READING, generic)
    )


def _v1(name: str, record: dict[str, object]) -> bytes:
    """A record as a producer built before ``direction`` wrote it (schemas/history/1)."""
    import io

    from fastavro.schema import fingerprint, to_parsing_canonical_form

    old = codecs.schema(name, "1")
    assert "direction" not in {f["name"] for f in old["fields"]}
    buf = io.BytesIO()
    buf.write(codecs.AVRO_MAGIC + bytes.fromhex(fingerprint(to_parsing_canonical_form(old), "CRC-64-AVRO")))
    fastavro.schemaless_writer(buf, old, record)
    return buf.getvalue()


def test_records_written_before_direction_still_decode_with_it_null() -> None:
    d = dict(zip(NormalizedReading._fields, NORMALIZED, strict=True))
    del d["direction"]
    d["flags"] = list(NORMALIZED.flags)
    old = _v1("aurora.NormalizedReading", d)
    assert old[2:10] != codecs.encode_normalized(NORMALIZED, "avro")[2:10]  # another fingerprint
    doc = codecs.decode_output(old)
    assert doc["direction"] is None and doc["delta_kwh"] == 0.25 and doc["ts_end"] == NORMALIZED.ts_end
    batch = {"device_id": "m1", "source": None, "readings": [
        {"device_id": None, "channel": "E1", "ts": 1_735_653_600_000, "kind": "interval", "value": 1.0,
         "unit": "kWh", "interval_s": 1800, "quality": "A", "method": None, "reason_code": None,
         "updated_at": None, "source": None},
    ]}  # fmt: skip
    raw = codecs.decode_raw(_v1("aurora.GatewayBatch", batch), max_bytes=1 << 20)
    assert raw["readings"][0]["direction"] is None and raw["readings"][0]["value"] == 1.0  # type: ignore[index]


def test_direction_round_trips_in_both_encodings() -> None:
    rec = NORMALIZED._replace(direction="generation")
    for encoding in ("json", "avro"):
        assert codecs.decode_output(codecs.encode_normalized(rec, encoding))["direction"] == "generation"  # type: ignore[arg-type]


def test_forecasts_written_with_points_still_decode() -> None:
    """A ``meter.forecasts`` record of schema version 1 (schemas/history/2: a point per window
    with its end and band) decodes into version 2 with no values, not as an error."""
    import io

    from fastavro.schema import fingerprint, to_parsing_canonical_form

    old = codecs.schema("aurora.Forecast", "2")
    assert "points" in {f["name"] for f in old["fields"]}
    record = {
        "forecast_id": "m1|E1|1735653600000", "device_id": "m1", "channel": "E1",
        "origin_ts": 1_735_653_600_000, "window_minutes": 30, "model": "m", "member": "robust_median",
        "learned_windows": 96, "accuracy": {"scored": 0},
        "points": [{"ts_end": 1_735_655_400_000, "value": 0.5, "lower": 0.4, "upper": 0.6}],
    }  # fmt: skip
    buf = io.BytesIO()
    buf.write(codecs.AVRO_MAGIC + bytes.fromhex(fingerprint(to_parsing_canonical_form(old), "CRC-64-AVRO")))
    fastavro.schemaless_writer(buf, old, record)
    doc = codecs.decode_output(buf.getvalue())
    assert doc["values"] == [] and doc["band"] == 0.0 and "points" not in doc
    assert doc["origin_ts"] == 1_735_653_600_000 and doc["learned_windows"] == 96
