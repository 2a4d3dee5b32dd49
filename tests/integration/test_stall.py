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
        assert "worker progressing again, ready" in log
    finally:
        dep.stop_all()
        os.kill(broker.pid, signal.SIGCONT)
        stop_process(broker)
