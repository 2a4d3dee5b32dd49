"""Owned topics: created with the configured partitions; a mismatch stops the worker with a
message that says what to do."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from aurora_streams.errors import TopicMismatchError
from aurora_streams.topics import check_topics
from tests.integration.harness import REPO, Deployment, read_topic


def test_worker_refuses_mismatched_partition_count(deployment: Deployment) -> None:
    env = deployment.env(AURORA_PARTITIONS="2", AURORA_DATADIR=str(deployment.workdir / "d"))
    proc = subprocess.run(
        [sys.executable, "-m", "aurora_streams", "worker"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "refusing to start" in proc.stderr and "has 4 partitions" in proc.stderr
    assert "AURORA_PARTITIONS=4" in proc.stderr


def test_check_names_missing_topics(broker: str, tmp_path: object) -> None:
    dep = Deployment(broker, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TopicMismatchError, match="topics create"):
        check_topics(dep.settings)


def test_topics_create_command(broker: str, tmp_path: object) -> None:
    dep = Deployment(broker, tmp_path)  # type: ignore[arg-type]
    out = subprocess.run(
        [sys.executable, "-m", "aurora_streams", "topics", "create"],
        env=dep.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"created {dep.settings.topic_raw}" in out.stdout
    check_topics(dep.settings)


def test_the_broker_reports_the_true_end_offset_after_a_batched_produce(deployment: Deployment) -> None:
    """Table recovery reads a changelog up to the broker's reported end offset. Tansu, the
    embedded broker before Apache Kafka, reported the last batch's base offset + 1, so the
    worker probed the true end itself (kafka_offsets.py, removed). Apache Kafka reports the
    log end: ten records produced in one batch end at offset 10, and recovery needs no probe."""
    topic = deployment.settings.topic_dlq
    producer = Producer({"bootstrap.servers": deployment.bootstrap, "linger.ms": 200})
    for i in range(10):
        producer.produce(topic, key=b"k", value=str(i).encode(), partition=0)
    producer.flush(10)
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": deployment.bootstrap, "group.id": "probe-check"})
    low, reported = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.close()
    records = read_topic(deployment.bootstrap, topic, 1)
    assert len(records) == 10
    assert (low, reported) == (0, 10)


def test_a_raw_topic_stamped_by_its_producers_is_reported(
    broker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = Deployment(broker, tmp_path, extra_env={"AURORA_RAW_TIMESTAMP_TYPE": "CreateTime"})
    old.create_topics()  # as created before the raw topic was stamped on arrival
    current = Deployment(broker, tmp_path, name=old.name)
    with caplog.at_level(logging.WARNING, logger="aurora_streams.topics"):
        check_topics(current.settings)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "message.timestamp.type=CreateTime, configured LogAppendTime" in warning
    assert (
        f"--entity-name {current.settings.topic_raw} --add-config message.timestamp.type=LogAppendTime"
        in (warning)
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aurora_streams.topics"):
        check_topics(old.settings)  # as configured: nothing to say
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
