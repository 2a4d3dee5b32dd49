"""Workers killed with SIGKILL mid-stream, restarted, and checked against the reference.

At-least-once delivery re-delivers what was not committed; the outputs may repeat, but the
latest revision of every record, the DLQ entries and the final device states must equal a
crash-free run, and nothing may be missing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aurora_streams.simulator import SimConfig, generate
from tests.integration.harness import (
    Deployment,
    Expected,
    TopicTail,
    Worker,
    assert_matches,
    wait_for,
)
from tests.integration.test_api import check_fleet, get, tokens
from tests.integration.test_pipeline import FLEET


def test_sigkill_three_times_mid_stream(deployment: Deployment) -> None:
    dep = deployment
    # Slow batches down so kills land mid-stream rather than after the end.
    dep.extra_env["AURORA_BATCH_MAX"] = "5"
    tokens(dep)
    expected = _produce_fleet(dep, seed=11, limit=5_000)
    s = dep.settings
    total = len(expected.outputs[s.topic_normalized])
    replayed = [0.0]
    w = _kill_three_times(dep, total, before_kill=lambda w: replayed.append(_replayed_so_far(w)))
    assert_matches(dep, expected)
    # The fleet's summaries are stored with what they summarize: exact after the kills too.
    check_fleet(w, dep, expected)
    # The kills interrupted uncommitted work: some restarted worker saw re-deliveries (fenced
    # by offset) or the topic holds repeated records from batches whose state was not written.
    # Counted over every worker, since any one kill may land just after a commit.
    norm = dep.read(s.topic_normalized)
    assert sum(replayed) + _replayed_so_far(w) > 0 or len(norm) > total


def _produce_fleet(dep: Deployment, *, seed: int, limit: int) -> Expected:
    cfg = SimConfig(**{**FLEET.__dict__, "seed": seed, "devices": 100})
    _, expected = dep.produce_with_reference(generate(cfg, limit=limit))
    return expected


def _kill_three_times(
    dep: Deployment, total: int, *, before_kill: Callable[[Worker], object] = lambda _w: None
) -> Worker:
    """Start a worker and SIGKILL it at 20%, 45% and 70% of ``total`` normalized records (read
    from a live tail), restarting it each time; the third restart gets an empty data dir, so
    state must come back from the changelog. Returns the last worker, ready."""
    progress = TopicTail(dep, dep.settings.topic_normalized)
    w = dep.start_worker("a")
    for i, share in enumerate((0.2, 0.45, 0.7)):
        wait_for(progress, int(total * share))
        before_kill(w)
        w.kill()
        print(f"killed worker {i} at {progress()}/{total} normalized records")
        w = dep.start_worker(f"{'abc'[i]}-restart", datadir=dep.workdir / ("data-a" if i < 2 else "fresh"))
    progress.close()
    w.wait_ready()
    return w


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
    tokens(dep)
    cfg = SimConfig(**{**FLEET.__dict__, "seed": 23, "devices": 100})
    _, expected = dep.produce_with_reference(generate(cfg, limit=5_000))
    a = dep.start_worker("a")
    b = dep.start_worker("b")
    a.wait_ready()
    b.wait_ready()
    assert_matches(dep, expected)
    # Both workers really took part: each owns part of the fleet (its own partitions'
    # devices, ?scope=local), and together all of it.
    owned = [get(w, "/v1/fleet?scope=local")[1]["devices"] for w in (a, b)]
    assert all(n > 0 for n in owned) and sum(owned) == len(expected.states), owned


@pytest.mark.reproducer
@pytest.mark.xfail(
    strict=False,
    reason="known defect (issue 18/19 notes, session 11): in a clean-clone check of session 10 and "
    "one of session 11 a read_committed reader saw records missing after three SIGKILLs under "
    "exactly_once (2,476 of 2,517 normalized, no duplicates); reported as XFAIL until found",
)
def test_exactly_once_sigkill_three_times_leaves_no_duplicate_output(deployment: Deployment) -> None:
    """Under ``exactly_once`` on Apache Kafka, outputs, changelog writes and input offsets
    commit in one transaction per checkpoint: after three SIGKILLs mid-stream a
    ``read_committed`` reader sees every output record exactly once, the same multiset of
    records a crash-free run makes, not only the same latest revisions."""
    dep = deployment
    # Every batch is its own transaction under exactly-once: 20 messages a batch keeps the
    # kills mid-stream (they are placed by progress) at a fifth of the commits of 5.
    dep.extra_env.update({"AURORA_PROCESSING_GUARANTEE": "exactly_once", "AURORA_BATCH_MAX": "20"})
    expected = _produce_fleet(dep, seed=13, limit=2_500)
    s = dep.settings
    _kill_three_times(dep, len(expected.outputs[s.topic_normalized]))
    assert_matches(dep, expected)
    for topic in (s.topic_normalized, s.topic_anomalies, s.topic_dlq):
        got = [r.value for r in dep.read(topic)]  # read_committed: librdkafka's default
        want = expected.outputs[topic]
        assert len(got) == len(want), f"{topic}: {len(got)} committed records, {len(want)} expected"
        assert sorted(v or b"" for v in got) == sorted(want), f"{topic}: records differ"
