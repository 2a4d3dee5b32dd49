"""The processor: routing, DLQ records, replay fencing."""

from __future__ import annotations

from typing import Any

import orjson

from aurora_streams.codecs import decode_output
from aurora_streams.domain.device import ChannelState, DeviceState
from aurora_streams.processing import Processor, build_processor, new_state
from aurora_streams.settings import Settings

TS = 1_735_653_600_000


def make() -> Processor:
    s = Settings()
    return build_processor(s)


def msg(i: int, value: float) -> bytes:
    return orjson.dumps(
        {"device_id": "m1", "ts": TS + i * 300_000, "kind": "register", "value": value, "unit": "kWh"}
    )


def test_outputs_keyed_by_device_and_routed() -> None:
    p, states = make(), {}
    out = p.process(b"m1", msg(0, 5.0), partition=2, offset=0, timestamp_ms=TS, states=states, load=new_state)
    assert [(o.topic, o.key) for o in out] == [("meter.readings.normalized", b"m1")]
    out = p.process(b"m1", msg(1, 1.0), partition=2, offset=1, timestamp_ms=TS, states=states, load=new_state)
    assert [o.topic for o in out] == ["meter.readings.normalized", "meter.anomalies"]
    assert states["m1"].last_offset == 1


def test_redelivered_offsets_are_fenced() -> None:
    p, states = make(), {}
    for i in range(3):
        p.process(
            b"m1",
            msg(i, float(i)),
            partition=0,
            offset=10 + i,
            timestamp_ms=TS,
            states=states,
            load=new_state,
        )
    before = states["m1"].to_bytes()
    for i in range(3):
        assert (
            p.process(
                b"m1",
                msg(i, float(i)),
                partition=0,
                offset=10 + i,
                timestamp_ms=TS,
                states=states,
                load=new_state,
            )
            == []
        )
    assert states["m1"].to_bytes() == before and p.stats["replayed"] == 3
    # The same reading under a new offset is a genuine duplicate from the source.
    assert (
        p.process(b"m1", msg(2, 2.0), partition=0, offset=20, timestamp_ms=TS, states=states, load=new_state)
        == []
    )
    assert p.stats["duplicate"] == 1


def test_dead_letter_keeps_original_bytes_and_location() -> None:
    p = make()
    out = p.process(b"\xff", b"whatever", partition=1, offset=7, timestamp_ms=TS, states={}, load=new_state)
    [letter] = [decode_output(o.value) for o in out]
    assert letter["error_reason"] == "invalid_key" and letter["original_value"] == b"whatever"
    assert (letter["source_partition"], letter["source_offset"]) == (1, 7)


def test_state_loader_used_once_per_device() -> None:
    p, states, calls = make(), {}, []

    def load(device: str) -> DeviceState:
        calls.append(device)
        return DeviceState()

    for i in range(3):
        p.process(b"m1", msg(i, float(i)), partition=0, offset=i, timestamp_ms=TS, states=states, load=load)
    assert calls == ["m1"]


def test_a_bug_on_one_message_goes_to_the_dlq_and_processing_goes_on() -> None:
    # The "bug": m2's stored state holds something that is not an entry. No monkeypatching:
    # the compiled core (aurora_streams.native) calls the state machine directly.
    def load(device_id: str) -> DeviceState:
        if device_id == "m2":
            return DeviceState({"E1": ChannelState("register", False, [None])})  # type: ignore[list-item]
        return DeviceState()

    p, states = make(), {}
    m2 = msg(1, 1.0).replace(b'"m1"', b'"m2"')
    sent = [(b"m1", msg(0, 0.0)), (b"m2", m2), (b"m1", msg(1, 1.0))]
    outs = [
        p.process(key, value, partition=0, offset=i, timestamp_ms=TS, states=states, load=load)
        for i, (key, value) in enumerate(sent)
    ]
    [letter] = [decode_output(o.value) for o in outs[1]]
    # AttributeError in pure Python, TypeError in the compiled core: either is a bug, not bad input.
    assert letter["error_reason"] == "internal_error"
    assert letter["error_class"] in ("AttributeError", "TypeError")
    assert letter["original_value"] == m2 and p.stats["dlq:internal_error"] == 1
    assert outs[2] and outs[2][0].topic == "meter.readings.normalized"


