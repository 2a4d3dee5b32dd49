"""A generated fleet through a real worker on the embedded broker, checked record by
record against the reference."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from aurora_streams.codecs import decode_output
from aurora_streams.domain.flags import ANOMALY_FLAGS, Flag
from aurora_streams.simulator import SimConfig, generate
from tests.integration.harness import Deployment, reference, stored_states

#: Every anomaly kind injected well above production rates.
FLEET = SimConfig(
    devices=120,
    seed=7,
    reset_rate=0.01,
    rollover_share=0.25,
    late_rate=0.02,
    very_late_rate=0.01,
    duplicate_rate=0.01,
    jump_rate=0.005,
    gap_rate=0.01,
    zero_run_rate=0.01,
    negative_rate=0.005,
    overlap_rate=0.005,
    estimate_rate=0.01,
    future_rate=0.005,
    malformed_rate=0.003,
    encoding="mixed",
)


def test_fleet_through_one_worker_matches_reference(broker: str, tmp_path: Path) -> None:
    deployment = Deployment(
        broker,
        tmp_path,
        extra_env={
            # 10,500 messages over 120 meters is under a day each: runs of equal values are
            # anomalies after an hour here (the defaults wait a day for zeros, 6 h for one value).
            "AURORA_ZERO_RUN_MIN_S": "3600",
            "AURORA_FROZEN_MIN_S": "3600",
            # The simulator's future-stamped readings are ahead of its own clock (2025), not of
            # the broker's: keep its stamps for the future-timestamp flag to show, with no
            # time retention (it would delete them, stamped 2025).
            "AURORA_RAW_TIMESTAMP_TYPE": "CreateTime",
            "AURORA_TOPIC_RETENTION_MS": "-1",
        },
    )
    deployment.create_topics()
    try:
        _fleet_through_one_worker(deployment)
    finally:
        deployment.stop_all()


def _fleet_through_one_worker(deployment: Deployment) -> None:
    sent = deployment.produce(generate(FLEET, limit=10_500))
    s = deployment.settings
    raw = deployment.read(s.topic_raw, until=lambda r: len(r) >= sent)
    expected = reference(s, raw)
    readings = sum(v for k, v in expected.stats.items() if not k.startswith("dlq"))
    assert readings >= 10_000 and len({r.key for r in raw}) >= 100

    seen_flags = Counter(f for v in expected.outputs[s.topic_normalized] for f in decode_output(v)["flags"])
    assert set(ANOMALY_FLAGS) <= set(seen_flags), seen_flags
    assert {Flag.OUT_OF_ORDER, Flag.REVISED, Flag.ESTIMATED, Flag.UNIT_CONVERTED, Flag.FIRST_READING} <= set(
        seen_flags
    )
    assert expected.stats["duplicate"] > 0 and expected.stats["dlq"] > 0

    worker = deployment.start_worker("solo")
    worker.wait_ready()
    for topic, values in expected.outputs.items():
        n_expected = len(values)
        got = deployment.read(topic, until=lambda r: len(r) >= n_expected, idle_s=2.0)  # noqa: B023
        # One worker, no crash: exactly the reference's records, each exactly once, and in
        # the reference's order within each device.
        assert Counter(r.value for r in got) == Counter(values), topic
        if topic == s.topic_dlq:
            continue
        by_device: dict[bytes | None, list[bytes | None]] = {}
        for r in sorted(got, key=lambda r: (r.partition, r.offset)):
            by_device.setdefault(r.key, []).append(r.value)
        exp_by_device: dict[bytes | None, list[bytes | None]] = {}
        for v in values:
            exp_by_device.setdefault(_key_of(v), []).append(v)
        assert by_device == exp_by_device, topic
    assert stored_states(deployment, expected.states) == expected.states
    metrics = worker.metrics()
    for name in (
        "aurora_readings_processed_total",  # throughput
        "aurora_batch_duration_seconds_bucket",  # latency histograms
        "aurora_record_e2e_latency_seconds_bucket",
        "aurora_consumer_lag{",
        "aurora_last_commit_timestamp_seconds{",
        'aurora_table_keys{table="device_state"}',
        "aurora_rebalances_total",
        "aurora_state_dir_bytes",
        "aurora_state_memory_bytes",
        "aurora_malloc_in_use_bytes",
        "aurora_python_allocated_blocks",
    ):
        assert name in metrics, name
    # Once everything is committed, nothing is left acknowledged above a hole on any raw
    # partition (one sample per assigned partition).
    deadline = time.monotonic() + 30
    while True:
        pending = [
            float(line.rsplit(" ", 1)[1])
            for line in worker.metrics().splitlines()
            if line.startswith("aurora_consumer_acked_pending{") and s.topic_raw in line
        ]
        if (len(pending) == deployment.partitions and not any(pending)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert pending == [0.0] * deployment.partitions, pending


def _key_of(value: bytes) -> bytes:
    return str(decode_output(value)["device_id"]).encode()


def test_tail_prints_decoded_records(deployment: Deployment) -> None:
    import subprocess
    import sys

    from tests.integration.harness import REPO

    deployment.produce(generate(FLEET, limit=50))
    out = subprocess.run(
        [sys.executable, "-m", "aurora_streams", "tail", "raw", "--from-beginning", "--count", "5"],
        env=deployment.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5 and all('"device_id"' in line for line in lines)


def test_avro_output_encoding_matches_reference(deployment: Deployment) -> None:
    deployment.extra_env["AURORA_OUTPUT_ENCODING"] = "avro"
    sent = deployment.produce(generate(FLEET, limit=1_500))
    s = deployment.settings
    assert s.output_encoding == "avro"
    expected = reference(s, deployment.read(s.topic_raw, until=lambda r: len(r) >= sent))
    deployment.start_worker("avro").wait_ready()
    for topic, values in expected.outputs.items():
        n_expected = len(values)
        got = deployment.read(topic, until=lambda r: len(r) >= n_expected)  # noqa: B023
        assert Counter(r.value for r in got) == Counter(values), topic
        assert all(r.value is not None and r.value.startswith(b"\xc3\x01") for r in got)


def test_every_compression_codec_is_read(deployment: Deployment) -> None:
    from aurora_streams.simulator import produce

    messages = list(generate(FLEET, limit=800))
    s = deployment.settings
    for i, codec in enumerate(("gzip", "snappy", "lz4", "zstd")):
        produce(iter(messages[i * 200 : (i + 1) * 200]), bootstrap=deployment.bootstrap, topic=s.topic_raw,
                progress=False, compression=codec)  # fmt: skip
    raw = deployment.read(s.topic_raw, until=lambda r: len(r) >= 800)
    expected = reference(s, raw)
    deployment.start_worker("codecs").wait_ready()
    n_expected = len(expected.outputs[s.topic_normalized])
    got = deployment.read(s.topic_normalized, until=lambda r: len(r) >= n_expected)
    assert Counter(r.value for r in got) == Counter(expected.outputs[s.topic_normalized])
