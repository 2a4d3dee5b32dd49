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

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.streams import _current_event

from aurora_streams import metrics
from aurora_streams.agents.delivery import FastProducer, TableWriter, deliver, flush
from aurora_streams.agents.views import ViewUpdater
from aurora_streams.domain.device import DeviceState
from aurora_streams.processing import OutRecord, Processor
from aurora_streams.settings import Settings
from aurora_streams.tables.device_state import StateCache, load_state

__all__ = ["attach_normalize"]

log = logging.getLogger(__name__)

Views = tuple[Any, Any, Any]
"""The view tables: device_days, recent_anomalies, forecasts (see tables.views)."""


def attach_normalize(
    app: faust.App, raw_topic: Any, table: Any, processor: Processor, settings: Settings, views: Views
) -> Any:
    """Register the normalize agent on ``app``."""
    fast = (
        FastProducer(
            settings.bootstrap_servers,
            compression=settings.output_compression,
            message_timeout_ms=round(settings.produce_timeout_s * 1000),
        )
        if settings.processing_guarantee == "at_least_once"
        else None  # a transaction must cover outputs and changelog: Faust's producer
    )

    cache = StateCache(settings.state_cache_devices)
    app.state_caches.append(cache)  # type: ignore[attr-defined]  # AuroraApp: cleared on rebalance

    @app.agent(raw_topic, name="normalize")
    async def normalize(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            try:
                await handle_batch(app, table, processor, events, settings, views, fast, cache)
            except BaseException as exc:
                cache.clear()  # states changed in memory but not stored
                withhold_acks(events)
                if not isinstance(exc, asyncio.CancelledError):
                    _stop_now(exc)
                raise

    return normalize


def withhold_acks(events: Sequence[Any]) -> None:
    """Keep a failed batch's offsets from ever being committed.

    ``take_events`` acknowledges a batch in a ``finally``, so a batch whose body raised (or
    was cancelled at shutdown) would otherwise be committed without its outputs or state
    stored, and never re-delivered. A message already marked acked is not acknowledged to
    the consumer again, so the committed offset stops before the batch."""
    for event in events:
        event.message.acked = True


def _stop_now(exc: BaseException) -> None:
    """A batch could not be stored (broker or store failure): stop the worker at once,
    without a commit. Going on would let later batches advance the device states past the
    failed messages, whose re-delivery the replay fence would then drop; a restart
    re-delivers the batch from the committed offset."""
    log.critical("batch failed, stopping the worker so it is re-delivered: %r", exc, exc_info=exc)
    logging.shutdown()
    os._exit(70)  # EX_SOFTWARE; the orchestrator (or the operator) restarts the worker


@contextmanager
def _on_partition(event: Any) -> Iterator[None]:
    """Make ``event`` current: Faust's RocksDB store reads and writes the current event's
    partition, and its changelog records go to that partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


@dataclass
class _Slice:
    """One source partition's part of a batch, processed and not yet stored."""

    events: list[Any]
    states: dict[str, DeviceState] = field(default_factory=dict)
    outputs: list[OutRecord] = field(default_factory=list)
    updater: ViewUpdater | None = None


async def handle_batch(
    app: faust.App,
    table: Any,
    processor: Processor,
    events: Sequence[Any],
    settings: Settings,
    views: Views,
    fast: FastProducer | None,
    cache: StateCache,
) -> None:
    """Process one ``take_events`` batch (see module docstring): every partition's slice is
    computed first, then all outputs and view changelogs are acknowledged together, then all
    device states are written and acknowledged. Two broker round trips per batch, however
    many partitions it spans."""
    started = time.perf_counter()
    generation = cache.generation
    by_partition: dict[int, _Slice] = {}
    for event in events:
        by_partition.setdefault(event.message.partition, _Slice([])).events.append(event)
    for piece in by_partition.values():
        with _on_partition(piece.events[0]):
            _compute(table, processor, settings, views, cache, piece)
    writers = {p: TableWriter(fast, p) for p in by_partition}
    # 1. Outputs, then the views (idempotent: replaying a batch re-applies nothing).
    if fast is None:
        await deliver(app, [o for piece in by_partition.values() for o in piece.outputs])
    else:
        for piece in by_partition.values():
            fast.produce_all(piece.outputs)
    views_dirty = False
    for p, piece in by_partition.items():
        assert piece.updater is not None
        with _on_partition(piece.events[0]):
            piece.updater.write(writers[p])
        views_dirty = views_dirty or piece.updater.dirty
    if fast is not None or views_dirty:
        # The device state fences replays, so nothing it covers may be lost: the outputs and
        # the views' changelog are acknowledged before it is written.
        await flush(app, fast)
    # 2. The device states (acknowledged before the input is: see module docstring).
    for p, piece in by_partition.items():
        with _on_partition(piece.events[0]):
            for device_id, state in piece.states.items():
                writers[p].put(table, device_id, state.to_bytes())
        metrics.STATE_WRITES.inc(len(piece.states))
    if fast is not None:
        await flush(app, fast)
    for piece in by_partition.values():
        for device_id, state in piece.states.items():
            cache.put(device_id, state, generation)
    now = time.time()
    metrics.E2E_LATENCY.observe(max(0.0, now - min(e.message.timestamp for e in events)))
    metrics.BATCH_DURATION.observe(time.perf_counter() - started)
    metrics.BATCH_SIZE.observe(len(events))
    metrics.LAST_BATCH_TIMESTAMP.set(now)
    _export_stats(processor)


def _compute(
    table: Any, processor: Processor, settings: Settings, views: Views, cache: StateCache, piece: _Slice
) -> None:
    """Run a partition's messages through the processor, in offset order, and apply what
    they produced to the views in memory."""
    states = piece.states

    def load(device_id: str) -> DeviceState:
        cached = cache.get(device_id)
        return cached if cached is not None else load_state(table, device_id)

    emitted: list[Any] = []
    for event in piece.events:
        msg = event.message
        piece.outputs.extend(
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
    piece.updater = ViewUpdater(settings, *views)
    piece.updater.apply(emitted)
    piece.outputs.extend(piece.updater.forecast_records())


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
