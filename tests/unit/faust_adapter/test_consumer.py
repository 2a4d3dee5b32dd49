"""The worker's consumer hands a raw-topic message to the normalize agent's intake, and to
a stream that reads the raw topic too (the sink's) directly only when that cannot block;
otherwise it keeps Faust's interruptible path (``wait_first``), which a rebalance must be
able to cut short (a delivery blocked on a full queue whose contents the rebalance clears
would never be woken). A delivery cut short never leaves its offset committable."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from aurora_streams.agents.intake import RawIntake
from aurora_streams.faust_adapter import ProbingConsumer

RAW = TP("raw", 0)


def _consumer(*, queue_full: bool = False, flow: bool = True, suspended: bool = False) -> Any:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    if queue_full:
        queue.put_nowait(1)
    app = SimpleNamespace(
        flow_control=SimpleNamespace(is_active=lambda: flow),
        topics=SimpleNamespace(
            _tp_to_callback_lock=asyncio.Lock(), _tp_index={RAW: [SimpleNamespace(queue=queue)]}
        ),
        producer=SimpleNamespace(buffer=SimpleNamespace(size=0, max_messages=100)),
    )
    suspend = asyncio.Event()
    if suspended:
        suspend.set()
    consumer = SimpleNamespace(app=app, suspend_flow=suspend)
    consumer._flow_open = lambda: ProbingConsumer._flow_open(consumer)
    return consumer


def test_a_message_with_room_in_its_queue_goes_directly() -> None:
    assert ProbingConsumer._delivers_now(_consumer(), RAW) is True


@pytest.mark.parametrize(
    "state",
    [{"queue_full": True}, {"flow": False}, {"suspended": True}],
    ids=["queue full", "flow control suspended", "consumer flow suspended"],
)
def test_a_delivery_that_could_block_keeps_the_interruptible_path(state: dict[str, bool]) -> None:
    assert ProbingConsumer._delivers_now(_consumer(**state), RAW) is False


def test_unknown_partitions_and_a_full_producer_buffer_keep_it_too() -> None:
    c = _consumer()
    assert ProbingConsumer._delivers_now(c, TP("raw", 3)) is False
    c.app.producer.buffer.size = 101
    assert ProbingConsumer._delivers_now(c, RAW) is False


class _Consumer:
    """Enough of the worker's consumer to run ``_deliver_raw``: Faust's flow flags, a
    conductor callback that takes a reference per stream (as Faust's does), and
    ``wait_first`` racing a delivery against a rebalance (``suspend_flow``)."""

    def __init__(self, *, shared: bool, sink_blocks: bool = False) -> None:
        self.suspend_flow = asyncio.Event()
        self.flow = _Flow()
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        self.app = SimpleNamespace(
            flow_control=self.flow,
            raw_shared=shared,
            topics=SimpleNamespace(
                _tp_to_callback_lock=asyncio.Lock(), _tp_index={RAW: [SimpleNamespace(queue=queue)]}
            ),
            producer=SimpleNamespace(buffer=SimpleNamespace(size=0, max_messages=100)),
        )
        self.sink_blocks = sink_blocks
        self.sink: list[Any] = []

    async def callback(self, message: Any) -> None:
        if self.sink_blocks:
            await asyncio.Event().wait()  # a full stream queue, until the rebalance
        message.incref()
        self.sink.append(message)

    async def wait_first(self, *coros: Any) -> Any:
        futures = {c: asyncio.ensure_future(c) for c in coros}
        done, pending = await asyncio.wait(futures.values(), return_when=asyncio.FIRST_COMPLETED)
        for f in pending:
            f.cancel()
        return SimpleNamespace(done=[c for c, f in futures.items() if f in done])

    def _flow_open(self) -> bool:
        return ProbingConsumer._flow_open(self)

    def _intake_now(self, intake: RawIntake) -> bool:
        return ProbingConsumer._intake_now(self, intake)

    def _delivers_now(self, tp: TP) -> bool:
        return ProbingConsumer._delivers_now(self, tp) and not self.sink_blocks


class _Flow:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active

    async def acquire(self) -> None:
        while not self.active:
            await asyncio.sleep(0.001)


class _Acks:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: Any) -> bool:
        message.acked = True
        self.acked.append(message.offset)
        return True


def _message(offset: int = 0) -> Any:
    return ConsumerMessage("raw", 0, offset, 0.0, 0, None, b"k", b"v", None)


async def _deliver(consumer: _Consumer, intake: RawIntake, message: Any) -> None:
    await ProbingConsumer._deliver_raw(consumer, intake, message)


async def test_a_raw_message_the_sink_reads_too_is_final_only_when_both_acknowledge() -> None:
    consumer, intake, acks = _Consumer(shared=True), RawIntake(maxsize=10), _Acks()
    message = _message()
    await _deliver(consumer, intake, message)
    assert await intake.take(10, 0.01) == (0, [message]) and consumer.sink == [message]
    assert message.ack(acks) is False  # the normalize checkpoint: the sink still holds it
    assert message.ack(acks) is True  # the sink's batch stored
    assert acks.acked == [0]


async def test_a_rebalance_that_cuts_the_sinks_delivery_short_keeps_the_offset_uncommittable() -> None:
    consumer, intake, acks = _Consumer(shared=True, sink_blocks=True), RawIntake(maxsize=10), _Acks()
    message = _message()
    delivering = asyncio.create_task(_deliver(consumer, intake, message))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()  # a rebalance begins
    await asyncio.wait_for(delivering, 5)
    assert consumer.sink == []
    _, taken = await intake.take(10, 0.01)
    for m in taken:  # even if the agent stored and released what it took
        m.ack(acks)
    assert acks.acked == []  # re-read from the committed offset after the rebalance


async def test_a_rebalance_while_the_intake_is_full_drops_the_message_uncommitted() -> None:
    consumer, intake, acks = _Consumer(shared=False), RawIntake(maxsize=1), _Acks()
    intake.put(_message(0))
    message = _message(1)
    delivering = asyncio.create_task(_deliver(consumer, intake, message))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()
    await asyncio.wait_for(delivering, 5)
    intake.clear()
    assert len(intake) == 0
    message.ack(acks)  # nobody holds it; a stray ack is not final either
    assert acks.acked == []


async def test_a_raw_message_only_the_agent_reads_is_final_at_its_ack() -> None:
    consumer, intake, acks = _Consumer(shared=False), RawIntake(maxsize=1), _Acks()
    intake.put(_message(0))
    message = _message(1)
    delivering = asyncio.create_task(_deliver(consumer, intake, message))  # waits for room
    await asyncio.sleep(0.01)
    _, first = await intake.take(1, 0.01)
    await asyncio.wait_for(delivering, 5)
    _, second = await intake.take(1, 0.01)
    assert [m.offset for m in first + second] == [0, 1]
    assert second[0].ack(acks) is True
    assert acks.acked == [1]
