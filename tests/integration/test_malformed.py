"""Broken input of every kind lands in the DLQ with a specific reason; the worker goes on."""

from __future__ import annotations

import hashlib

import orjson

from aurora_streams.codecs import AVRO_MAGIC, RAW_READING, avro_encode, decode_output
from aurora_streams.simulator import SimMessage
from tests.integration.harness import Deployment

TS = 1_735_653_600_000


def reading(**kw: object) -> dict[str, object]:
    return {
        "device_id": "m1",
        "ts": "2025-01-01T00:00:00+10:00",
        "kind": "interval",
        "value": 0.5,
        "unit": "kWh",
        "interval_s": 1800,
        **kw,
    }


def test_malformed_messages_go_to_dlq_with_reasons(deployment: Deployment) -> None:
    good_avro = avro_encode(RAW_READING, {**reading(), "channel": "E1"})
    nan_avro = avro_encode(RAW_READING, {**reading(value=float("nan")), "channel": "E1"})
    cases: list[tuple[bytes, str, int | None]] = [
        (good_avro[:14], "avro_malformed", None),  # truncated Avro
        (AVRO_MAGIC + b"\x01", "avro_truncated", None),
        (b'{"device_id": "m1", "ts": ', "invalid_json", None),  # invalid JSON
        (orjson.dumps(reading(value="12")), "invalid_type", None),  # wrong types
        (orjson.dumps(reading(interval_s="1800")), "invalid_type", None),
        (nan_avro, "not_finite", None),  # NaN
        (
            b'{"device_id":"m1","ts":1735653600000,"kind":"interval","value":1e999,"unit":"kWh","interval_s":1800}',
            "not_finite",
            None,
        ),  # inf
        (
            b'{"device_id":"m1","ts":1735653600000,"kind":"interval","value":NaN,"unit":"kWh","interval_s":1800}',
            "not_finite",
            None,
        ),  # NaN in JSON text
        (orjson.dumps(reading(ts="2025-01-01T00:00:00")), "naive_timestamp", None),
        (orjson.dumps(reading(unit="therms")), "unknown_unit", None),
        (orjson.dumps(reading(ts="0001-01-01T00:00:00+00:00")), "absurd_timestamp", None),
        (orjson.dumps(reading(source="x" * 300_000)), "payload_too_large", None),  # oversized
        (
            orjson.dumps(
                {"device_id": "m1", "readings": [reading(ts=TS + 1800_000), reading(device_id="m2")]}
            ),
            "device_mismatch",
            1,
        ),  # batch naming another device
        (orjson.dumps([1, 2, 3]), "invalid_type", None),
        (orjson.dumps(reading(device_id="m9")), "key_mismatch", None),
    ]
    messages = [SimMessage(b"m1", value, TS + i) for i, (value, _, _) in enumerate(cases)]
    messages.append(SimMessage(b"m1", orjson.dumps(reading(ts=TS + 3600_000)), TS + 100))  # still works after
    dep = deployment
    dep.produce(messages)
    w = dep.start_worker("solo")
    w.wait_ready()
    s = dep.settings
    dlq = dep.read(s.topic_dlq, until=lambda r: len(r) >= len(cases))
    letters = sorted((decode_output(r.value) for r in dlq if r.value), key=lambda d: d["source_offset"])
    assert [(d["error_reason"], d["reading_index"]) for d in letters] == [(r, i) for _, r, i in cases]
    for letter, (value, _, _) in zip(letters, cases, strict=True):
        assert letter["original_key"] == b"m1" and letter["original_size"] == len(value)
        assert letter["original_sha256"] == hashlib.sha256(value).hexdigest()
        if letter["error_reason"] == "payload_too_large":  # a prefix: the letter must fit the broker
            assert letter["original_truncated"] and value.startswith(letter["original_value"])
            assert len(letter["original_value"]) == 4096
        else:
            assert letter["original_value"] == value and not letter["original_truncated"]
        assert letter["source_topic"] == s.topic_raw and letter["error_message"]
    normalized = [
        decode_output(r.value) for r in dep.read(s.topic_normalized, until=lambda r: len(r) >= 2) if r.value
    ]
    # The good reading inside the mixed batch and the one after all the bad input.
    assert sorted(d["ts_end"] for d in normalized) == [TS + 1800_000, TS + 3600_000]
    assert w.proc is not None and w.proc.poll() is None
