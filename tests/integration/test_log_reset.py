"""A raw log reset under a worker that keeps its state: the raw topic deleted and recreated
(as a dev broker's wiped data dir does) while the worker's device states remember offsets
the new log has not reached.

Before the fix 99.3% of the new log's input was dropped as "replayed", with no dead letter,
no log line and readiness 200. Now the worker finds the reset (a partition's input reached
past the log's end), says so, and goes on from its device states in a new log epoch: what
it books equals what one continuous log would have given.
"""

from __future__ import annotations

import re
import time
from typing import Any

from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from aurora_streams.simulator import SimConfig, generate
from aurora_streams.topics import ensure_topics
from tests.integration.harness import (
    Deployment,
    Record,
    committed_offsets,
    latest_by,
    log_ends,
    reference,
    wait_committed,
)
from tests.integration.test_pipeline import FLEET


def _recreate_raw_topic(dep: Deployment) -> None:
    s = dep.settings
    admin = AdminClient({"bootstrap.servers": dep.bootstrap})
    admin.delete_topics([s.topic_raw])[s.topic_raw].result(30)
    deadline = time.monotonic() + 60
    while s.topic_raw in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    created: list[str] = []
    while time.monotonic() < deadline:  # the deletion completes on the broker a little later
        try:
            created = ensure_topics(s)
            break
        except Exception:  # TOPIC_ALREADY_EXISTS while it is still marked for deletion
            time.sleep(0.5)
    assert s.topic_raw in created


def _process_then_recreate(
    dep: Deployment, before: list[Any], after: list[Any]
) -> tuple[list[Record], list[Record]]:
    """A worker processes ``before`` (committed to the end) and stops, keeping its data dir;
    the raw topic is deleted and recreated and ``after`` produced to it. Returns both logs
    as the broker stored them."""
    s = dep.settings
    sent = dep.produce(before)
    raw_before = dep.read(s.topic_raw, until=lambda r: len(r) >= sent)
    w = dep.start_worker("a")
    w.wait_ready()
    wait_committed(dep, s.topic_raw, log_ends(raw_before), timeout=90)
    w.stop()
    _recreate_raw_topic(dep)
    sent = dep.produce(after)
    return raw_before, dep.read(s.topic_raw, until=lambda r: len(r) >= sent)


def test_a_recreated_raw_topic_is_rebased_and_nothing_is_dropped(deployment: Deployment) -> None:
    dep = deployment
    s = dep.settings
    messages = list(generate(SimConfig(**{**FLEET.__dict__, "seed": 31, "devices": 40}), limit=2_400))
    # The old log is the longer one.
    raw_before, raw_after = _process_then_recreate(dep, messages[:1_600], messages[1_600:])
    assert min(r.offset for r in raw_after) == 0  # a new log: offsets start again

    # What one continuous log would give: the new records appended after the old ones.
    ends = log_ends(raw_before)
    continued = [
        Record(r.partition, ends.get(r.partition, 0) + r.offset, r.key, r.value, r.timestamp_ms)
        for r in raw_after
    ]
    expected = reference(s, [*raw_before, *continued])
    assert expected.stats.get("replayed", 0) == 0

    w = dep.start_worker("a")  # the same data dir: its states remember the old offsets
    w.wait_ready()
    wait_committed(dep, s.topic_raw, log_ends(raw_after), timeout=90)
    exp_norm = latest_by(expected.outputs[s.topic_normalized], "event_id")
    got_norm = latest_by([r.value for r in dep.read(s.topic_normalized) if r.value], "event_id")
    missing = exp_norm.keys() - got_norm.keys()
    assert not missing, f"{len(missing)} of {len(exp_norm)} readings never normalized"
    assert got_norm == exp_norm
    exp_anom = latest_by(expected.outputs[s.topic_anomalies], "anomaly_id")
    assert latest_by([r.value for r in dep.read(s.topic_anomalies) if r.value], "anomaly_id") == exp_anom

    metrics = w.metrics()
    rebased = {
        int(p): float(v)
        for p, v in re.findall(r'aurora_raw_log_rebases_total\{partition="(\d+)"\} (\S+)', metrics)
    }
    assert set(rebased) == {r.partition for r in raw_after} and all(v == 1.0 for v in rebased.values())
    assert "raw partition" in w.log_path.read_text() and "was reset" in w.log_path.read_text()
    replayed = re.search(r'aurora_readings_processed_total\{outcome="replayed"\} (\S+)', metrics)
    assert replayed is None or float(replayed.group(1)) == 0.0


def test_refuse_stops_the_worker_with_its_reason_and_commits_nothing(deployment: Deployment) -> None:
    dep = deployment
    s = dep.settings
    messages = list(generate(SimConfig(**{**FLEET.__dict__, "seed": 32, "devices": 20}), limit=800))
    _process_then_recreate(dep, messages[:600], messages[600:])
    dep.extra_env["AURORA_ON_LOG_RESET"] = "refuse"
    w = dep.start_worker("a")
    assert w.proc is not None
    assert w.proc.wait(90) == 78
    log = w.log_path.read_text()
    assert "the log was reset or recreated" in log and "AURORA_ON_LOG_RESET=rebase" in log
    committed = {p: o for p, o in committed_offsets(dep, s.topic_raw).items() if o >= 0}
    assert committed == {}, f"refused input was committed: {committed}"
