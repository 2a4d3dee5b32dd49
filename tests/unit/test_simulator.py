from __future__ import annotations

from collections import Counter

from aurora_streams.processing import build_processor, new_state
from aurora_streams.settings import Settings
from aurora_streams.simulator import SimConfig, generate


def test_same_seed_same_bytes() -> None:
    cfg = SimConfig(devices=20, seed=3, encoding="mixed")
    assert list(generate(cfg, limit=500)) == list(generate(cfg, limit=500))
    assert list(generate(cfg, limit=50)) != list(generate(SimConfig(devices=20, seed=4), limit=50))


def test_messages_keyed_by_device_with_solar_export() -> None:
    msgs = list(generate(SimConfig(devices=30, solar_share=0.5, encoding="json"), limit=2000))
    assert len({m.key for m in msgs}) == 30
    assert any(b'"B1"' in m.value for m in msgs)


def test_gateway_batches() -> None:
    msgs = list(generate(SimConfig(devices=5, batch_size=48, encoding="json"), limit=10))
    assert all(b'"readings"' in m.value for m in msgs)


def test_injected_faults_show_up_as_flags() -> None:
    cfg = SimConfig(
        devices=60,
        seed=5,
        reset_rate=0.02,
        rollover_share=0.3,
        late_rate=0.03,
        duplicate_rate=0.02,
        jump_rate=0.01,
        gap_rate=0.02,
        zero_run_rate=0.02,
        negative_rate=0.01,
        estimate_rate=0.02,
        future_rate=0.01,
        malformed_rate=0.01,
        encoding="mixed",
    )
    # A stuck meter's run outlasts the defaults' minimum durations, but 6,000 messages over
    # 60 meters is about a day each: shorter minimums show the fault within it.
    s = Settings(zero_run_min_s=3600, frozen_min_s=3600)
    p = build_processor(s)
    states: dict = {}
    flags: Counter[str] = Counter()
    for offset, m in enumerate(generate(cfg, limit=6000)):
        for out in p.process(
            m.key,
            m.value,
            partition=0,
            offset=offset,
            timestamp_ms=m.timestamp_ms,
            states=states,
            load=new_state,
        ):
            if out.topic == "meter.anomalies":
                flags[out.value.split(b'"type":"')[1].split(b'"')[0].decode()] += 1
    assert {
        "counter_reset",
        "rollover",
        "gap",
        "suspicious_jump",
        "zero_run",
        "negative",
        "future_timestamp",
    } <= set(flags), flags
    assert p.stats["duplicate"] > 0 and p.stats["out_of_order"] > 0 and p.stats["revised"] > 0
    assert p.stats["dlq"] > 0
