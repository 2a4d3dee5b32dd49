"""The processor: routing, DLQ records, replay fencing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aurora_streams.codecs import decode_output
from aurora_streams.domain.device import ChannelState, DeviceState
from aurora_streams.errors import LogReset
from aurora_streams.processing import (
    LOG_EPOCH_BITS,
    Processor,
    build_processor,
    log_epoch,
    log_offset,
    new_state,
)
from aurora_streams.settings import Settings

TS = 1_735_653_600_000
LATER = TS + 24 * 3600_000
"""The broker time of the messages: after every reading's stamp (none is future_timestamp)."""


def make() -> Processor:
    s = Settings()
    return build_processor(s)


def msg(i: int, value: float) -> bytes:
    return orjson.dumps(
        {"device_id": "m1", "ts": TS + i * 300_000, "kind": "register", "value": value, "unit": "kWh"}
    )


def test_outputs_keyed_by_device_and_routed() -> None:
    p, states = make(), {}
    out = p.process(
        b"m1", msg(0, 5.0), partition=2, offset=0, timestamp_ms=LATER, states=states, load=new_state
    )
    assert [(o.topic, o.key) for o in out] == [("meter.readings.normalized", b"m1")]
    out = p.process(
        b"m1", msg(1, 1.0), partition=2, offset=1, timestamp_ms=LATER, states=states, load=new_state
    )
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
            timestamp_ms=LATER,
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
                timestamp_ms=LATER,
                states=states,
                load=new_state,
            )
            == []
        )
    assert states["m1"].to_bytes() == before and p.stats["replayed"] == 3
    # The same reading under a new offset is a genuine duplicate from the source.
    assert (
        p.process(
            b"m1", msg(2, 2.0), partition=0, offset=20, timestamp_ms=LATER, states=states, load=new_state
        )
        == []
    )
    assert p.stats["duplicate"] == 1


def test_dead_letter_keeps_original_bytes_and_location() -> None:
    p = make()
    out = p.process(
        b"\xff", b"whatever", partition=1, offset=7, timestamp_ms=LATER, states={}, load=new_state
    )
    [letter] = [decode_output(o.value) for o in out]
    assert letter["error_reason"] == "invalid_key" and letter["original_value"] == b"whatever"
    assert (letter["source_partition"], letter["source_offset"]) == (1, 7)


