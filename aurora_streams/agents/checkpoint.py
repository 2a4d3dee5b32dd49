"""The checkpoint protocol of the normalize agent (steps 5-8 of ``agents.normalize``): an
epoch's work held in memory, sealed, stored, then acknowledged.

Ordered steps, each waiting for the one before:

5. :func:`seal` (synchronous): the views' changed keys are written to the local stores and
   their changelog records queued; each device state the epoch touched is marked to be
   encoded, copy on write (:class:`Sealed`);
6. :func:`store` waits until the broker has every output and view changelog record queued so
   far;
7. then writes the encoded device states (local store, changelog) and waits for their
   changelog records too;
8. then acknowledges the epoch's input (:func:`release_acks`; under exactly-once, commits the
   transaction with the input offsets).

A rebalance that begins at any step abandons the rest (:func:`abandon`): nothing of the epoch
is acknowledged, and the partitions' new owners re-read it from the committed offsets. A step
that fails raises (``errors.DeliveryFailed`` or the store's error) and the agent stops the
worker without a commit (``agents.normalize``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust

from aurora_streams import metrics
from aurora_streams.agents.delivery import FastProducer, TableWriter, flush, persist_changelog_offsets
from aurora_streams.agents.views import ViewUpdater
from aurora_streams.domain.device import DeviceState
from aurora_streams.domain.fleet import SUMMARY_KEY, DeviceCounts
from aurora_streams.faust_adapter import on_partition
from aurora_streams.settings import Settings
from aurora_streams.tables.device_state import StateCache, encode_log_record, log_base_key

__all__ = [
    "Epoch",
    "PartitionEpoch",
    "Sealed",
    "abandon",
    "release_acks",
    "seal",
    "slices",
    "store",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def release_acks(app: faust.App, messages: Sequence[Any]) -> None:
    """Drop the agent's reference to stored ``messages``: an offset becomes committable once
    every reader of its message has (the sink's stream holds one too when it reads the raw
    topic). Only for messages of the current assignment generation: a rebalance abandons
    them instead (see :class:`Epoch`). Faust's monitor does not count raw messages in or
    out: they never pass through its streams."""
    consumer = app.consumer
    for message in messages:
        message.ack(consumer)


@dataclass
class PartitionEpoch:
    """One source partition's part of an epoch: processed, not yet stored."""

    event: Any
    """An event of the partition, made current for its stores (``faust_adapter.on_partition``)."""
    updater: ViewUpdater
    states: dict[str, DeviceState] = field(default_factory=dict)
    before: dict[str, tuple[int, int | None] | None] = field(default_factory=dict)
    """Per device of ``states``: (channels, newest reading time) as stored before the epoch
    changed it, None if it was not stored (what the partition's ``DeviceCounts`` hold)."""
    loaded: int = 0
    """Devices of ``states`` decoded from the table or new: not held in memory before."""
    log_record: tuple[int, int] | None = None
    """The partition's log epoch base and mark after its last batch (stored with the device
    states, see ``processing.Processor`` on log resets)."""


class Epoch:
    """The batches processed since the last checkpoint.

    Their outputs are produced, their device states and view updates are held here in
    memory, and their input messages are withheld from the consumer until :func:`seal`
    and :func:`store` have stored everything. ``generation`` is the decoded-state cache's
    at the epoch's start: the app clears the cache when a rebalance starts, and an epoch
    that spans a rebalance is abandoned (:func:`abandon`), never stored or acknowledged,
    because partitions it held may now be another worker's.
    """

    def __init__(self, generation: int, prior: Sealed | None = None) -> None:
        self.generation = generation
        self.started = self.last_input = time.monotonic()
        self.messages: list[Any] = []
        self.partitions: dict[int, PartitionEpoch] = {}
        self.prior: dict[str, DeviceState] = {}
        """The previous epoch's states: it may still be being stored, so its devices
        are read from here, not from the table (same generation only)."""
        self.sealed = prior if prior is not None and prior.generation == generation else None
        if self.sealed is not None:
            for part in self.sealed.partitions.values():
                self.prior.update(part.states)

    def prior_state(self, device_id: str) -> DeviceState | None:
        """The previous epoch's state of ``device_id``, if it had one, made safe to change:
        encoded for its checkpoint first if that has not happened yet (:meth:`Sealed.freeze`)."""
        state = self.prior.get(device_id)
        if state is not None:
            assert self.sealed is not None
            self.sealed.freeze(device_id)
        return state

    def add(self, messages: Iterable[Any]) -> None:
        self.messages.extend(messages)
        self.last_input = time.monotonic()

    def idle(self, settings: Settings) -> bool:
        """Whether the epoch holds input and none came for ``checkpoint_idle_s``: a paused
        input is stored and acknowledged at once, not a checkpoint interval later."""
        return bool(self.messages) and time.monotonic() - self.last_input >= settings.checkpoint_idle_s

    def due(self, settings: Settings) -> bool:
        """Whether the epoch should end: its interval passed, or it holds enough readings, or
        enough devices that were not in memory before it (``checkpoint_max_devices``: what
        an epoch adds to the worker's memory; a device whose state came from the decoded
        state cache or the previous epoch adds only its view records), or more devices than
        the state cache holds (their states would not all stay decoded for the next epoch).
        A fleet that fits the cache exactly is the case the cache is sized for: ending its
        epochs as soon as every device was touched sealed each device every ~43,000 W1
        readings instead of once per interval."""
        if len(self.messages) >= settings.checkpoint_max_readings:
            return True
        if time.monotonic() - self.started >= settings.checkpoint_interval_s:
            return True
        parts = self.partitions.values()
        return sum(part.loaded for part in parts) >= settings.checkpoint_max_devices or sum(
            len(part.states) for part in parts
        ) > max(settings.checkpoint_max_devices, settings.state_cache_devices)


