"""The normalize agent: raw topic -> normalized, anomaly and DLQ topics + device state.

The raw topic is keyed by device already, so there is no ``group_by`` (no repartition
topic): a device's readings arrive on one partition, in order, at one worker.

The agent works in **epochs**. Within an epoch, per batch of raw messages (taken from the
worker's :class:`~aurora_streams.agents.intake.RawIntake`, into which the consumer's fetch loop
hands them without Faust's per-message stream path), for each source partition in turn:

1. with an event of that partition current (Faust's RocksDB store and changelog use the
   current event's partition), load the touched devices' states (the epoch's own in-memory
   states first, then the decoded-state cache, then the table);
2. run every message through :meth:`Processor.process`, in offset order, mutating the
   epoch's states in memory;
3. apply the normalized readings and anomalies to the epoch's view updates in memory
   (:class:`ViewUpdater`: day aggregates, recent anomalies, forecasts);
4. queue all outputs (normalized, anomalies, DLQ, forecasts) to the producer, without
   waiting, and keep the batch's input unacknowledged.

An epoch ends with a **checkpoint**, after ``AURORA_CHECKPOINT_INTERVAL_S``, or once it
holds ``AURORA_CHECKPOINT_MAX_READINGS`` readings or ``AURORA_CHECKPOINT_MAX_DEVICES``
devices that were not in memory before it (see :meth:`Epoch.due`), whichever comes first,
or once its input paused for ``AURORA_CHECKPOINT_IDLE_S`` (a timer, :meth:`Epoch.idle`).
At once, before the next batch:

5. write the views' changed keys (local store, changelog queued), and mark each device
   state the epoch touched to be encoded (one write per device per epoch, however many of
   its readings the epoch held): copy on write, so later batches cannot change what is
   stored. The next epoch encodes a marked state before it first changes it
   (:meth:`Sealed.freeze`); the store encodes the rest, a slice at a time;

then in the background, while the next epoch is processed:

6. **wait until the broker has every output and view changelog record** queued so far;
7. only then write the encoded device states and wait for their changelog records too;
8. only then acknowledge the epoch's input (Faust commits it with its next commit).

One checkpoint is stored at a time, in epoch order; the next epoch reads the states of the
one being stored from memory. 6 before 7 before 8 is what makes a crash at any instant
safe under at-least-once delivery: nothing of an epoch is acknowledged before its states
are stored, so a crash (or a rebalance, which abandons the epoch) re-delivers its input
from the committed offset, and it recomputes the identical outputs (same ids, revisions,
content) and view updates (which are idempotent) from the last stored states; a state that
was stored fences its own re-delivered readings, whose outputs were acknowledged before
it. A checkpoint that fails stops the worker (exit 70) without a commit.

Writing a device once per epoch instead of once per batch, and not waiting for the broker
on the hot path, is what the epochs buy: a busy worker spent over a third of its time
encoding and writing states and views, and was idle during the two broker round trips of
every batch. What it costs: a crash re-delivers up to an epoch or two of input.
Under exactly-once every batch is its own epoch, stored before the next, so a transaction
never commits outputs whose state is not in it.

Under at-least-once, outputs and changelog records go through librdkafka
(:class:`FastProducer`); under exactly-once, through Faust's transactional producer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import faust

from aurora_streams import metrics
from aurora_streams.agents.checkpoint import (
    Epoch,
    PartitionEpoch,
    abandon,
    seal,
    store,
)
from aurora_streams.agents.delivery import (
    FastProducer,
    deliver,
)
from aurora_streams.agents.intake import RawIntake
from aurora_streams.agents.views import CachedModel, ViewUpdater
from aurora_streams.domain.device import DeviceState
from aurora_streams.faust_adapter import on_partition
from aurora_streams.lifecycle import stop_without_commit
from aurora_streams.processing import Processor
from aurora_streams.settings import Settings
from aurora_streams.tables.device_state import (
    StateCache,
    load_log_record,
)

__all__ = ["Epochs", "attach_normalize"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

Views = tuple[Any, Any, Any]
"""The view tables: device_days, recent_anomalies, forecasts (see tables.views)."""


def attach_normalize(app: Any, table: Any, processor: Processor, settings: Settings, views: Views) -> None:
    """Run the normalize agent in ``app``: a task taking batches from ``app.raw_intake``."""
    fast = (
        FastProducer(
            settings.bootstrap_servers,
            compression=settings.output_compression,
            message_timeout_ms=round(settings.produce_timeout_s * 1000),
        )
        if settings.processing_guarantee == "at_least_once"
        else None  # a transaction must cover outputs and changelog: Faust's producer
    )

    app.output_producer = fast  # AuroraApp: drained before partitions are given up
    cache = StateCache[DeviceState](settings.state_cache_devices)
    models = StateCache[CachedModel](settings.state_cache_devices)
    app.state_caches.extend((cache, models))  # AuroraApp: cleared on rebalance
    intake: RawIntake = app.raw_intake

    epochs = Epochs(app, table, settings, fast, cache, models, processor, views)

    @app.task  # type: ignore[untyped-decorator]
    async def normalize() -> None:
        try:
            while True:
                if fast is not None:
                    await fast.make_room(settings.produce_max_queued)
                generation, messages = await intake.take(
                    settings.batch_max, settings.batch_within_s, settings.batch_max_bytes
                )
                async with epochs.exclusive():
                    if generation != intake.generation:
                        continue  # taken before a rebalance began: re-delivered from the committed offset
                    epoch = await epochs.current()
                    await epochs.process(messages, epoch)
                    if fast is None or epoch.due(settings):
                        await epochs.rotate()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a task that ends would leave the worker up, processing nothing
            stop_without_commit(exc)

    period = max(0.05, min(settings.checkpoint_interval_s / 4, settings.checkpoint_idle_s / 2))

    @app.timer(period)  # type: ignore[untyped-decorator]
    async def _checkpoint_when_idle() -> None:
        # The agent waits for input while it is idle: without this, the last epoch before a
        # pause would stay unstored and uncommitted until the next reading.
        async with epochs.exclusive():
            epoch = await epochs.current()
            if epoch.messages and (epoch.due(settings) or epoch.idle(settings)):
                await epochs.rotate()


def _stop_if_failed(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        stop_without_commit(task.exception())  # type: ignore[arg-type]


class Epochs:
    """The normalize agent's current epoch and the checkpoint being stored.

    The agent (per batch) and an idle timer take ``lock`` to process into the current
    epoch or to end it, so an epoch is sealed between batches, never during one. At most
    one checkpoint is stored at a time, in epoch order: :meth:`rotate` waits for the
    previous one before sealing the next."""

    def __init__(
        self,
        app: faust.App,
        table: Any,
        settings: Settings,
        fast: FastProducer | None,
        cache: StateCache[DeviceState],
        models: StateCache[CachedModel],
        processor: Processor,
        views: Views,
    ) -> None:
        self.app, self.table, self.settings, self.fast, self.cache = app, table, settings, fast, cache
        self.models, self.processor, self.views = models, processor, views
        self.lock = asyncio.Lock()
        self._log_generation = -1
        """The generation whose stored log bases ``processor.log_bases`` holds."""
        self.epoch = Epoch(cache.generation)
        self.storing: asyncio.Future[None] | None = None

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold ``lock``; if the body fails, forget the states changed in memory but not
        stored and stop the worker (see :func:`_stop_now`), unless it is being cancelled."""
        try:
            async with self.lock:
                yield
        except BaseException as exc:
            self.cache.clear()
            self.models.clear()
            if not isinstance(exc, asyncio.CancelledError):
                stop_without_commit(exc)
            raise

    async def current(self) -> Epoch:
        """The epoch to process into; a new one if a rebalance began since it started."""
        if self.epoch.generation != self.cache.generation:
            if self.storing is not None:
                await self.storing  # it sees the new generation and stores nothing more
            self.epoch = abandon(self.epoch, self.cache)
        return self.epoch

    async def rotate(self) -> None:
        """Seal the current epoch, start storing it, and begin the next one."""
        if self.storing is not None:
            await self.storing  # one checkpoint at a time, in order
        sealed = seal(self.epoch, self.fast)
        self.storing = asyncio.ensure_future(
            store(self.app, self.table, sealed, self.fast, self.cache, self.settings.produce_max_queued)
        )
        if self.fast is None:
            await self.storing  # exactly-once: stored before the next batch
        else:
            self.storing.add_done_callback(_stop_if_failed)
        self.epoch = Epoch(self.cache.generation, prior=sealed)

    async def process(self, messages: Sequence[Any], epoch: Epoch) -> None:
        """Process one batch of raw messages into ``epoch`` (see module docstring): per
        source partition in offset order, then queue every output. Nothing is stored or
        acknowledged here; outputs are awaited only under exactly-once (Faust's producer)."""
        started = time.perf_counter()
        by_partition: dict[int, list[Any]] = {}
        for message in messages:
            by_partition.setdefault(message.partition, []).append(message)
        processor = self.processor
        if self._log_generation != epoch.generation:
            # Bases as stored: a rebase in an abandoned epoch was never stored (nor were the
            # states it let through), and partitions may have moved.
            processor.log_bases.clear()
            processor.log_marks.clear()
            self._log_generation = epoch.generation
        outputs: list[Any] = []
        inbound = self.app.monitor.stream_inbound_time
        for p, part_messages in by_partition.items():
            part = epoch.partitions.get(p)
            if part is None:
                first = part_messages[0]
                part = epoch.partitions[p] = PartitionEpoch(
                    self.app.create_event(first.key, first.value, first.headers, first),
                    ViewUpdater(self.settings, *self.views, self.models),
                )
            with on_partition(part.event):
                computed = self._compute(part, part_messages, epoch)
            if self.fast is None:  # exactly-once: in the source partition's transaction
                await deliver(self.app, computed, source_partition=p)
            else:
                outputs.extend(computed)
            # Faust warns of a stalled stream for a partition whose stream saw nothing lately.
            inbound[part_messages[0].tp] = time.monotonic()
        if self.fast is not None:
            self.fast.produce_all(outputs)
        if not getattr(self.app, "raw_shared", True):
            # Held until the checkpoint only to be acknowledged (topic, partition, offset):
            # an epoch of 150,000 raw messages kept ~40 MB of payloads it no longer needs.
            for message in messages:
                message.key = message.value = None
        epoch.add(messages)
        now = time.time()
        metrics.E2E_LATENCY.observe(max(0.0, now - min(m.timestamp for m in messages)))
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(messages))
        metrics.LAST_BATCH_TIMESTAMP.set(now)
        _export_stats(self.processor)

    def _compute(self, part: PartitionEpoch, messages: Sequence[Any], epoch: Epoch) -> list[Any]:
        """Run a partition's messages through the processor, in offset order, and apply what
        they produced to the epoch's views in memory. Returns the outputs to produce."""
        states = part.states
        table, cache = self.table, self.cache

        before = part.before

        def load(device_id: str) -> DeviceState:
            state = epoch.prior_state(device_id)
            if state is None:
                state = cache.get(device_id)
            if state is None:
                part.loaded += 1
                data = table.get(device_id)
                if data is None:
                    before[device_id] = None
                    return DeviceState()
                state = DeviceState.from_bytes(data)
            before[device_id] = (len(state.channels), state.latest_ts())
            return state

        processor = self.processor
        p = messages[0].partition
        end = self.app.consumer.highwater(messages[0].tp)
        if end is not None:
            processor.log_ends[p] = end
        if p not in processor.log_bases:
            processor.log_bases[p], mark = load_log_record(table, p)
            if mark >= 0:
                processor.log_marks[p] = mark
        emitted: list[Any] = []
        outputs = processor.process_all(messages, states=states, load=load, emitted=emitted)
        for rebase in processor.rebases:
            log.warning(
                "raw partition %d was reset: device states reach offset %d but the log ends at %d "
                "(message at offset %d; the broker's data wiped or the topic recreated?). Going on "
                "from the device states in a new log epoch (AURORA_ON_LOG_RESET=rebase); input "
                "that repeats what they hold is flagged duplicate by the device rules",
                rebase.partition,
                rebase.state_offset,
                rebase.log_end,
                rebase.offset,
            )
            metrics.LOG_REBASES.labels(str(rebase.partition)).inc()
        processor.rebases.clear()
        part.log_record = (processor.log_bases.get(p, 0), processor.log_marks.get(p, -1))
        part.updater.apply(emitted)
        outputs.extend(part.updater.forecast_records())
        return outputs


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