def test_process_all_is_process_of_each_message_in_order() -> None:
    class Message:
        def __init__(self, key: bytes, value: bytes, offset: int) -> None:
            self.key, self.value, self.partition, self.offset = key, value, 3, offset
            self.timestamp = (TS + offset) / 1000  # seconds, as Faust's messages carry it

    sent = [(b"m1", msg(i, float(i))) for i in range(4)] + [(b"m1", b"{not json"), (b"m1", msg(1, 1.0))]
    messages = [Message(key, value, offset) for offset, (key, value) in enumerate(sent)]
    messages.append(messages[2])  # a re-delivery: fenced
    one, states_one, emitted_one = make(), dict[str, DeviceState](), list[Any]()
    expected = [
        out
        for m in messages
        for out in one.process(
            m.key, m.value, partition=3, offset=m.offset, timestamp_ms=TS + m.offset, states=states_one,
            load=new_state, emitted=emitted_one,
        )
    ]  # fmt: skip
    batch, states_all, emitted_all = make(), dict[str, DeviceState](), list[Any]()
    assert batch.process_all(messages, states=states_all, load=new_state, emitted=emitted_all) == expected
    assert emitted_all == emitted_one and batch.stats == one.stats and batch.stats["dlq"] == 1
    assert batch.stats["replayed"] == 1
    assert [(d, st.to_bytes()) for d, st in states_all.items()] == [
        (d, st.to_bytes()) for d, st in states_one.items()
    ]


def test_a_dead_letter_fits_the_broker_whatever_its_original_size() -> None:
    """A raw message over the raw limit is dead-lettered with a prefix, its size and digest:
    embedded whole, a 0.9 MB message made a letter the producer refused (MSG_SIZE_TOO_LARGE)
    and the worker stopped on it at every restart."""
    import hashlib

    p = make()
    big = b'{"device_id": "m1", "junk": "' + b"x" * 900_000 + b'"}'
    [out] = p.process(b"m1", big, partition=2, offset=9, timestamp_ms=TS, states={}, load=new_state)
    assert len(out.value) < 16_384
    letter = decode_output(out.value)
    assert letter["error_reason"] == "too_large" or "large" in letter["error_reason"]
    assert letter["original_truncated"] is True and letter["original_size"] == len(big)
    assert letter["original_sha256"] == hashlib.sha256(big).hexdigest()
    assert big.startswith(letter["original_value"]) and len(letter["original_value"]) == 4096
    assert (letter["source_partition"], letter["source_offset"]) == (2, 9)


def test_a_dead_letter_under_the_limit_keeps_its_original_whole() -> None:
    p = make()
    [out] = p.process(b"m1", b"{not json", partition=0, offset=3, timestamp_ms=TS, states={}, load=new_state)
    letter = decode_output(out.value)
    assert letter["original_value"] == b"{not json" and letter["original_truncated"] is False
    assert letter["original_size"] == 9


def test_a_keyless_message_is_a_dead_letter_and_touches_no_state() -> None:
    p, states = make(), {}
    [out] = p.process(
        None, msg(0, 1.0), partition=3, offset=5, timestamp_ms=TS, states=states, load=new_state
    )
    letter = decode_output(out.value)
    assert letter["error_reason"] == "missing_key" and letter["original_key"] is None
    assert states == {} and p.stats["dlq:missing_key"] == 1
    # The device's keyed readings on its own partition are all still new.
    outs = p.process(
        b"m1", msg(0, 1.0), partition=0, offset=0, timestamp_ms=TS, states=states, load=new_state
    )
    assert any(o.topic == p.topics.normalized for o in outs)
