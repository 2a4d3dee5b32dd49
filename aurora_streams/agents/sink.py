"""The sink agent: normalized readings, anomalies and raw messages -> TimescaleDB.

It runs in the worker whenever ``AURORA_DATABASE_URL`` is set. Per ``take_events`` batch:
store every record (retrying transient failures until stored), dead-letter what the
database refuses, and only then return, which acks the batch. Faust commits offsets only
for acked events, so offsets never pass rows that are not stored; a crash before that
re-delivers the batch, and the upserts make the second write a no-op.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust

from aurora_streams import metrics
from aurora_streams.codecs import encode_dead_letter
from aurora_streams.settings import Settings
from aurora_streams.sinks.timescale import SinkBatch, SinkMessage, TimescaleWriter

__all__ = ["attach_sink"]


def _sink_message(msg: Any) -> SinkMessage:
    return SinkMessage(msg.topic, msg.partition, msg.offset, msg.key, msg.value, round(msg.timestamp * 1000))


def attach_sink(app: faust.App, settings: Settings) -> Any:
    assert settings.database_url is not None
    writer = TimescaleWriter(
        settings.database_url, pool_size=settings.sink_pool_size, max_backoff_s=settings.sink_max_backoff_s
    )
    topics = app.topic(
        settings.topic_normalized,
        settings.topic_anomalies,
        settings.topic_raw,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    stopping = asyncio.Event()

    @app.agent(topics, name="sink")
    async def sink(stream: Any) -> None:
        try:
            async for events in stream.take_events(settings.sink_batch_max, settings.sink_batch_within_s):
                messages = [_sink_message(e.message) for e in events]
                batch = SinkBatch.build(
                    messages, normalized=settings.topic_normalized, anomalies=settings.topic_anomalies,
                    raw=settings.topic_raw,
                )  # fmt: skip
                rejected = await writer.store(batch, stopping=stopping)
                if rejected:
                    futures = []
                    for r in rejected:
                        letter = {
                            "source_topic": r.message.topic,
                            "source_partition": r.message.partition,
                            "source_offset": r.message.offset,
                            "source_timestamp": r.message.timestamp_ms,
                            "original_key": r.message.key,
                            "original_value": r.message.value,
                            "reading_index": None,
                            "error_class": r.error_class,
                            "error_reason": "db_rejected",
                            "error_message": r.error_message,
                        }
                        value = encode_dead_letter(letter, settings.output_encoding)
                        futures.append(
                            await app.producer.send(
                                settings.topic_dlq, r.message.key, value, None, None, None
                            )
                        )
                    await asyncio.gather(*futures)
                    metrics.RECORDS_PRODUCED.labels(settings.topic_dlq).inc(len(futures))
                newest = max(m.timestamp_ms for m in messages) / 1000.0
                metrics.SINK_LAG.set(max(0.0, time.time() - newest))
        finally:
            stopping.set()
            await writer.close()

    return sink
