"""The normalize agent: raw topic -> normalized, anomaly and DLQ topics + device state.

The raw topic is keyed by device already, so there is no ``group_by`` (no repartition
topic): a device's readings arrive on one partition, in order, at one worker.

Per batch of raw messages (``take_events``), for each source partition in turn:

1. with an event of that partition current (Faust's RocksDB store and changelog use the
   current event's partition), load the touched devices' states;
2. run every message through :meth:`Processor.process`, in offset order;
3. produce all outputs and **wait until the broker has them**;
4. only then write each touched device's state (one table write per device per batch).

Step 3 before 4 is what makes a crash at any instant safe under at-least-once delivery: if
the state write (or its changelog record) is lost, the messages are re-delivered and
recompute the identical outputs (same ids, revisions, content); if it survived, the
re-delivered readings are duplicates and produce nothing. Every touched state is written
even when unchanged, so a state that only reached local RocksDB before a crash reaches the
changelog before the input offsets are committed (Faust flushes the producer before it
commits).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from typing import Any

import faust
from faust.streams import _current_event

from aurora_streams import metrics
from aurora_streams.agents.delivery import deliver
from aurora_streams.domain.device import DeviceState
from aurora_streams.processing import OutRecord, Processor
from aurora_streams.settings import Settings
from aurora_streams.tables.device_state import load_state

__all__ = ["attach_normalize"]

log = logging.getLogger(__name__)


def attach_normalize(
    app: faust.App, raw_topic: Any, table: Any, processor: Processor, settings: Settings
) -> Any:
    """Register the normalize agent on ``app``."""

    @app.agent(raw_topic, name="normalize")
    async def normalize(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            await handle_batch(app, table, processor, events)

    return normalize


async def handle_batch(app: faust.App, table: Any, processor: Processor, events: Sequence[Any]) -> None:
    """Process one ``take_events`` batch, partition by partition (see module docstring)."""
    by_partition: dict[int, list[Any]] = {}
    for event in events:
        by_partition.setdefault(event.message.partition, []).append(event)
    for partition_events in by_partition.values():
        started = time.perf_counter()
        token = _current_event.set(weakref.ref(partition_events[0]))
        try:
            states: dict[str, DeviceState] = {}

            def load(device_id: str) -> DeviceState:
                return load_state(table, device_id)

            outputs: list[OutRecord] = []
            for event in partition_events:
                msg = event.message
                outputs.extend(
                    processor.process(
                        msg.key,
                        msg.value,
                        partition=msg.partition,
                        offset=msg.offset,
                        timestamp_ms=round(msg.timestamp * 1000),
                        states=states,
                        load=load,
                    )
                )
            await deliver(app, outputs)
            for device_id, state in states.items():
                table[device_id] = state.to_bytes()
            metrics.STATE_WRITES.inc(len(states))
        finally:
            _current_event.reset(token)
        now = time.time()
        oldest = partition_events[0].message.timestamp
        metrics.E2E_LATENCY.observe(max(0.0, now - oldest))
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(partition_events))
        metrics.LAST_BATCH_TIMESTAMP.set(now)
    _export_stats(processor)


_exported: dict[str, int] = {}


def _export_stats(processor: Processor) -> None:
    # The processor counts in plain ints (cheap on the hot path); copy increments here.
    for key, value in processor.stats.items():
        delta = value - _exported.get(key, 0)
        if delta <= 0:
            continue
        _exported[key] = value
        if key.startswith("dlq:"):
            metrics.DLQ_RECORDS.labels(key[4:]).inc(delta)
        elif key != "dlq":
            metrics.READINGS.labels(key).inc(delta)
