"""The worker's consumer hands a raw-topic message to the normalize agent's intake, and to
a stream that reads the raw topic too (the sink's) directly only when that cannot block;
otherwise it keeps Faust's interruptible path (``wait_first``), which a rebalance must be
able to cut short (a delivery blocked on a full queue whose contents the rebalance clears
would never be woken). A delivery cut short never leaves its offset committable."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from aurora_streams.agents.intake import RawIntake
from aurora_streams.app import _ProbingConsumer

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
    consumer._flow_open = lambda: _ProbingConsumer._flow_open(consumer)
    return consumer


def test_a_message_with_room_in_its_queue_goes_directly() -> None:
    assert _ProbingConsumer._delivers_now(_consumer(), RAW) is True


@pytest.mark.parametrize(
    "state",
    [{"queue_full": True}, {"flow": False}, {"suspended": True}],
    ids=["queue full", "flow control suspended", "consumer flow suspended"],
)
def test_a_delivery_that_could_block_keeps_the_interruptible_path(state: dict[str, bool]) -> None:
    assert _ProbingConsumer._delivers_now(_consumer(**state), RAW) is False


def test_unknown_partitions_and_a_full_producer_buffer_keep_it_too() -> None:
    c = _consumer()
    assert _ProbingConsumer._delivers_now(c, TP("raw", 3)) is False
    c.app.producer.buffer.size = 101
    assert _ProbingConsumer._delivers_now(c, RAW) is False


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
        return _ProbingConsumer._flow_open(self)

    def _intake_now(self, intake: RawIntake) -> bool:
        return _ProbingConsumer._intake_now(self, intake)

    def _delivers_now(self, tp: TP) -> bool:
        return _ProbingConsumer._delivers_now(self, tp) and not self.sink_blocks


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
    await _ProbingConsumer._deliver_raw(consumer, intake, message)


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


def test_importing_the_app_leaves_river_to_a_startup_task() -> None:
    # River imports scipy: half a second a worker would spend before joining its group.
    code = "import sys, aurora_streams.app; print('river' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("database_url", [None, "postgresql://aurora@127.0.0.1:9/aurora"])
def test_the_raw_topic_is_subscribed_by_the_sinks_stream_or_by_the_app(database_url: str | None) -> None:
    """Exactly one subscription of the raw topic: the sink's stream's when the sink runs
    (its messages are then final only when both readers acknowledge), else the app's own."""
    code = (
        "from aurora_streams.app import create_app; from aurora_streams.settings import load_settings;"
        "s = load_settings(); app = create_app(s);"
        "by_app = s.topic_raw in {t for c in app.topics for t in c.topics};"
        "by_agents = [a.name for a in app.agents.values() if s.topic_raw in a.channel.topics];"
        "print(app.raw_shared, by_app, ','.join(by_agents) or '-')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURORA_")}
    env["AURORA_BROKER_URL"] = "kafka://127.0.0.1:9"  # nothing is contacted before the app starts
    if database_url:
        env["AURORA_DATABASE_URL"] = database_url
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    shared, by_app, by_agents = out.stdout.split()
    if database_url:
        assert (shared, by_app, by_agents) == ("True", "False", "sink")
    else:
        assert (shared, by_app, by_agents) == ("False", "True", "-")


def test_key_partition_of_owned_topics_is_murmur2_without_producer_metadata() -> None:
    """The HTTP routing of device lookups hashes the key to a partition. Faust asks aiokafka's
    producer, which on Apache Kafka knows only topics it has produced to (a 500 before); ours
    computes murmur2 over the configured partition count, as the Java client and our
    librdkafka producers (murmur2_random) place keys."""
    code = (
        "from aurora_streams.app import create_app; from aurora_streams.settings import load_settings;"
        "from confluent_kafka import Producer;"
        "s = load_settings(); app = create_app(s);"
        "keys = [f'meter-{i:06d}'.encode() for i in range(200)];"
        "print(' '.join(str(app.producer.key_partition(s.topic_raw, k).partition) for k in keys))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURORA_")}
    env.update({"AURORA_BROKER_URL": "kafka://127.0.0.1:9", "AURORA_PARTITIONS": "6"})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    got = [int(p) for p in out.stdout.split()]
    from aiokafka.partitioner import murmur2

    want = [(murmur2(f"meter-{i:06d}".encode()) & 0x7FFFFFFF) % 6 for i in range(200)]
    assert got == want and len(set(got)) == 6
