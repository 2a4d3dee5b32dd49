"""The normalize agent's epochs (see ``agents.normalize``): states are stored once per
checkpoint, not once per reading, input is committed only after its checkpoint is stored,
and a stream that pauses is still checkpointed and committed."""

from __future__ import annotations

import re
import time

from confluent_kafka import Consumer, TopicPartition
from rocksdict import AccessType, Options, Rdict

from aurora_streams.settings import TABLES
from aurora_streams.simulator import SimConfig, generate
from tests.integration.harness import (
    Deployment,
    TopicTail,
    assert_matches,
    log_ends,
    wait_committed,
    wait_for,
)
from tests.integration.test_pipeline import FLEET


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} not exported"
    return float(match.group(1))


def test_a_paused_stream_is_checkpointed_committed_and_written_once_per_device(
    deployment: Deployment,
) -> None:
    dep = deployment
    dep.extra_env["AURORA_CHECKPOINT_INTERVAL_S"] = "2"
    cfg = SimConfig(**{**FLEET.__dict__, "seed": 5, "devices": 50})
    raw, expected = dep.produce_with_reference(generate(cfg, limit=3_000))
    sent, s = len(raw), dep.settings
    progress = TopicTail(dep, s.topic_normalized)
    w = dep.start_worker("a")
    wait_for(progress, len(expected.outputs[s.topic_normalized]))
    progress.close()

    # Nothing more arrives: the idle timer must end the epoch, store it and let Faust
    # commit every offset (within the interval, the commit interval and some slack).
    wait_committed(dep, s.topic_raw, log_ends(raw))
    assert_matches(dep, expected)

    metrics = w.metrics()
    checkpoints = _metric(metrics, "aurora_checkpoint_duration_seconds_count")
    writes = _metric(metrics, "aurora_state_writes_total")
    assert checkpoints >= 1
    # One write per touched device per checkpoint, however many of its readings the epoch
    # held (a per-batch store wrote about one state per reading with 50 interleaved devices).
    assert writes <= 50 * checkpoints
    assert writes < sent / 2


def test_each_table_partition_records_how_far_its_changelog_is_applied(deployment: Deployment) -> None:
    """On the fast path the worker writes changelogs through librdkafka, so Faust never
    recorded the offsets its local stores are applied up to: every restart read every
    changelog from its start (45 s after an hour at 2,000 readings/s). After a checkpoint,
    each written table partition's store holds its changelog's end - 1; killed and
    restarted on its data dir, the worker recovers from there and matches the reference."""
    dep = deployment
    dep.extra_env["AURORA_CHECKPOINT_INTERVAL_S"] = "1"
    cfg = SimConfig(**{**FLEET.__dict__, "seed": 6, "devices": 40})
    raw, expected = dep.produce_with_reference(generate(cfg, limit=2_000))
    s = dep.settings
    datadir = dep.workdir / "data-a"
    w = dep.start_worker("a", datadir=datadir)
    wait_committed(dep, s.topic_raw, log_ends(raw))
    time.sleep(3)  # the offsets are recorded just after a checkpoint's acknowledgements
    w.kill()

    consumer = Consumer({"bootstrap.servers": dep.bootstrap, "group.id": "t-offsets"})
    recorded = 0
    for table in TABLES:
        topic = s.changelog_topic if table == "device_state" else f"{s.app_id}-{table}-changelog"
        for p in range(s.partitions):
            end = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            path = next(datadir.glob(f"v*/tables/{table}-{p}.db"))
            db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
            try:
                persisted = db.get(b"__faust\x00offset__")
            finally:
                db.close()
            if end > 0:
                assert persisted is not None and int(persisted) == end - 1, (table, p, persisted, end)
                recorded += 1
    consumer.close()
    assert recorded >= 3 * s.partitions  # states, days and forecasts of every partition

    w = dep.start_worker("a-restart", datadir=datadir)
    w.wait_ready()
    assert_matches(dep, expected)
