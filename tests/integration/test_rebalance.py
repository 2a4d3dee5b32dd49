"""Workers joining and leaving while one catches up on a backlog, with the sink on: every
rebalance moves partitions mid-fetch, and afterwards the outputs equal the reference, the
database holds every raw message and the latest revision of every reading, and the group's
committed offsets reach the raw topic's end.

Before the consumer's seek fence (``faust_adapter.ProbingConsumer``), records fetched before a
rebalance's seek reached the agent after it: the fetch loop's read offset moved past the
committed offset, the re-fetched records were skipped as read, and the partition's commit
stopped for good or moved past records no one processed (issue 19's rebalance loss; 2 in 4
runs of the two-worker sink test, and more often with more rebalances).
"""

from __future__ import annotations

from tests.integration.harness import (
    Deployment,
    TopicTail,
    assert_matches,
    log_ends,
    wait_committed,
    wait_for,
)
from tests.integration.test_crash import _produce_fleet
from tests.integration.test_sink_e2e import assert_db_matches_topic


def test_workers_joining_and_leaving_mid_stream_lose_nothing_and_commit_everything(
    deployment: Deployment, database: str
) -> None:
    dep = deployment
    s = dep.settings
    # With the sink on, the raw topic has two readers and each record's delivery can wait,
    # so a rebalance's seek can fall inside the iteration of a fetch.
    dep.extra_env["AURORA_DATABASE_URL"] = database
    # Small batches keep the first worker busy through every rebalance below, and a long
    # checkpoint interval makes them land before its first commit: the seek after each one
    # then goes to the log's start, where aiokafka had already fetched from.
    dep.extra_env["AURORA_BATCH_MAX"] = "20"
    dep.extra_env["AURORA_CHECKPOINT_INTERVAL_S"] = "10"
    expected = _produce_fleet(dep, seed=23, limit=8_000)
    total = len(expected.outputs[s.topic_normalized])
    progress = TopicTail(dep, s.topic_normalized)
    a = dep.start_worker("a")
    joined = None
    for i, share in enumerate((0.1, 0.25, 0.4, 0.55)):
        wait_for(progress, int(total * share))
        if joined is None:
            joined = dep.start_worker(f"b{i}")
            joined.wait_ready()
        else:
            joined.stop()
            joined = None
    progress.close()
    a.wait_ready()
    assert_matches(dep, expected)
    raw = dep.read(s.topic_raw)
    assert_db_matches_topic(dep, database, len(raw))
    wait_committed(dep, s.topic_raw, log_ends(raw), timeout=60)
