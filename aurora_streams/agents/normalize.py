"""The normalize agent: raw topic -> normalized, anomaly and DLQ topics + device state.

The raw topic is keyed by device already, so there is no ``group_by`` (no repartition
topic): a device's readings arrive on one partition, in order, at one worker.

Per batch of raw messages (``take_events``), for each source partition in turn:

1. with an event of that partition current (Faust's RocksDB store and changelog use the
   current event's partition), load the touched devices' states;
2. run every message through :meth:`Processor.process`, in offset order;
3. apply the normalized readings and anomalies to the view tables in memory
   (:class:`ViewUpdater`: day aggregates, recent anomalies, forecasts);
4. produce all outputs (normalized, anomalies, DLQ, forecasts) and the views' changelog
   records, and **wait until the broker has them**;
5. only then write each touched device's state (one write per device per batch) and wait
   for its changelog record too, before the batch's input is acknowledged.

Step 4 before 5 is what makes a crash at any instant safe under at-least-once delivery: if
the state write (or its changelog record) is lost, the messages are re-delivered and
recompute the identical outputs (same ids, revisions, content) and view updates (which are
idempotent); if it survived, the re-delivered readings are duplicates and produce nothing.
Under at-least-once, outputs and changelog records go through librdkafka
(:class:`FastProducer`); under exactly-once, through Faust's transactional producer.
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
from aurora_streams.agents.delivery import FastProducer, TableWriter, deliver
from aurora_streams.agents.views import ViewUpdater
from aurora_streams.domain.device import DeviceState
from aurora_streams.processing import OutRecord, Processor
from aurora_streams.settings import Settings
from aurora_streams.tables.device_state import load_state

__all__ = ["attach_normalize"]

log = logging.getLogger(__name__)

Views = tuple[Any, Any, Any]
"""The view tables: device_days, recent_anomalies, forecasts (see tables.views)."""


def attach_normalize(
    app: faust.App, raw_topic: Any, table: Any, processor: Processor, settings: Settings, views: Views
) -> Any:
    """Register the normalize agent on ``app``."""
    fast = (
        FastProducer(settings.bootstrap_servers, compression=settings.output_compression)
        if settings.processing_guarantee == "at_least_once"
        else None  # a transaction must cover outputs and changelog: Faust's producer
    )

    @app.agent(raw_topic, name="normalize")
    async def normalize(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            await handle_batch(app, table, processor, events, settings, views, fast)

    return normalize


async def handle_batch(
    app: faust.App,
    table: Any,
    processor: Processor,
    events: Sequence[Any],
    settings: Settings,
    views: Views,
    fast: FastProducer | None,
) -> None:
    """Process one ``take_events`` batch, partition by partition (see module docstring)."""
    by_partition: dict[int, list[Any]] = {}
    for event in events:
        by_partition.setdefault(event.message.partition, []).append(event)
    for partition, partition_events in by_partition.items():
        started = time.perf_counter()
        token = _current_event.set(weakref.ref(partition_events[0]))
        try:
            states: dict[str, DeviceState] = {}

            def load(device_id: str) -> DeviceState:
                return load_state(table, device_id)

            outputs: list[OutRecord] = []
            emitted: list[Any] = []
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
                        emitted=emitted,
                    )
                )
            updater = ViewUpdater(settings, *views)
            updater.apply(emitted)
            outputs.extend(updater.forecast_records())
            writer = TableWriter(app, fast, partition)
            # 1. Outputs, then the views (idempotent: replaying a batch re-applies nothing).
            if fast is None:
                await deliver(app, outputs)
                updater.write(writer)
            else:
                fast.produce_all(outputs)
                updater.write(writer)
            if fast is not None or (states and updater.dirty):
                # The device state fences replays, so nothing it covers may be lost: the
                # outputs and the views' changelog are acknowledged before it is written.
                await writer.flush()
            # 2. The device states (acknowledged before the input is: see module docstring).
            for device_id, state in states.items():
                writer.put(table, device_id, state.to_bytes())
            if fast is not None:
                await writer.flush()
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
