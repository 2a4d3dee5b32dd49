"""Stopping a worker whose broker is gone: it exits within its consumer stop timeout."""

from __future__ import annotations

import time
from pathlib import Path

from aurora_streams.devbroker import stop_process
from tests.integration.harness import Deployment, start_test_broker


def test_a_worker_asked_to_stop_after_its_broker_is_gone_exits_after_the_stop_timeout(tmp_path: Path) -> None:
    """With the broker gone, aiokafka retries the consumer's last commit and group leave
    until the stop gives up on them: mode's default made that 60 s (the worker exited after
    62 s, past the StatefulSet's grace). ``AURORA_CONSUMER_STOP_TIMEOUT_S`` bounds it; input
    not committed is re-delivered (the crash test covers that)."""
    bootstrap, broker = start_test_broker(tmp_path)  # its own: this test stops it
    dep = Deployment(bootstrap, tmp_path, extra_env={"AURORA_CONSUMER_STOP_TIMEOUT_S": "2"})
    try:
        dep.create_topics()
        worker = dep.start_worker("w1")
        worker.wait_ready()
    finally:
        stop_process(broker)
    try:
        time.sleep(2)  # the worker has lost its connections
        assert worker.proc is not None
        started = time.monotonic()
        worker.proc.terminate()
        returncode = worker.proc.wait(55)  # TimeoutExpired: still up past mode's 60 s default, nearly
        waited = time.monotonic() - started
        assert returncode == 0, worker.tail()
        assert waited < 30, f"stopping took {waited:.0f} s:\n{worker.tail()}"
        assert "[^---_ConsumerThread]: Stopping..." in worker.log_path.read_text(errors="replace")
    finally:
        dep.stop_all()
