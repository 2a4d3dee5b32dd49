"""The app's wiring: what importing it loads, which reader subscribes the raw topic, and how
device keys map to partitions without producer metadata."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


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
