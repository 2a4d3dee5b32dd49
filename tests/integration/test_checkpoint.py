"""The normalize agent's epochs (see ``agents.normalize``): states are stored once per
checkpoint, not once per reading, input is committed only after its checkpoint is stored,
and a stream that pauses is still checkpointed and committed."""

from __future__ import annotations

import re

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
