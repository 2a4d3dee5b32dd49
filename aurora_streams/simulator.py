"""Simulated meters: realistic register and interval readings with injected faults.

:func:`generate` is a pure, seeded generator of raw messages (key, value, broker timestamp)
in arrival order; the same config gives the same bytes, which is what the integration tests
and the benchmark rely on. :func:`produce` sends them to the raw topic.

Load shape: a household base load with morning and evening peaks (AEST wall time), scaled
per device, with noise. Some meters have a solar export channel ``B1`` (a daylight bell
curve). Register meters (channel ``E1``, cumulative kWh, 5-digit registers that wrap at
100,000 kWh) read every ``register_interval_s``; interval meters send the kWh of each
``interval_s`` interval.

Injected faults (rates are per reading unless said otherwise): counter resets, rollovers
(share of register meters that start just below the wrap point), late readings (held back
and sent after a few later ones), very late readings (beyond the reorder horizon), exact
duplicates, implausible jumps, gaps (the meter is silent for a few intervals), zero runs
and stuck values, negative intervals, estimates later revised by actuals, future
timestamps, and (for DLQ demos) malformed messages.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from aurora_streams.codecs import GATEWAY_BATCH, RAW_READING, avro_encode

__all__ = ["SimConfig", "SimMessage", "generate", "produce"]

_MODULUS = 100_000.0
_AEST_MS = 10 * 3600 * 1000


class SimMessage(NamedTuple):
    key: bytes
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True)
class SimConfig:
    devices: int = 100
    seed: int = 42
    start_ms: int = 1_735_653_600_000  # 2025-01-01T00:00+10:00
    register_share: float = 0.5
    solar_share: float = 0.3
    register_interval_s: int = 300
    interval_s: int = 1800
    reset_rate: float = 0.002
    rollover_share: float = 0.05
    late_rate: float = 0.005
    very_late_rate: float = 0.0
    very_late_s: int = 9 * 3600
    duplicate_rate: float = 0.002
    jump_rate: float = 0.001
    gap_rate: float = 0.002
    zero_run_rate: float = 0.00005
    negative_rate: float = 0.0
    overlap_rate: float = 0.0
    """Intervals sent with twice their length, overlapping their predecessor (a 23-hour
    day sent as 24 hours)."""
    estimate_rate: float = 0.0
    future_rate: float = 0.0
    malformed_rate: float = 0.0
    batch_size: int = 1
    encoding: str = "json"  # json, avro or mixed
    device_prefix: str = "meter"


@dataclass
class _Channel:
    name: str
    kind: str
    step_s: int
    register: float = 0.0
    stuck_left: int = 0
    stuck_value: float | None = None
    silent_left: int = 0


@dataclass
class _Device:
    device_id: str
    scale: float
    solar_kw: float
    channels: list[_Channel]
    held: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """(release after sim ms, reading) for late readings."""
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Readings waiting to fill a gateway batch."""


def _consumption_kw(dev: _Device, ts_ms: int, rng: random.Random) -> float:
    hour = ((ts_ms + _AEST_MS) % 86_400_000) / 3_600_000.0
    shape = 0.3 + 1.2 * math.exp(-((hour - 7.5) ** 2) / 1.5) + 2.0 * math.exp(-((hour - 19.0) ** 2) / 3.0)
    return max(0.0, dev.scale * shape * (1.0 + rng.gauss(0.0, 0.1)))


def _solar_kw(dev: _Device, ts_ms: int) -> float:
    hour = ((ts_ms + _AEST_MS) % 86_400_000) / 3_600_000.0
    if not 6.0 < hour < 18.0:
        return 0.0
    return dev.solar_kw * math.sin(math.pi * (hour - 6.0) / 12.0)


def _make_devices(cfg: SimConfig, rng: random.Random) -> list[_Device]:
    devices = []
    for i in range(cfg.devices):
        device_id = f"{cfg.device_prefix}-{i:06d}"
        register = rng.random() < cfg.register_share
        channels = []
        if register:
            ch = _Channel("E1", "register", cfg.register_interval_s, register=rng.uniform(1_000, 90_000))
            if rng.random() < cfg.rollover_share:
                ch.register = _MODULUS - rng.uniform(0.5, 3.0)
            channels.append(ch)
        else:
            channels.append(_Channel("E1", "interval", cfg.interval_s))
        solar = rng.random() < cfg.solar_share
        if solar:
            channels.append(_Channel("B1", "interval", cfg.interval_s))
        devices.append(
            _Device(device_id, rng.uniform(0.5, 2.0), rng.uniform(2.0, 6.0) if solar else 0.0, channels)
        )
    return devices


