"""Producing an agent's outputs (and its table's changelog records) before its input is
acknowledged. Every agent keeps the order *outputs acknowledged by the broker, then state
written*, so a crash in between replays into identical outputs.

Two producers:

* :func:`deliver`: Faust's producer (aiokafka), one awaited future per record. Used where a
  transaction must cover the records (``exactly_once``) and off the hot path.
* :class:`FastProducer`: librdkafka (confluent-kafka) with its own batching, for the
  normalize agent's outputs and device-state changelog under at-least-once. The profile of
  a busy worker showed aiokafka's per-record send and Faust's changelog buffer as
  the largest costs after the consumer path; ``produce`` here is a C call that queues the
  record, and :meth:`FastProducer.flush` waits (in a thread, off the event loop) until the
  broker acknowledged every record queued so far, raising if any failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import faust
import orjson
from faust.types import TP
from rocksdict import WriteBatch

from aurora_streams import metrics
from aurora_streams.errors import DeliveryFailed
from aurora_streams.faust_adapter import partition_db
from aurora_streams.kafka.offsets import Offsets
from aurora_streams.kafka.producer import RecordProducer
from aurora_streams.processing import OutRecord
from aurora_streams.topics import key_partition

__all__ = ["FastProducer", "TableWriter", "deliver", "flush"]

log = logging.getLogger(__name__)


async def deliver(
    app: faust.App, outputs: Sequence[OutRecord], *, source_partition: int | None = None
) -> None:
    """Produce ``outputs`` in order and wait for every delivery (raises on failure, which
    crashes the agent before any state is written: the batch is then re-delivered).

    Under exactly-once, ``source_partition`` names the raw-topic partition the outputs came
    from, and they go in that partition's transaction: the one Faust commits the partition's
    input offsets and the table changelog records in. Faust's own routing cannot place them
    there: it looks the destination up in the consumer's metadata, which holds only the
    topics the worker consumes, and sends records to any other topic (normalized, anomalies,
    DLQ, forecasts) outside every transaction, where a crash leaves them visible to
    ``read_committed`` readers and their re-delivery repeats them (the exactly-once crash
    test saw 277 repeats). A keyed record goes to its key's murmur2 partition, as every
    producer here places it; one without a key to the source partition."""
    if not outputs:
        return
    producer = app.producer
    transactional_id = None
    if app.in_transaction:
        if source_partition is None:
            raise DeliveryFailed("exactly_once: outputs must name their source partition")
        settings: Any = app.aurora_settings  # type: ignore[attr-defined]
        group = app.assignor.group_for_topic(settings.topic_raw)
        transactional_id = f"{app.conf.id}-{group}-{source_partition}"
        n = settings.partitions
    futures = []
    counts: dict[str, int] = {}
    for out in outputs:
        partition = None
        if transactional_id is not None:
            partition = key_partition(out.key, n) if out.key is not None else source_partition
        futures.append(
            await producer.send(
                out.topic, out.key, out.value, partition, None, None, transactional_id=transactional_id
            )
        )
        counts[out.topic] = counts.get(out.topic, 0) + 1
    await asyncio.gather(*futures)
    for topic, n_sent in counts.items():
        metrics.RECORDS_PRODUCED.labels(topic).inc(n_sent)


class FastProducer:
    """The worker's outputs and changelog records through :class:`RecordProducer`, with an
    awaitable :meth:`flush` that counts what was delivered. Idempotent: a retried batch
    cannot land after a later one, so a view key written by two consecutive checkpoints
    (the second queued while the first is still being stored) ends its changelog with the
    later value. A record that fails is reported by the next :meth:`flush`, which raises.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: int = 5,
        compression: str = "none",
        message_timeout_ms: int = 120_000,
        stats_interval_ms: int = 5_000,
    ) -> None:
        self._records = RecordProducer(
            bootstrap,
            linger_ms=linger_ms,
            compression=compression,
            message_timeout_ms=message_timeout_ms,
            # Batch sizes per topic, summed into aurora_produced_bytes_total (each
            # statistics window's sum is exact and the window resets at each report).
            stats=self._on_stats,
            stats_interval_ms=stats_interval_ms,
            extra={
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
            },
        )
        self._counts: dict[str, int] = {}
        self._bootstrap = bootstrap
        self._offsets: Offsets | None = None
        """For :meth:`end_offsets`, made on first use."""

    @staticmethod
    def _on_stats(report: str) -> None:
        # Runs inside flush()/poll(), like deliveries. ``batchsize`` is the size of each
        # message set as sent (after compression).
        for topic, stats in orjson.loads(report).get("topics", {}).items():
            sent = stats.get("batchsize", {}).get("sum", 0)
            if sent > 0:
                metrics.BYTES_PRODUCED.labels(topic).inc(sent)

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int = -1,
        *,
        count: bool = True,
    ) -> None:
        """Queue one record (order is kept per partition; ``-1``: by key); ``count`` it as
        an output."""
        self._records.produce(topic, key, value, partition=partition)
        if count:
            self._counts[topic] = self._counts.get(topic, 0) + 1

    def produce_all(self, outputs: Sequence[OutRecord]) -> None:
        produce = self.produce
        for out in outputs:
            produce(out.topic, out.key, out.value)

    async def make_room(self, max_queued: int) -> None:
        """Wait while more than ``max_queued`` records are queued (polling for deliveries
        in an executor, so the event loop runs meanwhile): the agent's backpressure when the
        broker acknowledges slower than the worker produces. Failures are left for
        :meth:`flush` to raise."""
        while self._records.queued() > max_queued:
            await asyncio.get_running_loop().run_in_executor(None, self._records.poll, 0.05)

    async def flush(self) -> None:
        """Wait until every queued record is acknowledged or failed. Raises
        :class:`DeliveryFailed` if any record failed since the last flush."""
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, self._records.pending, 10.0):
            pass
        errors = self._records.take_failures()
        counts, self._counts = self._counts, {}
        if errors:
            raise DeliveryFailed(f"{len(errors)} records not delivered, e.g. {errors[0]}")
        for topic, n in counts.items():
            metrics.RECORDS_PRODUCED.labels(topic).inc(n)

    async def drain(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the queued records to be acknowledged or failed,
        without taking the failures (the next :meth:`flush` raises them); the records still
        queued."""
        return await asyncio.get_running_loop().run_in_executor(None, self._records.pending, timeout_s)

    def end_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The log end offset of each (topic, partition), asked of its leader now (blocking:
        run it in an executor). At the first partition that cannot be asked within 2 s it
        stops: what is left out is recorded at a later checkpoint."""
        if self._offsets is None:
            self._offsets = Offsets(self._bootstrap)
        return self._offsets.ends(partitions, partial=True)

    def close(self) -> None:
        self._records.pending(30)
        if self._offsets is not None:
            self._offsets.close()


class TableWriter:
    """Writes table values of one source partition: the local store, then the changelog.

    With a :class:`FastProducer` each value is queued in one RocksDB write batch per table
    (written by :meth:`commit`: Faust's per-key store path, with its locked key index, was
    a twentieth of a busy worker's time) and its changelog record goes through librdkafka,
    to the source partition as Faust would send it; the caller must ``commit()`` and then
    ``await flush(...)`` before the input is acknowledged (the normalize agent does).
    Without one, Faust's table path is used (``table[key] = value``) at once, whose
    changelog records Faust flushes before it commits, and records as persisted. On the
    fast path the caller records them once the records are acknowledged
    (:func:`persist_changelog_offsets`): without them a restart with a data dir read every
    changelog from its start (45 s after an hour at 2,000 readings/s).
    """

    def __init__(self, fast: FastProducer | None, partition: int) -> None:
        self.fast, self.partition = fast, partition
        self._batches: dict[Any, tuple[Any, str]] = {}
        """Per table: its queued RocksDB write batch and its changelog topic."""
        self.touched: dict[Any, str] = {}
        """Every table this writer wrote on the fast path, with its changelog topic."""

    def put(self, table: Any, key: str, value: bytes | None) -> None:
        if self.fast is None:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
            return
        queued = self._batches.get(table)
        if queued is None:  # the changelog's name once per table, not per key
            topic = table.changelog_topic.get_topic_name()
            queued = self._batches[table] = (WriteBatch(raw_mode=True), topic)
            self.touched[table] = topic
        batch, topic = queued
        raw_key = key.encode()
        if value is None:
            batch.delete(raw_key)
        else:
            batch.put(raw_key, value)
        self.fast.produce(topic, raw_key, value, self.partition, count=False)

    def commit(self) -> None:
        """Write the queued values to the partition's local stores (one batch per table)."""
        batches, self._batches = self._batches, {}
        for table, (batch, _topic) in batches.items():
            partition_db(table, self.partition).write(batch)


async def persist_changelog_offsets(
    fast: FastProducer, writers: Iterable[TableWriter], still_owned: Callable[[], bool]
) -> None:
    """Record in each written table partition's local store the offset its changelog is
    applied up to, so that a restart reads only what came after (Faust's recovery starts
    at the persisted offset + 1). Call it only once every record the writers queued is
    acknowledged: the changelog's end is then at or past them all, and the local store
    already holds every record below it (a writer commits its batch to the store in the
    same step as it queues the records, before any await, and only this worker writes
    the partitions it owns).

    ``still_owned`` is asked once the ends are known: if a rebalance began meanwhile,
    nothing is recorded. The partitions' next owner may already have appended records this
    store lacks, and an offset past them would make this worker's recovery skip them when
    the partition comes back: its devices would go on from stale states. (A race found by
    reading, not seen: the soak's loss it was first blamed for was the rebalance reset run
    from the consumer's thread, see ``faust_adapter.on_event_loop``.)"""
    touched = {(table, topic, w.partition) for w in writers for table, topic in w.touched.items()}
    if not touched:
        return
    loop = asyncio.get_running_loop()
    ends = await loop.run_in_executor(None, fast.end_offsets, sorted({(t, p) for _, t, p in touched}))
    if not still_owned():
        log.info(
            "changelog offsets of %d table partitions not recorded: a rebalance began meanwhile", len(touched)
        )
        return
    for table, topic, partition in touched:
        end = ends.get((topic, partition))
        if end:
            table.data.set_persisted_offset(TP(topic, partition), end - 1)


async def flush(app: faust.App, fast: FastProducer | None) -> None:
    """Wait until every record produced so far (outputs and changelogs) is acknowledged."""
    if fast is None:
        await app.producer.flush()
    else:
        await fast.flush()
