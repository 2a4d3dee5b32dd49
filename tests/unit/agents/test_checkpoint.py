"""A stored epoch's messages are acknowledged once, and only when every reader of them has
(the sink's stream may hold a reference too); a failed or abandoned epoch's never are; when
an epoch ends; and a sealed epoch stores its states as they were at the seal."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from faust.types.tuples import ConsumerMessage, Message

from aurora_streams.agents.checkpoint import Epoch, PartitionEpoch, Sealed, release_acks
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
class _App:
    consumer: _Consumer = field(default_factory=_Consumer)


def _messages(offsets: range, readers: int = 1) -> list[Any]:
    """Messages as the intake holds them: one reference per reader (the intake's own)."""
    out = []
    for offset in offsets:
        m = ConsumerMessage("raw", 0, offset, 0.0, 0, None, b"k", b"v", None)
        m.incref(readers)
        out.append(m)
    return out


def test_released_messages_reach_the_consumer_once() -> None:
    app = _App()
    held = _messages(range(6, 9))
    assert app.consumer.acked == []  # held by the epoch: nothing committable
    release_acks(app, held)  # type: ignore[arg-type]  # the checkpoint
    assert app.consumer.acked == [6, 7, 8]
    release_acks(app, held)  # type: ignore[arg-type]  # acknowledged already: nothing more
    assert app.consumer.acked == [6, 7, 8]


def test_a_message_the_sink_reads_too_is_committable_once_both_have_acknowledged() -> None:
    app = _App()
    shared = _messages(range(3), readers=2)
    release_acks(app, shared)  # type: ignore[arg-type]  # the normalize checkpoint first
    assert app.consumer.acked == []
    for m in shared:  # then the sink's take_events
        m.ack(app.consumer)  # type: ignore[arg-type]
    assert app.consumer.acked == [0, 1, 2]
    later = _messages(range(3, 5), readers=2)
    for m in later:  # the sink first this time
        m.ack(app.consumer)  # type: ignore[arg-type]
    assert app.consumer.acked == [0, 1, 2]
    release_acks(app, later)  # type: ignore[arg-type]
    assert app.consumer.acked == [0, 1, 2, 3, 4]


def _settings(**kw: Any) -> Settings:
    return Settings(**kw)


def test_an_epoch_is_due_after_its_interval_readings_or_devices_new_to_memory() -> None:
    s = _settings(checkpoint_interval_s=60, checkpoint_max_readings=10, checkpoint_max_devices=3)
    epoch = Epoch(0)
    assert not epoch.due(s)
    epoch.messages.extend(_messages(range(9)))
    assert not epoch.due(s)
    epoch.messages.append(_messages(range(9, 10))[0])
    assert epoch.due(s)

    epoch = Epoch(0)
    part = PartitionEpoch(None, None)  # type: ignore[arg-type]
    part.states.update({"a": DeviceState(), "b": DeviceState()})
    part.loaded = 2
    epoch.partitions[0] = part
    assert not epoch.due(s)
    part.states["c"] = DeviceState()
    part.loaded = 3
    assert epoch.due(s)

    # Devices whose states were in memory already (the cache, the previous epoch) count
    # only towards the state cache's size: an epoch may hold as many as the cache, not more.
    s = _settings(checkpoint_interval_s=60, checkpoint_max_devices=3, state_cache_devices=5)
    part.loaded = 0
    part.states.update({"d": DeviceState(), "e": DeviceState()})
    assert not epoch.due(s)
    part.states["f"] = DeviceState()
    assert epoch.due(s)

    assert Epoch(0).due(_settings(checkpoint_interval_s=0))


def test_an_epoch_whose_input_paused_is_idle_whatever_its_interval() -> None:
    s = _settings(checkpoint_interval_s=60, checkpoint_idle_s=0.05)
    epoch = Epoch(0)
    time.sleep(0.06)
    assert not epoch.idle(s)  # nothing to store
    epoch.add(_messages(range(3)))
    assert not epoch.idle(s) and not epoch.due(s)
    time.sleep(0.06)
    assert epoch.idle(s) and not epoch.due(s)
    epoch.add(_messages(range(3, 4)))  # input again: not idle until it pauses again
    assert not epoch.idle(s)


def test_the_next_epoch_reads_the_sealed_states_of_the_same_generation_only() -> None:
    part = PartitionEpoch(None, None)  # type: ignore[arg-type]
    state = DeviceState()
    part.states["a"] = state
    sealed = Sealed(3, [], {0: part}, {0: [("a", state.to_bytes())]}, {}, False, 0.0)
    assert Epoch(3, prior=sealed).prior == {"a": state}
    # A rebalance began in between: what the sealed epoch held may be another worker's now.
    assert Epoch(4, prior=sealed).prior == {}


def _sealed_with(states: dict[str, DeviceState]) -> Sealed:
    part = PartitionEpoch(None, None)  # type: ignore[arg-type]
    part.states.update(states)
    return Sealed(3, [], {0: part}, {0: []}, {}, False, 0.0, {0: dict(states)})


async def _written(sealed: Sealed, per_slice: int) -> list[tuple[str, bytes]]:
    """What the store writes of partition 0, taken a slice at a time as it does, yielding
    to the event loop between slices."""
    out: list[tuple[str, bytes]] = []
    while chunk := sealed.take(0, per_slice):
        assert len(chunk) <= per_slice
        out.extend(chunk)
        await asyncio.sleep(0)
    return out


def test_a_sealed_state_is_stored_as_it_was_at_the_seal_when_the_next_epoch_changes_it_first() -> None:
    a, b = DeviceState(last_offset=5), DeviceState(last_offset=7)
    at_seal = {"a": a.to_bytes(), "b": b.to_bytes()}
    sealed = _sealed_with({"a": a, "b": b})
    following = Epoch(3, prior=sealed)

    state = following.prior_state("a")
    assert state is a
    a.last_offset = 99  # the next epoch applies a reading
    assert following.prior_state("a") is a  # loaded again: encoded once, not again
    written = asyncio.run(_written(sealed, 200))
    b.last_offset = 99  # after the store encoded it

    assert sealed.pending == {0: {}} and sealed.encoded == {0: []}
    assert sorted(written) == sorted(at_seal.items())
    assert following.prior_state("c") is None


def test_the_agent_may_change_states_between_the_stores_slices() -> None:
    states = {f"d{i}": DeviceState(last_offset=i) for i in range(5)}
    at_seal = {device_id: state.to_bytes() for device_id, state in states.items()}
    sealed = _sealed_with(states)
    following = Epoch(3, prior=sealed)

    async def agent() -> None:
        # Runs when the store yields after its first slice, as a batch would.
        await asyncio.sleep(0)
        for device_id in states:
            state = following.prior_state(device_id)
            assert state is not None
            state.last_offset = 1_000

    async def both() -> list[tuple[str, bytes]]:
        written, _ = await asyncio.gather(_written(sealed, 2), agent())
        return written

    written = asyncio.run(both())
    assert sorted(written) == sorted(at_seal.items())
    assert len(written) == len(states)  # each state written once, frozen or not


def test_a_store_holds_only_the_frozen_states_and_one_slice_encoded() -> None:
    states = {f"d{i}": DeviceState(last_offset=i) for i in range(10)}
    sealed = _sealed_with(states)
    following = Epoch(3, prior=sealed)
    following.prior_state("d7")  # the next epoch touched it first: encoded now
    assert [device_id for device_id, _ in sealed.encoded[0]] == ["d7"]
    assert len(sealed.pending[0]) == 9

    assert [device_id for device_id, _ in sealed.take(0, 4)] == ["d7"]  # frozen first
    chunk = sealed.take(0, 4)
    assert len(chunk) == 4 and sealed.encoded[0] == [] and len(sealed.pending[0]) == 5


def test_a_stored_checkpoint_keeps_only_the_states_the_next_epoch_reads() -> None:
    state = DeviceState(last_offset=5)
    sealed = _sealed_with({"a": state})
    sealed.messages.extend(_messages(range(3)))
    following = Epoch(3, prior=sealed)
    following.prior_state("a")
    assert sealed.encoded[0] and sealed.messages

    sealed.forget_stored()

    assert sealed.encoded == {} and sealed.messages == []
    assert following.prior_state("a") is state