def _encode(cfg: SimConfig, rng: random.Random, doc: dict[str, Any]) -> bytes:
    use_avro = cfg.encoding == "avro" or (cfg.encoding == "mixed" and rng.random() < 0.5)
    if not use_avro:
        return orjson.dumps(doc)
    if "readings" in doc:
        return avro_encode(GATEWAY_BATCH, {**doc, "readings": [_avro_reading(r) for r in doc["readings"]]})
    return avro_encode(RAW_READING, _avro_reading(doc))


def _avro_reading(r: dict[str, Any]) -> dict[str, Any]:
    out = dict(r)
    for key in ("device_id", "interval_s", "method", "reason_code", "updated_at", "source"):
        out.setdefault(key, None)
    return out


def generate(
    cfg: SimConfig, *, limit: int | None = None, duration_s: int | None = None
) -> Iterator[SimMessage]:
    """Raw messages in arrival order. Stops after ``limit`` messages or ``duration_s`` of
    simulated time (whichever first); with neither, runs forever."""
    rng = random.Random(cfg.seed)
    devices = _make_devices(cfg, rng)
    heap: list[tuple[int, int, int]] = []
    for d_idx, dev in enumerate(devices):
        for c_idx, ch in enumerate(dev.channels):
            # Spread first readings over one step so devices do not all report at once.
            first = cfg.start_ms + (ch.step_s * 1000) + rng.randrange(0, ch.step_s) * 1000
            first -= first % (ch.step_s * 1000)
            heapq.heappush(heap, (first, d_idx, c_idx))
    end_ms = None if duration_s is None else cfg.start_ms + duration_s * 1000
    emitted = 0
    while heap:
        ts, d_idx, c_idx = heapq.heappop(heap)
        if end_ms is not None and ts > end_ms:
            break
        dev = devices[d_idx]
        ch = dev.channels[c_idx]
        heapq.heappush(heap, (ts + ch.step_s * 1000, d_idx, c_idx))
        arrival = ts + rng.randrange(500, 20_000)
        for msg in _tick(cfg, rng, dev, ch, ts, arrival):
            yield msg
            emitted += 1
            if limit is not None and emitted >= limit:
                return


def _tick(
    cfg: SimConfig, rng: random.Random, dev: _Device, ch: _Channel, ts: int, arrival: int
) -> Iterator[SimMessage]:
    step_h = ch.step_s / 3600.0
    if ch.name == "B1":
        energy = max(0.0, _solar_kw(dev, ts) - 0.3 * _consumption_kw(dev, ts, rng)) * step_h
    else:
        energy = _consumption_kw(dev, ts, rng) * step_h
    energy = round(energy, 4)
    # Faults that change what the meter measures.
    if ch.stuck_left > 0:
        ch.stuck_left -= 1
        energy = 0.0 if ch.stuck_value is None else ch.stuck_value
    elif rng.random() < cfg.zero_run_rate:
        # Long enough to be a fault under the default rules (DeviceRules.zero_run_min_s,
        # frozen_min_s): a stuck meter reads zero for a day or more, or one value for hours.
        ch.stuck_value = None if ch.kind == "register" or rng.random() < 0.5 else energy
        hours = rng.uniform(25, 30) if ch.stuck_value is None else rng.uniform(7, 9)
        ch.stuck_left = round(hours * 3600 / ch.step_s)
    if ch.kind == "register":
        ch.register = ch.register + energy
        if rng.random() < cfg.reset_rate:
            ch.register = round(rng.uniform(0, 5), 3)
        if ch.register >= _MODULUS:
            ch.register -= _MODULUS
        value = round(ch.register, 3)
        if rng.random() < cfg.jump_rate:
            ch.register += rng.uniform(500, 5000)
            value = round(ch.register % _MODULUS, 3)
    else:
        value = energy
        if rng.random() < cfg.jump_rate:
            value = round(energy + rng.uniform(200, 2000), 4)
        if rng.random() < cfg.negative_rate:
            value = -round(rng.uniform(0.01, 1.0), 4)
    # Faults in what reaches the broker.
    if ch.silent_left > 0:
        ch.silent_left -= 1
        return
    if rng.random() < cfg.gap_rate:
        ch.silent_left = rng.randrange(1, 4)
        return
    reading: dict[str, Any] = {
        "channel": ch.name,
        "ts": ts if rng.random() < 0.5 else _iso(ts),
        "kind": ch.kind,
        "value": value if rng.random() < 0.9 else value * 1000.0,
        "unit": "kWh",
    }
    if reading["value"] != value:
        reading["unit"] = "Wh"
    if ch.kind == "interval":
        reading["interval_s"] = ch.step_s
        if cfg.overlap_rate and rng.random() < cfg.overlap_rate:
            reading["interval_s"] = 2 * ch.step_s
    if rng.random() < cfg.future_rate:
        arrival = ts - 2 * 3600 * 1000
    revision: dict[str, Any] | None = None
    if rng.random() < cfg.estimate_rate:
        actual = dict(reading, quality="A", updated_at=arrival + 60_000)
        reading["quality"] = "E"
        reading["method"] = "52"
        reading["updated_at"] = arrival
        revision = actual
    yield from _release(cfg, rng, dev, arrival)
    if rng.random() < cfg.late_rate:
        dev.held.append((arrival + ch.step_s * 1000 * rng.randrange(2, 5), reading))
    elif rng.random() < cfg.very_late_rate:
        dev.held.append((arrival + cfg.very_late_s * 1000, reading))
    else:
        yield from _send(cfg, rng, dev, reading, arrival)
    if revision is not None:
        yield from _send(cfg, rng, dev, revision, arrival + 60_000)


