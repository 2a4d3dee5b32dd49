"""Offsets asked of the broker: partitions' log ends and a group's committed offsets.

One group-less use of a librdkafka consumer that never subscribes (so it never joins the
group it reads for). Every call blocks for up to ``timeout_s`` per request: call it from a
thread, never from the event loop. Readers: the stall detector (``web.health``), the
worker's record of how far its changelogs are applied (``agents.delivery``), the tests'
harness and the soak benchmark.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

__all__ = ["Offsets"]


class Offsets:
    """``group`` is whose committed offsets :meth:`committed` reads (``None``: a throwaway
    group id; only :meth:`ends` then makes sense)."""

    def __init__(self, bootstrap: str, group: str | None = None, timeout_s: float = 2.0) -> None:
        self.bootstrap, self.group, self.timeout_s = bootstrap, group, timeout_s
        self._consumer: Any = None

    def _client(self) -> Any:
        if self._consumer is None:
            self._consumer = Consumer({
                "bootstrap.servers": self.bootstrap, "group.id": self.group or "aurora-streams-offsets",
                "enable.auto.commit": False, "log_level": 3,
            })  # fmt: skip
        return self._consumer

    def ends(
        self, partitions: Iterable[tuple[str, int]], *, partial: bool = False
    ) -> dict[tuple[str, int], int]:
        """Each (topic, partition)'s log end offset (the next offset to be written), asked of
        its leader now. Raises :class:`KafkaException` when one is not answered in time,
        unless ``partial``: then the ends answered before it."""
        client = self._client()
        ends: dict[tuple[str, int], int] = {}
        for topic, partition in partitions:
            try:
                _low, high = client.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout_s
                )
            except KafkaException:
                if partial:
                    break
                raise
            ends[(topic, partition)] = high
        return ends

    def committed(self, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        """The group's committed offset per partition of ``topic`` (None: nothing committed).
        Raises :class:`KafkaException` when the coordinator does not answer in time."""
        tps = [TopicPartition(topic, p) for p in partitions]
        return {
            tp.partition: (tp.offset if tp.offset >= 0 else None)
            for tp in self._client().committed(tps, timeout=self.timeout_s)
        }

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()

    def __enter__(self) -> Offsets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