def abandon(epoch: Epoch, cache: StateCache[DeviceState]) -> Epoch:
    """A rebalance started during ``epoch``: drop its states and views unstored and never
    acknowledge its input. After the rebalance Faust seeks every assigned partition to its
    committed offset, so what the epoch processed is re-delivered to whoever owns it."""
    if epoch.messages:
        log.info("rebalance: %d readings of an unstored epoch will be re-delivered", len(epoch.messages))
    return Epoch(cache.generation)


_STATE_SLICE = 200
"""Device states encoded, and written, per slice of a checkpoint's store (see :func:`store`)."""
_ACK_SLICE = 5_000
"""Messages acknowledged per slice of a checkpoint's store."""


async def slices(items: Sequence[_T], size: int) -> AsyncIterator[Sequence[_T]]:
    """``items`` in slices of ``size``, yielding to the event loop after each one, so the
    agent runs between them."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
        await asyncio.sleep(0)


@dataclass
class Sealed:
    """An epoch at its end: views written, input still withheld, and its device states
    encoded as they were at the seal, copy on write: a state is encoded when the next epoch
    first loads it (:meth:`freeze`, before any change) or when the store takes it to write
    (:meth:`take`), a slice at a time. So at most the frozen states and one slice are held
    encoded (encoding every state before writing any held them all: 10,000 at W1, 27 MB).
    """

    generation: int
    messages: list[Any]
    partitions: dict[int, PartitionEpoch]
    encoded: dict[int, list[tuple[str, bytes]]]
    """Per partition: (device id, state bytes) frozen, to write."""
    writers: dict[int, TableWriter]
    views_dirty: bool
    started: float
    pending: dict[int, dict[str, DeviceState]] = field(default_factory=dict)
    """Per partition: the devices whose state is not encoded yet."""
    after: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    """Per device encoded: (channels, newest reading time) of the state as encoded."""

    def _encode(self, device_id: str, state: DeviceState) -> bytes:
        self.after[device_id] = (len(state.channels), state.latest_ts())
        return state.to_bytes()

    def freeze(self, device_id: str) -> None:
        """Encode ``device_id``'s state now if it is still pending: it is about to change.
        Synchronous, so nothing runs between the check and the encoding."""
        for p, states in self.pending.items():
            state = states.pop(device_id, None)
            if state is not None:
                self.encoded[p].append((device_id, self._encode(device_id, state)))
                return

    def take(self, p: int, size: int) -> list[tuple[str, bytes]]:
        """Up to ``size`` of partition ``p``'s states to write, as (device id, bytes): the
        frozen ones first, then pending ones, encoded now. Empty: every state of ``p`` was
        taken. Synchronous, as :meth:`freeze`: a state is taken once, frozen or not."""
        frozen = self.encoded[p]
        if frozen:
            chunk = frozen[:size]
            del frozen[:size]
            return chunk
        pending = self.pending[p]
        out: list[tuple[str, bytes]] = []
        for _ in range(min(size, len(pending))):
            device_id, state = pending.popitem()
            out.append((device_id, self._encode(device_id, state)))
        return out

    def forget_stored(self) -> None:
        """Stored and acknowledged: drop what only the store needed, its encodings and its
        input messages. The next epoch holds this checkpoint until it ends (for the states,
        see :meth:`Epoch.prior_state`); with them, an epoch at its end held the previous
        one's encodings and messages beside its own (W1: 10,000 encoded states, ~50 MB)."""
        self.encoded = {}
        self.messages = []


