"""A worker that stops making progress says so: /readyz turns 503 with the stalled
partitions and the reason, a metric and one log line, and ready again once it moves.

The stall is real: the broker is frozen (SIGSTOP) while the worker has a backlog, so its
fetches and commits stop; before, /readyz said "ready" through any stall."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from aurora_streams.devbroker import stop_process
from aurora_streams.simulator import SimConfig, generate
from tests.integration.harness import Deployment, TopicTail, start_test_broker, wait_for
from tests.integration.test_pipeline import FLEET


def _readyz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _until(cond: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise TimeoutError("condition not met")


def test_a_stalled_worker_is_not_ready_and_says_why_then_recovers(tmp_path: Path) -> None:
    bootstrap, broker = start_test_broker(tmp_path)
    dep = Deployment(
        bootstrap,
        tmp_path,
        extra_env={"AURORA_STALL_AFTER_S": "6", "AURORA_BATCH_MAX": "5", "AURORA_PRODUCE_TIMEOUT_S": "600"},
    )
    try:
        dep.create_topics()
        cfg = SimConfig(**{**FLEET.__dict__, "seed": 7, "devices": 60})
        dep.produce(generate(cfg, limit=6000))
        progress = TopicTail(dep, dep.settings.topic_normalized)
        w = dep.start_worker("w")
        w.wait_ready()
        wait_for(progress, 300)  # working through its backlog
        progress.close()
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            _until(lambda: _readyz(w.port)[0] == 503, 60)
            took = time.monotonic() - started
            status, body = _readyz(w.port)
            assert status == 503 and body["stalled"], body
            assert "no progress on raw partitions" in str(body["reason"])
            assert took < 30, f"not ready only after {took:.0f} s"
            assert any(
                line.startswith("aurora_stalled_partitions ") and float(line.split()[1]) > 0
                for line in w.metrics().splitlines()
            )
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        _until(lambda: _readyz(w.port)[0] == 200, 90)
        log = w.log_path.read_text(errors="replace")
        assert "worker stalled, not ready: no progress on raw partitions" in log
        # The line says what the consumer held for each stalled partition.
        stall_line = next(line for line in log.splitlines() if "worker stalled, not ready" in line)
        assert "consumer state: {" in stall_line and "'read_offset':" in stall_line, stall_line
        assert "worker progressing again, ready" in log
    finally:
        dep.stop_all()
        os.kill(broker.pid, signal.SIGCONT)
        stop_process(broker)


def test_progress_is_read_from_the_broker_as_a_lag_dashboard_sees_it(deployment: Deployment) -> None:
    """The stall detector's source: the raw topic's log end and the group's committed offsets
    as the broker has them (a partition the worker owns but never fetched has no highwater
    in the worker, and showed no lag), and None, fast, when no broker answers."""
    from confluent_kafka import Consumer, TopicPartition

    from aurora_streams.web.health import BrokerProgress
    from tests.integration.harness import free_port

    s = deployment.settings
    sent = deployment.produce(generate(SimConfig(**{**FLEET.__dict__, "seed": 5, "devices": 20}), limit=400))
    group = f"{s.app_id}"
    committer = Consumer({"bootstrap.servers": deployment.bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(s.topic_raw, 1, 7)], asynchronous=False)
    committer.close()
    progress = BrokerProgress(deployment.bootstrap, group, s.topic_raw)
    seen = progress.read(list(range(deployment.partitions)))
    progress.close()
    assert seen is not None
    ends, committed = seen
    assert sum(e or 0 for e in ends.values()) == sent
    assert committed == {p: (7 if p == 1 else None) for p in range(deployment.partitions)}
    started = time.monotonic()
    gone = BrokerProgress(f"127.0.0.1:{free_port()}", group, s.topic_raw, timeout_s=1.0)
    assert gone.read([0, 1]) is None
    assert time.monotonic() - started < 10