def test_state_loader_used_once_per_device() -> None:
    p, states, calls = make(), {}, []

    def load(device: str) -> DeviceState:
        calls.append(device)
        return DeviceState()

    for i in range(3):
        p.process(
            b"m1", msg(i, float(i)), partition=0, offset=i, timestamp_ms=LATER, states=states, load=load
        )
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
        p.process(key, value, partition=0, offset=i, timestamp_ms=LATER, states=states, load=load)
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
            self.timestamp = (LATER + offset) / 1000  # seconds, as Faust's messages carry it

    sent = [(b"m1", msg(i, float(i))) for i in range(4)] + [(b"m1", b"{not json"), (b"m1", msg(1, 1.0))]
    messages = [Message(key, value, offset) for offset, (key, value) in enumerate(sent)]
    messages.append(messages[2])  # a re-delivery: fenced
    one, states_one, emitted_one = make(), dict[str, DeviceState](), list[Any]()
    expected = [
        out
        for m in messages
        for out in one.process(
            m.key, m.value, partition=3, offset=m.offset, timestamp_ms=LATER + m.offset, states=states_one,
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
    [out] = p.process(b"m1", big, partition=2, offset=9, timestamp_ms=LATER, states={}, load=new_state)
    assert len(out.value) < 16_384
    letter = decode_output(out.value)
    assert letter["error_reason"] == "too_large" or "large" in letter["error_reason"]
    assert letter["original_truncated"] is True and letter["original_size"] == len(big)
    assert letter["original_sha256"] == hashlib.sha256(big).hexdigest()
    assert big.startswith(letter["original_value"]) and len(letter["original_value"]) == 4096
    assert (letter["source_partition"], letter["source_offset"]) == (2, 9)


def test_a_dead_letter_under_the_limit_keeps_its_original_whole() -> None:
    p = make()
    [out] = p.process(
        b"m1", b"{not json", partition=0, offset=3, timestamp_ms=LATER, states={}, load=new_state
    )
    letter = decode_output(out.value)
    assert letter["original_value"] == b"{not json" and letter["original_truncated"] is False
    assert letter["original_size"] == 9


def test_a_keyless_message_is_a_dead_letter_and_touches_no_state() -> None:
    p, states = make(), {}
    [out] = p.process(
        None, msg(0, 1.0), partition=3, offset=5, timestamp_ms=LATER, states=states, load=new_state
    )
    letter = decode_output(out.value)
    assert letter["error_reason"] == "missing_key" and letter["original_key"] is None
    assert states == {} and p.stats["dlq:missing_key"] == 1
    # The device's keyed readings on its own partition are all still new.
    outs = p.process(
        b"m1", msg(0, 1.0), partition=0, offset=0, timestamp_ms=LATER, states=states, load=new_state
    )
    assert any(o.topic == p.topics.normalized for o in outs)


def _feed(
    p: Processor, states: dict[str, Any], device: str, i: int, offset: int, *, part: int = 0
) -> list[Any]:
    value = orjson.dumps(
        {"device_id": device, "ts": TS + i * 300_000, "kind": "register", "value": float(i), "unit": "kWh"}
    )
    return p.process(
        device.encode(),
        value,
        partition=part,
        offset=offset,
        timestamp_ms=LATER,
        states=states,
        load=new_state,
    )


def test_a_redelivery_below_the_log_end_is_fenced_as_before() -> None:
    p, states = make(), {}
    for i in range(3):
        _feed(p, states, "m1", i, 100 + i)
    p.log_ends[0] = 103  # the log holds what the state came from: a seek back re-delivers it
    assert _feed(p, states, "m1", 1, 101) == [] and p.stats["replayed"] == 1
    assert p.rebases == [] and states["m1"].last_offset == 102


def test_a_reset_log_is_rebased_not_dropped_as_replays() -> None:
    """A broker's data wiped under a worker that kept its states: the new log starts at 0
    while the states remember offsets up to 5,000. Every new reading is applied (before: all
    fenced as replays, 0 dead letters), in a new log epoch that later replays still fence."""
    p, states = make(), {}
    _feed(p, states, "m1", 0, 5_000)
    _feed(p, states, "m2", 0, 40)  # below the new log's end: only the partition's epoch tells
    p.log_ends[0] = 3
    out = _feed(p, states, "m1", 1, 0)
    assert [o.topic for o in out] == ["meter.readings.normalized"]
    assert [(r.partition, r.offset, r.state_offset, r.log_end) for r in p.rebases] == [(0, 0, 5_000, 3)]
    base = p.rebases[0].base
    assert base == 1 << LOG_EPOCH_BITS and p.log_bases[0] == base
    assert states["m1"].last_offset == base and log_epoch(base) == 1 and log_offset(base) == 0
    # m2's old offset (40) is from the old log: its new readings at offsets 1-2 are applied.
    assert [o.topic for o in _feed(p, states, "m2", 1, 1)] == ["meter.readings.normalized"]
    assert _feed(p, states, "m2", 2, 2) != []
    assert log_offset(states["m2"].last_offset) == 2
    # A re-delivery within the new log is fenced again, and nothing moves a second time.
    assert _feed(p, states, "m1", 1, 0) == [] and len(p.rebases) == 1
    assert p.stats["replayed"] == 1 and p.stats["new"] == 5


def test_refuse_raises_before_the_message_touches_state() -> None:
    p = build_processor(Settings(on_log_reset="refuse"))
    states: dict[str, Any] = {}
    _feed(p, states, "m1", 0, 5_000)
    before = states["m1"].to_bytes()
    p.log_ends[0] = 3
    with pytest.raises(
        LogReset, match="raw partition 0: a device state is at offset 5000 but the log ends at 3"
    ):
        _feed(p, states, "m1", 1, 0)
    assert states["m1"].to_bytes() == before and p.rebases == []


def test_a_state_of_a_later_epoch_sets_the_partition_epoch() -> None:
    """A crash after a rebased checkpoint's states were stored but before its partition
    record was: the states' epoch is the partition's, and re-deliveries stay fenced."""
    p, states = make(), {}
    base = 1 << LOG_EPOCH_BITS
    _feed(p, states, "m1", 0, 0)
    states["m1"].last_offset = base + 7
    p.log_ends[0] = 10
    assert _feed(p, states, "m1", 1, 5) == [] and p.log_bases[0] == base and p.rebases == []
    assert _feed(p, states, "m1", 1, 8) != [] and states["m1"].last_offset == base + 8


def test_without_a_known_log_end_a_fenced_message_stays_fenced() -> None:
    p, states = make(), {}
    _feed(p, states, "m1", 0, 5_000)
    assert _feed(p, states, "m1", 1, 0) == [] and p.rebases == []


def test_a_partition_mark_past_the_log_end_rebases_before_any_device_is_fenced() -> None:
    """The worker restarted on a wiped broker: the partition's stored mark (5,000) is past
    the new log's end (100), so m2, whose own state (offset 40) is below the end, is not
    fenced at offset 10: its reading is applied, in the new epoch."""
    p, states = make(), {}
    _feed(p, states, "m2", 0, 40)
    restarted = make()
    restarted.log_marks[0], restarted.log_ends[0] = 5_000, 100
    out = _feed(restarted, states, "m2", 1, 10)
    assert [o.topic for o in out] == ["meter.readings.normalized"]
    assert [(r.offset, r.state_offset, r.log_end) for r in restarted.rebases] == [(10, 5_000, 100)]
    assert states["m2"].last_offset == (1 << LOG_EPOCH_BITS) + 10
    assert restarted.log_marks[0] == states["m2"].last_offset


def test_the_mark_follows_the_highest_position_applied() -> None:
    p, states = make(), {}
    _feed(p, states, "m1", 0, 7)
    _feed(p, states, "m2", 0, 3)
    assert p.log_marks == {0: 7}
    p.log_ends[0] = 8
    assert _feed(p, states, "m1", 0, 7) == [] and p.rebases == []  # a re-delivery, not a reset
