"""True end offsets, for brokers whose ListOffsets(latest) undercounts.

The embedded broker (Tansu 0.6.0) answers ListOffsets(latest) with the base offset of the
last record batch + 1 instead of the log end. Faust's table recovery reads a changelog up
to that "highwater", so when the last batch holds several records (a producer that
batches, as ours does with one state write per device per batch) recovery would stop
before them and the table would come back stale.

The way around it, sound on any broker: treat the reported end ``E`` as a lower bound,
fetch from ``E - 1`` (the first record of the last batch) until the log is drained, and
take the highest offset seen + 1. On Apache Kafka the probe confirms ``E``. The cost is one
short fetch per changelog partition at recovery time, nowhere near the hot path.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, TopicPartition

__all__ = ["probe_end_offsets", "probe_end_offsets_async"]


def probe_end_offsets(
    bootstrap: str, reported: Mapping[tuple[str, int], int], *, timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """For each (topic, partition), the true end offset (at least the reported one).

    Reads each partition from ``reported - 1`` until end-of-partition; gives up after
    ``timeout_s`` and keeps what it has seen (never less than reported).
    """
    result = dict(reported)
    todo = {tp: end for tp, end in reported.items() if end is not None and end > 0}
    if not todo:
        return result
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"aurora-probe-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, end - 1) for (t, p), end in todo.items()])
        pending = set(todo)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            tp = (str(msg.topic()), int(msg.partition() or 0))
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(tp)
                continue
            offset = msg.offset()
            if offset is not None and offset + 1 > result.get(tp, 0):
                result[tp] = offset + 1
    finally:
        consumer.close()
    return result


async def probe_end_offsets_async(
    bootstrap: str, reported: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """:func:`probe_end_offsets` in a thread, for the event loop."""
    return await asyncio.to_thread(probe_end_offsets, bootstrap, reported)
