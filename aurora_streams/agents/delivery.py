"""Producing an agent's outputs before its state is written (the order every agent keeps:
outputs acknowledged by the broker first, then table writes, so a crash in between replays
into identical outputs)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import faust

from aurora_streams import metrics
from aurora_streams.processing import OutRecord

__all__ = ["deliver"]


async def deliver(app: faust.App, outputs: Sequence[OutRecord]) -> None:
    """Produce ``outputs`` in order and wait for every delivery (raises on failure, which
    crashes the agent before any state is written: the batch is then re-delivered)."""
    if not outputs:
        return
    producer = app.producer
    futures = []
    counts: dict[str, int] = {}
    for out in outputs:
        futures.append(await producer.send(out.topic, out.key, out.value, None, None, None))
        counts[out.topic] = counts.get(out.topic, 0) + 1
    await asyncio.gather(*futures)
    for topic, n in counts.items():
        metrics.RECORDS_PRODUCED.labels(topic).inc(n)