def _release(cfg: SimConfig, rng: random.Random, dev: _Device, now: int) -> Iterator[SimMessage]:
    if not dev.held:
        return
    due = [h for h in dev.held if h[0] <= now]
    if not due:
        return
    dev.held = [h for h in dev.held if h[0] > now]
    for _, reading in due:
        yield from _send(cfg, rng, dev, reading, now)


def _send(
    cfg: SimConfig, rng: random.Random, dev: _Device, reading: dict[str, Any], arrival: int
) -> Iterator[SimMessage]:
    key = dev.device_id.encode()
    if cfg.batch_size > 1:
        dev.pending.append(reading)
        if len(dev.pending) < cfg.batch_size:
            return
        doc: dict[str, Any] = {"device_id": dev.device_id, "readings": dev.pending}
        dev.pending = []
    else:
        doc = {"device_id": dev.device_id, **reading}
    if rng.random() < cfg.malformed_rate:
        value = orjson.dumps(doc)[: rng.randrange(1, 40)]
    else:
        value = _encode(cfg, rng, doc)
    yield SimMessage(key, value, arrival)
    if rng.random() < cfg.duplicate_rate:
        yield SimMessage(key, value, arrival + rng.randrange(1, 5000))


def _iso(ts_ms: int) -> str:
    from aurora_streams.domain.timeutil import format_ms

    return format_ms(ts_ms)


def produce(
    messages: Iterator[SimMessage],
    *,
    bootstrap: str,
    topic: str,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
    compression: str = "none",
    live: bool = False,
) -> int:
    """Send ``messages`` to ``topic`` keyed by device (murmur2, as the Java client does), at
    most ``rate`` messages per second when given. Returns the number sent.

    ``live``: a message is not sent before the wall clock reaches its stamp (its simulated
    arrival). The broker stamps raw records on arrival (LogAppendTime) and readings ahead of
    that are flagged ``future_timestamp``; a simulated clock that ran past the wall clock would
    make every reading a future one. So a fleet started in the past catches up at ``rate``,
    then goes on in real time, as a real one does."""
    from tqdm import tqdm

    from aurora_streams.kafka.producer import RecordProducer

    producer = RecordProducer(bootstrap, linger_ms=5, compression=compression, idempotent=False)

    sent = 0
    started = time.monotonic()
    bar = tqdm(total=total, unit="msg", disable=not progress, mininterval=0.5)
    try:
        for msg in messages:
            if live and (early_s := msg.timestamp_ms / 1000.0 - time.time()) > 0:
                producer.poll(0)
                time.sleep(early_s)
            producer.produce(topic, msg.key, msg.value, timestamp_ms=msg.timestamp_ms)
            sent += 1
            bar.update(1)
            producer.poll(0)
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        producer.pending(30)  # an interrupted run still delivers what it queued
        bar.close()
    producer.flush(0)  # raises DeliveryFailed if any message was not delivered
    return sent