def seal(epoch: Epoch, fast: FastProducer | None) -> Sealed:
    """Step 5 of the module docstring, synchronously: nothing that runs after it can change
    what the checkpoint stores (the states are copy on write, see :class:`Sealed`)."""
    started = time.perf_counter()
    writers = {p: TableWriter(fast, p) for p in epoch.partitions}
    views_dirty = False
    encoded: dict[int, list[tuple[str, bytes]]] = {}
    pending: dict[int, dict[str, DeviceState]] = {}
    for p, part in epoch.partitions.items():
        with on_partition(part.event):
            part.updater.write(writers[p])
            writers[p].commit()
        views_dirty = views_dirty or part.updater.dirty
        part.updater.release()
        encoded[p] = []
        pending[p] = dict(part.states)
    metrics.CHECKPOINT_SEAL_DURATION.observe(time.perf_counter() - started)
    return Sealed(
        epoch.generation, epoch.messages, epoch.partitions, encoded, writers, views_dirty, started, pending
    )


async def store(
    app: faust.App,
    table: Any,
    sealed: Sealed,
    fast: FastProducer | None,
    cache: StateCache[DeviceState],
    max_queued: int = 5_000,
) -> None:
    """Steps 6-8 of the module docstring: store a sealed epoch and acknowledge its input.
    Before each slice of states it waits until at most ``max_queued`` records wait for the
    broker (a state is up to ~10 KB in librdkafka's queue until acknowledged)."""
    if not sealed.messages:
        return
    if fast is not None or sealed.views_dirty:
        # The device state fences replays, so nothing it covers may be lost: the outputs and
        # the views' changelog are acknowledged before it is written.
        await flush(app, fast)
    if sealed.generation != cache.generation:
        return  # rebalanced: the partitions may be another worker's now (see abandon)
    # In slices, yielding between them: encoding and writing 1,000 states at once held the
    # agent ~70 ms. Each slice is committed to the local store as its changelog records are
    # queued, and none starts once a rebalance has begun.
    writes = 0
    try:
        for p, part in sealed.partitions.items():
            writer = sealed.writers[p]
            before = part.before
            counts: DeviceCounts | None = None
            while True:
                if fast is not None:
                    await fast.make_room(max_queued)
                if sealed.generation != cache.generation:
                    return  # rebalanced: stored in part, acknowledged not at all
                chunk = sealed.take(p, _STATE_SLICE)
                if not chunk:
                    break
                with on_partition(part.event):
                    if counts is None:
                        counts = DeviceCounts.from_bytes(table.get(SUMMARY_KEY))
                    for device_id, data in chunk:
                        writer.put(table, device_id, data)
                        counts.replace(before.get(device_id), sealed.after[device_id])
                    # The partition's counts go in each slice's batch: as current as its states.
                    writer.put(table, SUMMARY_KEY, counts.to_bytes())
                    writer.commit()
                writes += len(chunk)
                await asyncio.sleep(0)  # the agent runs between slices, freezing what it touches
            record = sealed.partitions[p].log_record
            if record is not None:
                # The partition's log record (processing.Processor on log resets) goes with
                # its states; it is not a device state, so STATE_WRITES does not count it.
                with on_partition(sealed.partitions[p].event):
                    writer.put(table, log_base_key(p), encode_log_record(*record))
                    writer.commit()
    finally:
        metrics.STATE_WRITES.inc(writes)
    if fast is not None:
        await flush(app, fast)
    if sealed.generation != cache.generation:
        return  # stored but not acknowledged: re-delivery finds it fenced
    for part in sealed.partitions.values():
        for device_id, state in part.states.items():
            cache.put(device_id, state, sealed.generation)
    if fast is None:
        await _commit_transaction(app, sealed, cache)
    else:
        async for acks in slices(sealed.messages, _ACK_SLICE):
            if sealed.generation != cache.generation:
                return  # the rest is re-delivered, and fenced
            release_acks(app, acks)
        if sealed.generation == cache.generation:
            await persist_changelog_offsets(
                fast, sealed.writers.values(), lambda: sealed.generation == cache.generation
            )
    metrics.CHECKPOINT_DURATION.observe(time.perf_counter() - sealed.started)
    metrics.CHECKPOINT_READINGS.observe(len(sealed.messages))
    sealed.forget_stored()


async def _commit_transaction(app: faust.App, sealed: Sealed, cache: StateCache[DeviceState]) -> None:
    """Exactly-once: the epoch's outputs (already in its partitions' transactions), then its
    table changelog records, then its input offsets, committed together, at once.

    Faust commits a transaction on its own timer and after every ``broker_commit_every``
    acknowledgements (both off under exactly-once, see ``app.create_app``): a commit that fell
    between a batch's outputs and its acknowledgement committed the outputs without the
    offsets and, if the state records were still in Faust's buffer, without the state; after
    a crash the batch was re-delivered and its outputs committed twice (14 of 8,612 in the
    crash test). No commit happens here while a rebalance voids the epoch."""
    await app.producer.flush()  # the changelog records Faust buffered, into the transactions
    if sealed.generation != cache.generation:
        return
    release_acks(app, sealed.messages)
    await app.consumer.commit()
