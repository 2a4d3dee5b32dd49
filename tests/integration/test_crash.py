"""Workers killed with SIGKILL mid-stream, restarted, and checked against the reference.

At-least-once delivery re-delivers what was not committed; the outputs may repeat, but the
latest revision of every record, the DLQ entries and the final device states must equal a
crash-free run, and nothing may be missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aurora_streams.codecs import decode_output
from aurora_streams.simulator import SimConfig, generate
from tests.integration.harness import (
    Deployment,
    Expected,
    Record,
    Worker,
    latest_by,
    latest_states,
    reference,
)
from tests.integration.test_pipeline import FLEET


def _dlq_keys(values: list[bytes]) -> set[tuple[int, int, int | None, str]]:
    out = set()
    for v in values:
        d = decode_output(v)
        out.add((d["source_partition"], d["source_offset"], d["reading_index"], d["error_reason"]))
    return out


def assert_matches(dep: Deployment, expected: Expected) -> None:
    s = dep.settings
    exp_norm = latest_by(expected.outputs[s.topic_normalized], "event_id")
    exp_anom = latest_by(expected.outputs[s.topic_anomalies], "anomaly_id")
    norm = dep.read(
        s.topic_normalized, idle_s=3.0, until=lambda r: len(r) >= len(expected.outputs[s.topic_normalized])
    )
    got_norm = latest_by([r.value for r in norm if r.value], "event_id")
    assert got_norm.keys() == exp_norm.keys(), "normalized records missing or unexpected"
    assert got_norm == exp_norm
    # Every record ever produced is one the reference produced too (replays repeat, never invent).
    assert {r.value for r in norm} <= set(expected.outputs[s.topic_normalized])
    anom = dep.read(s.topic_anomalies, idle_s=1.0)
    assert latest_by([r.value for r in anom if r.value], "anomaly_id") == exp_anom
    dlq = dep.read(s.topic_dlq, idle_s=1.0)
    assert _dlq_keys([r.value for r in dlq if r.value]) == _dlq_keys(expected.outputs[s.topic_dlq])
    changelog = dep.read(s.changelog_topic, idle_s=2.0)
    assert latest_states(changelog) == expected.states


class _Tail:
    """A running count of a topic's records, read incrementally by one consumer so that
    each poll is cheap (re-reading the whole topic lets a fast worker overshoot the kill
    points)."""

    def __init__(self, dep: Deployment, topic: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._consumer = Consumer(
            {
                "bootstrap.servers": dep.bootstrap,
                "group.id": f"tail-{topic}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(dep.partitions)])
        self.seen = 0

    def __call__(self) -> int:
        # One fetch per call: draining until quiet would wait for the worker to finish.
        msgs = self._consumer.consume(10_000, 0.05)
        self.seen += sum(1 for m in msgs if m.error() is None)
        return self.seen

    def close(self) -> None:
        self._consumer.close()


def _wait_for(progress: Callable[[], int], target: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress() >= target:
            return
        time.sleep(0.02)
    raise TimeoutError(f"progress stuck below {target}")


def test_sigkill_three_times_mid_stream(deployment: Deployment) -> None:
    dep = deployment
    # Slow batches down so kills land mid-stream rather than after the end.
    dep.extra_env["AURORA_BATCH_MAX"] = "5"
    cfg = SimConfig(**{**FLEET.__dict__, "seed": 11, "devices": 100})
    sent = dep.produce(generate(cfg, limit=8_000))
    s = dep.settings
    raw: list[Record] = dep.read(s.topic_raw, until=lambda r: len(r) >= sent)
    expected = reference(s, raw)
    total = len(expected.outputs[s.topic_normalized])
    progress = _Tail(dep, s.topic_normalized)

    w = dep.start_worker("a")
    replayed = 0.0
    for i, share in enumerate((0.2, 0.45, 0.7)):
        _wait_for(progress, int(total * share))
        replayed += _replayed_so_far(w)
        w.kill()
        print(f"killed worker {i} at {progress()}/{total} normalized records")
        # The third restart gets an empty data dir: state must come back from the changelog.
        w = dep.start_worker(f"{'abc'[i]}-restart", datadir=dep.workdir / ("data-a" if i < 2 else "fresh"))
    progress.close()
    w.wait_ready()
    assert_matches(dep, expected)
    # The kills interrupted uncommitted work: some restarted worker saw re-deliveries (fenced
    # by offset) or the topic holds repeated records from batches whose state was not written.
    # Counted over every worker, since any one kill may land just after a commit.
    norm = dep.read(s.topic_normalized)
    replayed += _replayed_so_far(w)
    assert replayed > 0 or len(norm) > total


def _replayed_so_far(w: Worker) -> float:
    """The worker's count of re-delivered readings so far (0 while its web server is not up)."""
    try:
        text = w.metrics()
    except OSError:
        return 0.0
    return _metric(text, 'aurora_readings_processed_total{outcome="replayed"}')


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_two_workers_give_the_same_results_as_one(deployment: Deployment) -> None:
    dep = deployment
    cfg = SimConfig(**{**FLEET.__dict__, "seed": 23, "devices": 100})
    sent = dep.produce(generate(cfg, limit=8_000))
    s = dep.settings
    raw = dep.read(s.topic_raw, until=lambda r: len(r) >= sent)
    expected = reference(s, raw)
    a = dep.start_worker("a")
    b = dep.start_worker("b")
    a.wait_ready()
    b.wait_ready()
    assert_matches(dep, expected)
    # Both workers really took part.
    for w in (a, b):
        assert "aurora_readings_processed_total" in w.metrics()
