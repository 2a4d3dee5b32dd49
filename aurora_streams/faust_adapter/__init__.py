"""Faust and aiokafka internals, in one place: the worker's consumer, its thread, producer and
transport, and its table manager. Everything here subclasses Faust's drivers and reads or
overrides their private members; nothing else in the package may (ruff's SLF001 is on
outside this package). ``tests/unit/faust_adapter`` pins the Faust version and the upstream
source of every method copied here, so an upgrade fails loudly.

Copied from faust-streaming 0.15.3: ``Consumer._drain_messages`` (as
:meth:`ProbingConsumer._drain_messages`, with the raw-topic intake).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import aiokafka
from faust.streams import _current_event
from faust.tables import TableManager
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from aurora_streams.agents.intake import RawIntake
from aurora_streams.settings import Settings
from aurora_streams.topics import key_partition

__all__ = [
    "FastTableManager",
    "ProbingConsumer",
    "RawContinuity",
    "Transport",
    "on_event_loop",
    "on_partition",
    "partition_db",
    "started_consumer",
]


log = logging.getLogger(__name__)


def started_consumer(app: Any) -> Any:
    """The app's consumer if it was made, else None (``app.consumer`` would make one: a
    metrics scrape before the worker starts must not)."""
    return getattr(app, "_consumer", None)


def on_event_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[[], None]) -> None:
    """Run ``fn`` on ``loop``: now when called on it (or when there is none yet), else as
    the next callback the loop runs.

    Faust calls ``App.on_rebalance_start`` from aiokafka's consumer thread (its rebalance
    listener), while the fetch loop and the agents run on the event loop. What the app
    resets there (the raw intake, the seek fence, the decoded-state caches) belongs to the
    event loop: reset from the thread, between the fetch loop's fence check and its put, a
    record fetched before the rebalance was put into the cleared intake, processed first
    after the rebalance, and its device's replay fence then dropped the device's earlier
    re-delivered readings (the owner-change soak: 3 readings missing, gaps invented). The
    revocation that Faust dispatches to the event loop next runs after ``fn``."""
    if loop is None:
        fn()
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn()
    else:
        loop.call_soon_threadsafe(fn)


@contextlib.contextmanager
def on_partition(event: Any) -> Iterator[None]:
    """Make ``event`` current: Faust's RocksDB store reads and writes the current event's
    partition, and its changelog records go to that partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def partition_db(table: Any, partition: int) -> Any:
    """The RocksDB database of ``table``'s ``partition`` in this worker (Faust's store keeps
    one per partition and has no public accessor)."""
    return table.data._db_for_partition(partition)


class RawContinuity:
    """The raw topic's offsets are contiguous (never compacted, never written in
    transactions), so each partition's next delivered record must be the one after the
    last, or, after a seek, the one sought. A fetch that returns a later offset comes from a
    position the consumer no longer has: right after the seek fence sought a partition back,
    the next records delivered began where the dropped fetch had left off (why aiokafka's
    position was still there is not established; seeking in the consumer's thread did not
    stop it). Delivered, Faust counted the offsets in between as a gap, they were committed
    without being processed, and the records after them were processed from device states
    that lacked them (the owner-change soak: 994 offsets skipped, 110 readings with
    invented gaps). Such a partition is sought again to the offset it needs. A jump seen
    twice from the same offset is real (retention or a truncated log removed the records):
    it is let through, with a warning.

    Used by the fetch loop only (one task on the event loop)."""

    def __init__(self) -> None:
        self._next: dict[TP, int] = {}
        """Partitions just sought, and the offset sought (``_read_offset`` then holds the
        next offset to read, not the last one read)."""
        self._jumped: dict[TP, int] = {}

    def sought(self, tp: TP, offset: int) -> None:
        self._next[tp] = offset

    def resume_at(self, tp: TP, last_read: int, offset: int) -> int | None:
        """None if a record at ``offset`` may be delivered after ``last_read`` (Faust's read
        offset), else the offset to seek ``tp`` to. A delivered record must be passed to
        :meth:`delivered`."""
        expected = self._next.get(tp, last_read + 1)
        if offset <= expected:
            return None
        if self._jumped.get(tp) == expected:
            log.warning(
                "raw partition %s: offsets %d-%d are not in the log (retention or truncation): skipped",
                tp.partition, expected, offset - 1,
            )  # fmt: skip
            return None
        self._jumped[tp] = expected
        return expected

    def delivered(self, tp: TP) -> None:
        self._next.pop(tp, None)
        self._jumped.pop(tp, None)


