"""Retention never deletes unread input: the raw topic is stamped by the broker on arrival
(``message.timestamp.type=LogAppendTime``), so ``retention.ms`` counts from arrival, not from
the producer's stamp.

Before, readings stamped with their own (simulated, or historical: a NEM12 backfill) time were
deleted by the broker's first retention check after they arrived, whether or not a worker had
read them. Here readings stamped 2025 are produced with no worker running, to a broker that runs
its retention check every half second, beside a control topic that keeps the producers' stamps
(CreateTime) under the same retention: the control is emptied (the check ran), the raw topic is
not, and a worker started afterwards books every reading the reference does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from aurora_streams.devbroker import BrokerConfig, start_broker, stop_process
from aurora_streams.simulator import SimConfig, SimMessage, generate, produce
from aurora_streams.topics import RAW_TIMESTAMP_TYPE, raw_timestamp_type
from tests.integration.harness import Deployment, assert_matches, free_port, reference

RETENTION_MS = 60_000
"""A minute: every generated reading (stamped from 2025-01-01) is far older."""


@pytest.fixture
def quick_retention_broker(tmp_path: Path) -> Iterator[str]:
    config = BrokerConfig("127.0.0.1", free_port(), tmp_path / "kafka", heap_mb=384, retention_check_ms=500)
    with open(tmp_path / "kafka.log", "ab") as log:
        proc = start_broker(config, log=log, say=lambda m: print(m, file=sys.stderr))
    try:
        yield f"127.0.0.1:{config.port}"
    finally:
        stop_process(proc)


def _watermarks(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)
        ]
    finally:
        consumer.close()


def test_old_dated_input_outlives_a_retention_check_with_no_worker_running(
    quick_retention_broker: str, tmp_path: Path
) -> None:
    dep = Deployment(
        quick_retention_broker, tmp_path, extra_env={"AURORA_TOPIC_RETENTION_MS": str(RETENTION_MS)}
    )
    dep.create_topics()
    s = dep.settings
    admin = AdminClient({"bootstrap.servers": dep.bootstrap})
    assert raw_timestamp_type(s, admin) == "LogAppendTime"
    control = f"{dep.name}.control"
    config = {"cleanup.policy": "delete", "retention.ms": str(RETENTION_MS), RAW_TIMESTAMP_TYPE: "CreateTime"}
    admin.create_topics([NewTopic(control, dep.partitions, 1, config=config)])[control].result(30)

    messages = list(generate(SimConfig(devices=20, seed=11), limit=2_000))
    assert max(m.timestamp_ms for m in messages) < time.time() * 1000 - 300 * 86_400_000
    for topic in (s.topic_raw, control):
        assert produce(iter(messages), bootstrap=dep.bootstrap, topic=topic, progress=False) == len(messages)

    # The check ran: the control topic, stamped by its producer, is emptied without a reader.
    deadline = time.monotonic() + 60
    while any(low < high for low, high in _watermarks(dep.bootstrap, control, dep.partitions)):
        assert time.monotonic() < deadline, "the broker's retention check never deleted the control topic"
        time.sleep(0.5)
    time.sleep(2)  # a few more checks
    raw = _watermarks(dep.bootstrap, s.topic_raw, dep.partitions)
    assert all(low == 0 for low, _ in raw) and sum(high for _, high in raw) == len(messages)

    raw_records = dep.read(s.topic_raw, until=lambda r: len(r) >= len(messages))
    expected = reference(s, raw_records)
    # Stamped on arrival: the old stamps are gone from the records, kept in the payloads.
    assert min(r.timestamp_ms for r in raw_records) > time.time() * 1000 - 600_000
    try:
        dep.start_worker("late").wait_ready()
        assert_matches(dep, expected)
    finally:
        dep.stop_all()


def test_a_live_simulator_sends_nothing_before_its_stamp(deployment: Deployment) -> None:
    now = int(time.time() * 1000)
    stamps = [now - 60_000, now + 400, now + 800, now + 1_200]
    messages = [SimMessage(b"meter-1", str(t).encode(), t) for t in stamps]
    s = deployment.settings
    assert (
        produce(iter(messages), bootstrap=deployment.bootstrap, topic=s.topic_raw, progress=False, live=True)
        == 4
    )
    got = deployment.read(s.topic_raw, until=lambda r: len(r) >= 4)
    # Stamped by the broker on arrival: never before the simulated arrival.
    assert sorted(int(r.value) for r in got) == stamps
    assert all(r.timestamp_ms >= int(r.value) for r in got)
