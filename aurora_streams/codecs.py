"""Wire formats of the public records: Avro single-object encoding (fastavro) and JSON (orjson).

The raw topic accepts both: a value that starts with the Avro single-object marker
``C3 01`` followed by the CRC-64-AVRO fingerprint of a known schema is Avro, anything else is
parsed as JSON. Output topics use one encoding, chosen by ``AURORA_OUTPUT_ENCODING``.
In JSON, instants are ISO-8601 UTC strings and bytes are base64; in Avro, instants are
``timestamp-millis`` and bytes are bytes. The schemas in ``schemas/`` are the contracts.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Final, Literal

import fastavro
import orjson
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

from aurora_streams.domain.jsonbytes import dumps
from aurora_streams.domain.model import AnomalyEvent, NormalizedReading
from aurora_streams.domain.timeutil import format_ms, parse_timestamp
from aurora_streams.errors import InvalidReading

__all__ = [
    "AVRO_MAGIC",
    "Encoding",
    "anomaly_fields",
    "avro_decode",
    "avro_encode",
    "decode_forecast_entry",
    "decode_output",
    "decode_raw",
    "encode_anomaly",
    "encode_dead_letter",
    "encode_forecast",
    "encode_forecast_entry",
    "encode_normalized",
    "schema",
]

Encoding = Literal["json", "avro"]

AVRO_MAGIC: Final = b"\xc3\x01"
_NAN_OR_INF: Final = re.compile(rb":\s*-?(NaN|Infinity)\b")

RAW_READING: Final = "aurora.RawReading"
GATEWAY_BATCH: Final = "aurora.GatewayBatch"
NORMALIZED_READING: Final = "aurora.NormalizedReading"
ANOMALY_EVENT: Final = "aurora.AnomalyEvent"
DEAD_LETTER: Final = "aurora.DeadLetter"
FORECAST: Final = "aurora.Forecast"
SCHEMA_NAMES: Final = (RAW_READING, GATEWAY_BATCH, NORMALIZED_READING, ANOMALY_EVENT, DEAD_LETTER, FORECAST)

_TS_FIELDS: Final = {
    NORMALIZED_READING: ("ts_start", "ts_end", "updated_at", "ingested_at"),
    ANOMALY_EVENT: ("ts_end", "detected_at"),
    DEAD_LETTER: ("source_timestamp",),
    FORECAST: ("origin_ts",),
}


HISTORY: Final = ("1", "2")
"""Earlier versions of the schemas (``schemas/history/<version>/``, only the ones that
changed): records written with them stay decodable, read into the current schema by Avro's
resolution rules (a field added since then takes its default). Version 1 predates
``direction``; version 2 holds the ``aurora.Forecast`` whose points carried each window's
end and band (about 1.5 KB in Avro and 6 KB in JSON for a day of half hours, against
about 0.5 and 0.9 KB now)."""


@cache
def schema(name: str, version: str | None = None) -> Any:
    """The parsed fastavro schema called ``name`` (loaded from the package's ``schemas``),
    or its earlier ``version``."""
    folder = resources.files("aurora_streams") / "schemas"
    if version is not None:
        folder = folder / "history" / version
    with resources.as_file(folder / f"{name}.avsc") as p:
        return load_schema(str(p))


def _fingerprint_of(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


@cache
def _fingerprint(name: str) -> bytes:
    return _fingerprint_of(schema(name))


@cache
def _by_fingerprint() -> dict[bytes, tuple[str, Any]]:
    """Fingerprint -> (schema name, the schema the record was written with)."""
    known: dict[bytes, tuple[str, Any]] = {}
    for version in HISTORY:
        folder = resources.files("aurora_streams") / "schemas" / "history" / version
        for name in SCHEMA_NAMES:
            if (folder / f"{name}.avsc").is_file():
                old = schema(name, version)
                known[_fingerprint_of(old)] = (name, old)
    for name in SCHEMA_NAMES:
        known[_fingerprint(name)] = (name, schema(name))
    return known


def avro_encode(name: str, record: dict[str, Any]) -> bytes:
    """Avro single-object encoding: marker, 8-byte fingerprint, binary body."""
    buf = io.BytesIO()
    buf.write(AVRO_MAGIC)
    buf.write(_fingerprint(name))
    fastavro.schemaless_writer(buf, schema(name), record)
    return buf.getvalue()


def avro_decode(data: bytes) -> tuple[str, Any]:
    """Decode a single-object-encoded value; returns (schema name, record). Timestamps come
    back as they were written by the schema (``timestamp-millis`` as aware datetimes). A
    record written with an earlier version of the schema (:data:`HISTORY`) comes back in the
    current one."""
    if len(data) < 10 or not data.startswith(AVRO_MAGIC):
        raise InvalidReading("avro_truncated", "Avro single-object header is truncated")
    known = _by_fingerprint().get(data[2:10])
    if known is None:
        raise InvalidReading("avro_unknown_schema", f"unknown Avro schema fingerprint {data[2:10].hex()}")
    name, writer = known
    buf = io.BytesIO(data)
    buf.seek(10)
    try:
        current = schema(name)
        record = fastavro.schemaless_reader(buf, writer, None if writer is current else current)
    except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
        raise InvalidReading(
            "avro_malformed", f"Avro body does not match {name}: {type(exc).__name__}: {exc}"[:300]
        ) from exc
    if buf.tell() != len(data):
        raise InvalidReading(
            "avro_malformed", f"{len(data) - buf.tell()} trailing bytes after the {name} body"
        )
    return name, record


def decode_raw(data: bytes | None, *, max_bytes: int) -> object:
    """Decode a raw-topic value (Avro single-object or JSON) into plain Python objects."""
    if data is None:
        raise InvalidReading("empty_message", "message has no value (tombstone)")
    if len(data) > max_bytes:
        raise InvalidReading(
            "payload_too_large", f"message of {len(data)} bytes exceeds the limit of {max_bytes}"
        )
    if data.startswith(AVRO_MAGIC):
        name, record = avro_decode(data)
        if name not in (RAW_READING, GATEWAY_BATCH):
            raise InvalidReading("avro_wrong_schema", f"{name} is not a raw reading or batch")
        return record
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        if "infinity" in text:
            # JSON has no NaN or infinity; a literal too large for a double overflows.
            raise InvalidReading("not_finite", f"number overflows to infinity: {text}"[:300]) from exc
        if _NAN_OR_INF.search(data[:65536]):
            raise InvalidReading("not_finite", f"NaN or Infinity is not a JSON number: {text}"[:300]) from exc
        raise InvalidReading("invalid_json", f"not valid JSON: {text}"[:300]) from exc


def _json_ready(name: str, record: dict[str, Any]) -> dict[str, Any]:
    for key in _TS_FIELDS.get(name, ()):
        value = record[key]
        if value is not None:
            record[key] = format_ms(value)
    return record


def _encode(name: str, record: dict[str, Any], encoding: Encoding) -> bytes:
    if encoding == "avro":
        return avro_encode(name, record)
    return dumps(_json_ready(name, record))


_NORMALIZED_FIELDS: Final = NormalizedReading._fields
_ANOMALY_FIELDS: Final = AnomalyEvent._fields


def encode_normalized(rec: NormalizedReading, encoding: Encoding = "json") -> bytes:
    if encoding == "avro":
        d: dict[str, Any] = dict(zip(_NORMALIZED_FIELDS, rec, strict=True))
        d["flags"] = list(rec.flags)
        return avro_encode(NORMALIZED_READING, d)
    # One record per reading: the fields written out (in ``_NORMALIZED_FIELDS`` order, the
    # generic path's) halve the encoding's cost; a unit test keeps them equal.
    ts_start, updated_at = rec.ts_start, rec.updated_at
    return dumps(
        {
            "event_id": rec.event_id,
            "device_id": rec.device_id,
            "channel": rec.channel,
            "kind": rec.kind,
            "ts_start": None if ts_start is None else format_ms(ts_start),
            "ts_end": format_ms(rec.ts_end),
            "value_kwh": rec.value_kwh,
            "register_kwh": rec.register_kwh,
            "delta_kwh": rec.delta_kwh,
            "unit": rec.unit,
            "quality": rec.quality,
            "method": rec.method,
            "reason_code": rec.reason_code,
            "flags": list(rec.flags),
            "revision": rec.revision,
            "updated_at": None if updated_at is None else format_ms(updated_at),
            "source": rec.source,
            "ingested_at": format_ms(rec.ingested_at),
            "original_value": rec.original_value,
            "original_unit": rec.original_unit,
            "interval_s": rec.interval_s,
            "direction": rec.direction,
        }
    )


def anomaly_fields(event: AnomalyEvent) -> dict[str, Any]:
    """The fields of ``aurora.AnomalyEvent`` (instants as epoch ms), as ``decode_output``
    returns them."""
    return dict(zip(_ANOMALY_FIELDS, event, strict=True))


def encode_anomaly(event: AnomalyEvent, encoding: Encoding = "json") -> bytes:
    return _encode(ANOMALY_EVENT, anomaly_fields(event), encoding)


def encode_dead_letter(letter: dict[str, Any], encoding: Encoding = "json") -> bytes:
    """Encode a DLQ record (a dict with the fields of ``aurora.DeadLetter``; the size and
    digest of the original are computed when absent)."""
    d = dict(letter)
    if "original_size" not in d:
        original = d["original_value"]
        d["original_size"] = None if original is None else len(original)
        d["original_sha256"] = None if original is None else hashlib.sha256(original).hexdigest()
        d.setdefault("original_truncated", False)
    if encoding == "avro":
        return avro_encode(DEAD_LETTER, d)
    for key in ("original_key", "original_value"):
        if d[key] is not None:
            d[key] = base64.b64encode(d[key]).decode()
    return dumps(_json_ready(DEAD_LETTER, d))


def encode_forecast(record: dict[str, Any], encoding: Encoding = "json") -> bytes:
    """Encode a ``meter.forecasts`` record (see :func:`domain.forecast.forecast_record`)."""
    if encoding == "avro":
        return avro_encode(FORECAST, record)
    return dumps({**record, "origin_ts": format_ms(record["origin_ts"])})


def _to_ms(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.astimezone(UTC).timestamp() * 1000 + 0.5)
    return value


def decode_output(data: bytes) -> dict[str, Any]:
    """Decode an output-topic value (either encoding) back to a dict with instants as UTC
    epoch ms and bytes as bytes. For consumers, tests and tools."""
    if data.startswith(AVRO_MAGIC):
        name, record = avro_decode(data)
        for key in _TS_FIELDS.get(name, ()):
            record[key] = _to_ms(record.get(key))
        return dict(record)
    doc = orjson.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("output record is not an object")
    if "source_topic" in doc:
        fields: tuple[str, ...] = _TS_FIELDS[DEAD_LETTER]
        for key in ("original_key", "original_value"):
            if doc.get(key) is not None:
                doc[key] = base64.b64decode(doc[key])
    elif "anomaly_id" in doc:
        fields = _TS_FIELDS[ANOMALY_EVENT]
    elif "forecast_id" in doc:
        fields = _TS_FIELDS[FORECAST]
    else:
        fields = _TS_FIELDS[NORMALIZED_READING]
    for key in fields:
        if doc.get(key) is not None:
            doc[key] = parse_timestamp(doc[key])
    return doc


def encode_forecast_entry(open_end: int | None, state: bytes) -> bytes:
    """A ``forecasts`` table value under ``device|channel``: the open window's end (ASCII
    digits, or ``-``) and a newline, then the forecaster's head
    (:mod:`aurora_streams.domain.forecast_blocks`, version 4; its blocks are stored under
    ``device|channel|<block>``). Values stored before the blocks hold the whole state
    (version 3, or the JSON of ``to_dict``), which the views read and store again in
    blocks. The window end is read on every reading; the model only when a window closes."""
    return b"%d\n" % open_end + state if open_end is not None else b"-\n" + state


def decode_forecast_entry(value: bytes) -> tuple[int | None, bytes]:
    """Split :func:`encode_forecast_entry` at its first newline (the head has none)."""
    head, _, state = value.partition(b"\n")
    return (None if head == b"-" else int(head)), state
