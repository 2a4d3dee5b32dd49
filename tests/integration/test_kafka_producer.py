"""The one producer wrapper (``aurora_streams.kafka.producer``) against a real broker: what
it queued is on the topic when ``flush`` returns, keyed by murmur2 and stamped as asked, a
full local queue makes ``produce`` wait rather than fail, and undelivered records make
``flush`` raise."""

from __future__ import annotations

import pytest

from aurora_streams.errors import DeliveryFailed
from aurora_streams.kafka.producer import RecordProducer
from aurora_streams.topics import key_partition
from tests.integration.harness import Deployment, free_port


def test_flush_returns_once_every_record_is_on_its_keys_partition(deployment: Deployment) -> None:
    # Not the raw topic: the broker stamps that one on arrival (LogAppendTime).
    topic = deployment.settings.topic_normalized
    # A local queue of 50 records for 2,000: produce waits for room many times.
    producer = RecordProducer(deployment.bootstrap, extra={"queue.buffering.max.messages": 50})
    sent = {(b"meter-%d" % (i % 13), b"v%d" % i, 1_735_689_600_000 + i) for i in range(2_000)}
    for key, value, ts in sorted(sent, key=lambda r: r[2]):
        producer.produce(topic, key, value, timestamp_ms=ts)
    producer.flush(30)
    got = deployment.read(topic, idle_s=0.0)  # read once: everything must be there already
    assert {(r.key, r.value, r.timestamp_ms) for r in got} == sent
    assert all(r.partition == key_partition(r.key, deployment.partitions) for r in got if r.key)
    # In produce order within each key.
    for key in {r.key for r in got}:
        stamps = [r.timestamp_ms for r in sorted(got, key=lambda r: r.offset) if r.key == key]
        assert stamps == sorted(stamps)


def test_flush_raises_when_the_broker_never_acknowledges() -> None:
    producer = RecordProducer(f"127.0.0.1:{free_port()}", message_timeout_ms=300)  # nothing listens
    producer.produce("meter.readings.raw", b"k", b"v")
    producer.produce("meter.readings.raw", b"k", b"w")
    with pytest.raises(DeliveryFailed, match="2 records not delivered"):
        producer.flush(10)
    producer.flush(1)  # reported once; the producer is usable again