class ProbingConsumer(aiokafka_driver.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer: seeking to committed offsets also repositions partitions
    that have none, raw-topic messages go to the normalize agent's intake, and no stream
    record fetched before a rebalance's seek is delivered after it.

    **Seek fence.** Faust resumes the stream partitions *before* it seeks them to their
    committed offsets at the end of a rebalance, and a fetch already under way is iterated
    after the seek. Records from the old positions then reached the agents first: the fetch
    loop's read offset moved past the committed offset, the records the seek re-fetched
    were skipped as already read, and the partition's committed offset either stopped for
    good (an offset never acknowledged: found by the two-worker sink test, 2 in 4 runs) or
    moved past records no one processed. So from the start of a
    rebalance until its seek is done (:attr:`_seeking`), and for a fetch submitted before a
    seek, stream records are dropped unread (changelog records, which recovery reads
    meanwhile, pass); a dropped partition is sought again to its committed offset once the
    seek is done, before the next fetch, because a fetch submitted during the seek may
    have returned records from the new position. Nothing of such a partition was delivered
    since its seek, so its committed offset is still where it must resume."""

    _seeking: bool = False
    """A rebalance started and its stream partitions are not sought yet."""
    _seek_epoch: int = 0
    """Advanced by every completed seek: a fetch submitted in an earlier epoch is void."""
    _fetch_epoch: int = 0
    _fetch_suspect: bool = False
    """The epoch and seeking state when the fetch being iterated was submitted."""
    _continuity: RawContinuity

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._continuity = RawContinuity()

    def diagnose(self, tp: TP) -> dict[str, Any]:
        """What the fetch loop and Faust's ack bookkeeping hold for ``tp``: for the log line
        of a stalled partition (a partition that stops committing while it has lag)."""
        active = self._active_partitions
        acked = self._acked.get(tp) or []
        position = None
        consumer = self._thread._consumer
        if consumer is not None:
            with contextlib.suppress(Exception):  # a snapshot for a log line: never fail on it
                aiotp = aiokafka.TopicPartition(tp.topic, tp.partition)
                state = consumer._fetcher._subscriptions.subscription.assignment.state_value(aiotp)
                position = None if state is None else state.position
        return {
            "paused": tp in self._paused_partitions,
            "fetching": active is None or tp in active,
            "buffer_full": tp in self._buffered_partitions,
            "position": position,
            "highwater": self.highwater(tp),
            "read_offset": self._read_offset.get(tp),
            "committed_offset": self._committed_offset.get(tp),
            "acked_pending": len(acked),
            "acked_min": min(acked) if acked else None,
            "gaps": len(self._gap.get(tp) or ()),
            "seeking": self._seeking,
        }

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Give up partitions only once this worker's queued outputs and changelog records
        are on the broker (``AuroraApp.drain_outputs``): their next owner restores from the
        changelog, and must find them there, before its own."""
        drain = getattr(self.app, "drain_outputs", None)
        if drain is not None:
            await drain()
        await super().on_partitions_revoked(revoked)

    def begin_rebalance(self) -> None:
        """Void stream records from now until the rebalance's seek (see the class)."""
        self._seeking = True

    def end_rebalance(self) -> None:
        """The rebalance ended (with or without a seek: an empty assignment has none)."""
        self._seeking = False

    async def perform_seek(self) -> None:
        self._seeking = True
        try:
            await super().perform_seek()
            raw = self.app.aurora_settings.topic_raw  # type: ignore[attr-defined]
            for tp, offset in self._read_offset.items():
                if tp.topic == raw and offset is not None:
                    self._continuity.sought(tp, offset)
        finally:
            self._seek_epoch += 1
            self._seeking = False

    async def _seek_in_thread(self, offsets: dict[TP, int]) -> None:
        """Seek in the consumer's thread, between its fetches, as aiokafka expects (Faust
        seeks from the event loop's thread, while aiokafka's fetcher runs in the consumer's)."""
        consumer = self._thread._ensure_consumer()

        async def seek() -> None:
            for tp, offset in offsets.items():
                consumer.seek(tp, offset)

        await self._thread.call_thread(seek)
        for tp, offset in offsets.items():
            self._read_offset[tp] = offset if offset else None
            self._continuity.sought(tp, offset)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        # Taken when the fetch is enqueued for the consumer thread, as the thread runs it
        # after the calls enqueued before it.
        self._fetch_epoch, self._fetch_suspect = self._seek_epoch, self._seeking
        return await super()._getmany(active_partitions, timeout)

    def _void(self) -> bool:
        """Whether a stream record just fetched must be dropped (see the class)."""
        return self._seeking or self._fetch_suspect or self._fetch_epoch != self._seek_epoch

    async def _seek_again(self, tps: set[TP]) -> None:
        """Seek ``tps`` (records dropped by the fence) to their committed offsets, read now:
        nothing of them was processed since the seek, so that is where they resume."""
        assigned = self.assignment()
        consumer = self._thread._ensure_consumer()
        again: dict[TP, int | None] = {}
        for tp in sorted(tp for tp in tps if tp in assigned):
            offset = await self._thread.call_thread(consumer.committed, tp)
            again[tp] = offset if offset is not None and offset >= 0 else None
        start = [tp for tp, offset in again.items() if offset is None]
        if start:
            # Resolved to offsets rather than aiokafka's seek_to_beginning/end: those leave
            # the position unset until the next fetch, and Faust's livelock check, which
            # reads every position, crashed the worker on it (found by the forecast crash test).
            latest = self.app.conf.consumer_auto_offset_reset == "latest"
            lookup = consumer.end_offsets if latest else consumer.beginning_offsets
            found = await self._thread.call_thread(lookup, start)
            again.update({tp: found[tp] for tp in start})
        await self._seek_in_thread({tp: offset for tp, offset in again.items() if offset is not None})
        self.log.info("seek fence: %d partitions sought again after a rebalance: %s", len(again), again)

    async def seek_to_committed(self) -> Any:
        """Seek every assigned partition to its committed offset, and those without one
        to where ``consumer_auto_offset_reset`` says.

        aiokafka leaves a partition without a committed offset wherever its fetch
        position happens to be. After recovery, Faust resumes the stream partitions
        *before* it seeks, and flow control drops what was fetched in between, so on a
        partition that never committed, those records were skipped for good: never
        processed, and counted as acknowledged (found by the crash test).
        """
        committed = await super().seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        unset = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
        if unset:
            consumer = self._thread._ensure_consumer()
            latest = self.app.conf.consumer_auto_offset_reset == "latest"
            reset = consumer.seek_to_end if latest else consumer.seek_to_beginning
            await self._thread.call_thread(reset, *unset)
        return committed

    def _flow_open(self) -> bool:
        """No rebalance under way: neither the consumer's flow nor Faust's flow control is
        suspended."""
        return not self.suspend_flow.is_set() and self.app.flow_control.is_active()

    def _intake_now(self, intake: RawIntake) -> bool:
        """Whether a raw-topic message can go to the intake at once: flow open and room in
        the intake. Otherwise it waits, interruptibly."""
        return self._flow_open() and not intake.full()

    async def _deliver_raw(self, intake: RawIntake, message: Any) -> None:
        """Hand a raw message to the intake when it can, and to Faust's channels that read the
        raw topic too (the sink's), each interruptible by a rebalance.

        The message counts one reference for the intake (dropped by the agent's checkpoint)
        and the conductor adds one per stream. A guard reference keeps it from being
        acknowledged in full until both deliveries are done: if a rebalance cuts either
        short, the guard is never dropped, so the offset never becomes committable, and the
        partition's new owner re-reads it from the committed offset (as Faust does for a
        delivery it cuts short). When the intake is the only reader (the fast path in
        :meth:`_drain_messages`), no reference is counted: the agent's one ack is final."""
        message.incref(2)  # the intake's, and the guard
        if self._intake_now(intake):
            intake.put(message)
        else:
            putting = intake.put_when_ready(message, self.app.flow_control)
            if putting not in (await self.wait_first(putting, self.suspend_flow.wait())).done:
                return
        if self.app.raw_shared:  # type: ignore[attr-defined]
            if self._delivers_now(message.tp):
                await self.callback(message)
            else:
                delivering = self.callback(message)
                if delivering not in (await self.wait_first(delivering, self.suspend_flow.wait())).done:
                    return
        message.decref()

    def _delivers_now(self, tp: TP) -> bool:
        """Whether handing a message to its streams through the conductor cannot block: flow
        not suspended (no rebalance under way), Faust's producer buffer ebbed, and room in
        every stream's queue. Those are the only places the conductor's callback waits."""
        app = self.app
        if not self._flow_open():
            return False
        conductor: Any = app.topics
        if conductor._tp_to_callback_lock.locked():
            return False
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return False
        channels = conductor._tp_index.get(tp)
        if not channels:
            return False
        return all(not chan.queue.full() for chan in channels)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        """Faust's fetch loop (faust-streaming 0.15.3, ``Consumer._drain_messages``) with one
        change: a raw-topic message goes to the normalize agent's :class:`RawIntake`, not
        through the conductor and a stream (see ``agents.intake``), and directly when that
        cannot block: ``wait_first``, which lets a rebalance interrupt a blocked delivery,
        makes four tasks per message and was a third of a busy worker's time. A
        delivery that could block still goes through ``wait_first``."""
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        raw_topic = self.app.aurora_settings.topic_raw  # type: ignore[attr-defined]
        intake: RawIntake = self.app.raw_intake  # type: ignore[attr-defined]
        intake_now = self._intake_now
        put = intake.put
        deliver_raw = self._deliver_raw
        shared = self.app.raw_shared  # type: ignore[attr-defined]
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        changelogs = self.app.tables.changelog_topics
        void = self._void
        dropped: set[TP] = set()
        continuity = self._continuity
        resume: dict[TP, int] = {}
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                if dropped and not self._seeking:
                    await self._seek_again(dropped)
                    dropped.clear()
                if resume:
                    if not self._seeking:
                        assigned = self.assignment()
                        await self._seek_in_thread({tp: o for tp, o in resume.items() if tp in assigned})
                        self.log.info("raw offsets not contiguous: sought again to %s", resume)
                    resume.clear()
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        if tp.topic not in changelogs and void():
                            dropped.add(tp)
                            continue
                        if tp in resume:
                            continue  # the rest of a fetch from a stale position
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            if tp.topic == raw_topic:
                                if r_offset is not None:
                                    at = continuity.resume_at(tp, r_offset, offset)
                                    if at is not None:
                                        resume[tp] = at
                                        continue
                                continuity.delivered(tp)
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if tp.topic != raw_topic:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            elif not shared and intake_now(intake):
                                put(message)
                            else:
                                await deliver_raw(intake, message)
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):  # type: ignore[misc]
    """Faust's consumer thread, with the fetch wait and the stop timeout from our settings.

    Faust fixes ``fetch_max_wait_ms`` at 1.5 s. A broker that answers a fetch only when
    its wait ends, if nothing was there when the fetch arrived (the embedded one does),
    then delays new readings by up to that much: the latency benchmark measured a p99 of
    5 s before the outputs were even queued.

    Stopping waits for the thread's last commit and group leave at most
    ``consumer_stop_timeout_s`` (mode's default is 60 s): with the broker gone, aiokafka
    retries them until that wait ends, and a worker asked to stop took 62 s to exit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings: Settings = self.app.aurora_settings  # type: ignore[attr-defined]
        self.shutdown_timeout = settings.consumer_stop_timeout_s

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings: Settings = self.app.aurora_settings  # type: ignore[attr-defined]
        consumer._fetch_max_wait_ms = settings.fetch_max_wait_ms
        return consumer


class _Producer(aiokafka_driver.Producer):  # type: ignore[misc]
    """Faust's aiokafka producer, hashing keys to partitions without the producer's metadata.

    Faust's ``key_partition`` (the HTTP routing of table lookups, DESIGN.md, Partitions) asks
    aiokafka's producer, which knows only the topics it has sent to: on Apache Kafka a worker
    that never produced to the raw topic answered a routed device lookup with a 500
    (``partitions_for_topic`` gave None). Every owned topic has ``AURORA_PARTITIONS``
    partitions (checked at start), so the partition is murmur2 of the key, as the Java client
    and our producers compute it."""

    def key_partition(self, topic: str, key: bytes) -> TP:
        settings: Settings = self.app.aurora_settings  # type: ignore[attr-defined]
        if topic in settings.owned_topic_names:
            return TP(topic, key_partition(key, settings.partitions))
        return super().key_partition(topic, key)


class Transport(aiokafka_driver.Transport):  # type: ignore[misc]
    Consumer = ProbingConsumer
    Producer = _Producer


class FastTableManager(TableManager):  # type: ignore[misc]
    async def on_start(self) -> None:
        # Faust sleeps a second here first, so that tables defined while the app starts can
        # still register; every table of ours exists before the app starts, and the sleep
        # was a seventh of a worker's time to its first output.
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
