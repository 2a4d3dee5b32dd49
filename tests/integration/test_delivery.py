"""The normalize agent's librdkafka producer against a real broker: everything it queued is
on the topic when ``flush`` returns, and a record the broker never takes makes ``flush``
raise (it reports failures only, so this is the path that must not go quiet)."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from aurora_streams import metrics
from aurora_streams.agents.delivery import FastProducer
from aurora_streams.errors import DeliveryFailed
from tests.integration.harness import Deployment, free_port, latest_by


async def test_flush_returns_once_every_record_is_on_the_topic(deployment: Deployment) -> None:
    s = deployment.settings
    fast = FastProducer(deployment.bootstrap)
    values = [b'{"event_id":"e%d","revision":0,"updated_at":null}' % i for i in range(500)]
    for i, value in enumerate(values):
        fast.produce(s.topic_normalized, b"meter-%d" % (i % 7), value)
    fast.produce(s.topic_dlq, b"k", b"{}", 2, count=False)
    await fast.flush()
    # Read once, without waiting for more: everything must already be there.
    got = deployment.read(s.topic_normalized, idle_s=0.0)
    assert sorted(r.value for r in got) == sorted(values)
    assert len(latest_by([r.value for r in got], "event_id")) == 500
    # Keyed records follow the key (murmur2): one partition per key.
    assert all(len({r.partition for r in got if r.key == k}) == 1 for k in {r.key for r in got})
    assert [r.partition for r in deployment.read(s.topic_dlq, idle_s=0.0)] == [2]


async def test_flush_raises_when_the_broker_never_acknowledges() -> None:
    fast = FastProducer(f"127.0.0.1:{free_port()}", message_timeout_ms=300)  # nothing listens
    fast.produce("meter.readings.normalized", b"k", b"v")
    with pytest.raises(DeliveryFailed, match="1 records not delivered"):
        await fast.flush()
    # The failure is reported once; the producer is usable again.
    await fast.flush()


async def test_bytes_sent_are_counted_per_topic_as_the_broker_stores_them(deployment: Deployment) -> None:
    """aurora_produced_bytes_total counts each batch as sent: at least the records' bytes
    uncompressed (plus their headers), far less when lz4 compresses repetitive values."""
    s = deployment.settings
    counted = metrics.BYTES_PRODUCED.labels

    async def reported(fast: FastProducer, topic: str, before: float) -> float:
        deadline = time.monotonic() + 10
        while counted(topic)._value.get() == before and time.monotonic() < deadline:
            fast._records.poll(0.1)  # statistics are reported from poll
        return float(counted(topic)._value.get())

    async def sent(topic: str, compression: str, values: list[bytes]) -> float:
        fast = FastProducer(deployment.bootstrap, compression=compression, stats_interval_ms=100)
        # A batch sent again (a retry while the partitions' leaders are still being learnt)
        # is counted again: it is sent twice. One record per partition first, so that the
        # measured batches go to known leaders once each.
        for partition in range(deployment.partitions):
            fast.produce(topic, b"warm", b"w", partition)
        await fast.flush()
        before = await reported(fast, topic, counted(topic)._value.get())
        for i, value in enumerate(values):
            fast.produce(topic, b"meter-%d" % (i % 7), value)
        await fast.flush()
        after = await reported(fast, topic, before)
        fast.close()
        return after - before

    values = [bytes([65 + i % 26]) * 1_000 for i in range(1_000)]
    plain = await sent(s.topic_normalized, "none", values)
    assert 1_000_000 < plain < 1_100_000  # 1,000 records of 1 KB, each with a record header
    compressed = await sent(s.topic_anomalies, "lz4", values)
    assert 0 < compressed < plain / 10


async def test_make_room_waits_for_the_broker_without_holding_the_event_loop(deployment: Deployment) -> None:
    s = deployment.settings
    fast = FastProducer(deployment.bootstrap)
    for i in range(5_000):
        fast.produce(s.topic_normalized, b"meter-%d" % (i % 7), b'{"n":%d}' % i)
    assert fast._records.queued() > 100
    await fast.make_room(100)
    assert fast._records.queued() <= 100
    await fast.flush()
    fast.close()


async def test_make_room_keeps_waiting_while_nothing_is_acknowledged_and_the_loop_runs() -> None:
    fast = FastProducer(f"127.0.0.1:{free_port()}", message_timeout_ms=60_000)  # nothing listens
    for i in range(50):
        fast.produce("meter.readings.normalized", b"k", b"v%d" % i)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    beat = asyncio.ensure_future(ticker())
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(fast.make_room(10), 0.5)
    beat.cancel()
    assert fast._records.queued() == 50
    assert ticks >= 5  # the event loop ran meanwhile (heartbeats, the API); held, it ticks once
    await fast.make_room(50)  # at or under the bound: returns at once
    # Drop the records and the client: it would retry its connection for the rest of the run.
    fast._records._producer.purge()
    fast.close()
    del fast
    gc.collect()
