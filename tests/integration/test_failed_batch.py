"""A batch that cannot be stored stops the worker without a commit, and a restart
re-delivers it: nothing is lost, against the reference.

The broker is frozen (SIGSTOP) mid-stream, so the worker's producer cannot deliver a
batch's outputs within ``AURORA_PRODUCE_TIMEOUT_S``; it must exit (70) rather than let
Faust acknowledge the failed batch. This test runs its own broker, since it freezes it."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aurora_streams.devbroker import stop_process
from aurora_streams.simulator import SimConfig, generate
from tests.integration.harness import Deployment, TopicTail, assert_matches, start_test_broker, wait_for
from tests.integration.test_pipeline import FLEET


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    bootstrap, proc = start_test_broker(tmp_path)
    try:
        yield bootstrap, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stop_process(proc)


def test_a_batch_that_cannot_be_stored_stops_the_worker_and_is_redelivered(
    own_broker: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    bootstrap, broker = own_broker
    dep = Deployment(bootstrap, tmp_path)
    dep.create_topics()
    dep.extra_env.update({"AURORA_PRODUCE_TIMEOUT_S": "2", "AURORA_BATCH_MAX": "5"})
    try:
        cfg = SimConfig(**{**FLEET.__dict__, "seed": 31, "devices": 60})
        _, expected = dep.produce_with_reference(generate(cfg, limit=2500))
        s = dep.settings
        total = len(expected.outputs[s.topic_normalized])
        progress = TopicTail(dep, s.topic_normalized)
        a = dep.start_worker("a")
        wait_for(progress, total // 3)
        progress.close()
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            assert a.proc is not None
            code = a.proc.wait(timeout=90)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        assert code == 70, f"the worker went on or exited otherwise ({code}); see {a.log_path}"
        assert "batch failed, stopping the worker" in a.log_path.read_text()
        b = dep.start_worker("b", datadir=tmp_path / "data-a")
        b.wait_ready()
        assert_matches(dep, expected)
    finally:
        dep.stop_all()
