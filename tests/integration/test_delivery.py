"""The normalize agent's librdkafka producer against a real broker: everything it queued is
on the topic when ``flush`` returns, and a record the broker never takes makes ``flush``
raise (it reports failures only, so this is the path that must not go quiet)."""

from __future__ import annotations

import pytest

from aurora_streams.agents.delivery import DeliveryFailed, FastProducer
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
