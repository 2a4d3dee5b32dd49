"""A failed batch's offsets are never committed (``take_events`` acknowledges a batch in a
``finally``, even when the agent's body raised); a stored epoch's are, once; and when an
epoch ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faust.types.tuples import ConsumerMessage, Message

from aurora_streams.agents.normalize import Epoch, Sealed, _Partition, release_acks, withhold_acks
from aurora_streams.domain.device import DeviceState
from aurora_streams.settings import Settings


@dataclass
class _Consumer:
    """Records what reaches the consumer's ack bookkeeping (the offsets it would commit)."""

    acked: list[int] = field(default_factory=list)

    def ack(self, message: Message) -> bool:
        # As faust's Consumer.ack: marks the message acked, and counts it once.
        if message.acked:
            return False
        message.acked = True
        self.acked.append(message.offset)
        return True


@dataclass
class _Event:
    message: Message


def _events(offsets: range) -> list[Any]:
    out = []
    for offset in offsets:
        m = ConsumerMessage("raw", 0, offset, 0.0, 0, None, b"k", b"v", None)
        m.incref()
        out.append(_Event(m))
    return out


def test_a_normal_batch_reaches_the_consumer() -> None:
    consumer = _Consumer()
    for event in _events(range(3)):
        event.message.ack(consumer)
    assert consumer.acked == [0, 1, 2]


def test_a_withheld_batch_never_reaches_the_consumer() -> None:
    consumer = _Consumer()
    failed = _events(range(3, 6))
    withhold_acks(failed)
    for event in failed:  # what take_events' finally does
        assert event.message.ack(consumer) is False
    assert consumer.acked == []


@dataclass
class _Sensors:
    out: list[int] = field(default_factory=list)

    def on_message_out(self, tp: Any, offset: int, message: Message) -> None:
        self.out.append(offset)


@dataclass
class _App:
    consumer: _Consumer = field(default_factory=_Consumer)
    sensors: _Sensors = field(default_factory=_Sensors)


def test_released_messages_reach_the_consumer_once() -> None:
    app = _App()
    held = _events(range(6, 9))
    withhold_acks(held)
    for event in held:  # take_events' finally, at the end of the batch
        event.message.ack(app.consumer)
    assert app.consumer.acked == []
    release_acks(app, [e.message for e in held])  # type: ignore[arg-type]  # the checkpoint
    assert app.consumer.acked == [6, 7, 8]
    assert app.sensors.out == [6, 7, 8]
    for event in held:  # acknowledged already: nothing more reaches the consumer
        assert event.message.ack(app.consumer) is False
    assert app.consumer.acked == [6, 7, 8]


def _settings(**kw: Any) -> Settings:
    return Settings(**kw)


def test_an_epoch_is_due_after_its_interval_readings_or_devices_new_to_memory() -> None:
    s = _settings(checkpoint_interval_s=60, checkpoint_max_readings=10, checkpoint_max_devices=3)
    epoch = Epoch(0)
    assert not epoch.due(s)
    epoch.messages.extend(m.message for m in _events(range(9)))
    assert not epoch.due(s)
    epoch.messages.append(_events(range(9, 10))[0].message)
    assert epoch.due(s)

    epoch = Epoch(0)
    part = _Partition(None, None)  # type: ignore[arg-type]
    part.states.update({"a": DeviceState(), "b": DeviceState()})
    part.loaded = 2
    epoch.partitions[0] = part
    assert not epoch.due(s)
    part.states["c"] = DeviceState()
    part.loaded = 3
    assert epoch.due(s)

    # Devices whose states were in memory already (the cache, the previous epoch) count
    # only towards the state cache's size.
    s = _settings(checkpoint_interval_s=60, checkpoint_max_devices=3, state_cache_devices=5)
    part.loaded = 0
    part.states.update({"d": DeviceState()})
    assert not epoch.due(s)
    part.states["e"] = DeviceState()
    assert epoch.due(s)

    assert Epoch(0).due(_settings(checkpoint_interval_s=0))


def test_the_next_epoch_reads_the_sealed_states_of_the_same_generation_only() -> None:
    part = _Partition(None, None)  # type: ignore[arg-type]
    state = DeviceState()
    part.states["a"] = state
    sealed = Sealed(3, [], {0: part}, {0: [("a", state.to_bytes())]}, {}, False, 0.0)
    assert Epoch(3, prior=sealed).prior == {"a": state}
    # A rebalance began in between: what the sealed epoch held may be another worker's now.
    assert Epoch(4, prior=sealed).prior == {}
