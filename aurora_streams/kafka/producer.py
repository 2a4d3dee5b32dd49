"""The one librdkafka producer wrapper: the worker's outputs (``agents.delivery``), the NEM12
CLI, HTTP ingest jobs and the simulator all send through it.

Guarantees and ordering:

* **Partitioning.** Keyed records are partitioned with murmur2 like the Java client, aiokafka
  and Faust, so a device's records land on the same partition number whichever producer
  sent them; ``partition`` overrides it.
* **Order.** Records are kept in the order :meth:`RecordProducer.produce` was called, per
  partition (librdkafka's idempotent producer, ``acks=all``, unless turned off).
* **Back-pressure.** When librdkafka's local queue is full, :meth:`produce` serves delivery
  reports until there is room: it blocks, never drops.
* **Failures.** Delivery reports come for failed records only (a Python callback per
  acknowledged record costs a sixth of a busy worker's time); :meth:`flush` raises
  :class:`aurora_streams.errors.DeliveryFailed` when any record failed or was still queued
  at its timeout.
* **Threads.** librdkafka's producer is thread-safe; so is this wrapper (the failures list
  is appended to by whichever thread serves the reports).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Producer

from aurora_streams.errors import DeliveryFailed

__all__ = ["RecordProducer"]


class RecordProducer:
    """A confluent-kafka producer with one back-pressure loop and one failure report."""

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: int = 5,
        compression: str = "none",
        idempotent: bool = True,
        message_timeout_ms: int = 120_000,
        stats: Callable[[str], None] | None = None,
        stats_interval_ms: int = 5_000,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.failures: list[str] = []
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": idempotent,
            "linger.ms": linger_ms,
            "compression.type": compression,
            "partitioner": "murmur2_random",
            "message.timeout.ms": message_timeout_ms,
            # A record already sent waits for its request to time out, not the message.
            "request.timeout.ms": min(30_000, message_timeout_ms),
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            **(extra or {}),
        }
        if stats is not None:
            config |= {"statistics.interval.ms": stats_interval_ms, "stats_cb": stats}
        self._producer = Producer(config)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        # Runs inside flush()/poll(), on whichever thread called them; failures only.
        if err is not None:
            self.failures.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int = -1,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one record (``partition`` -1: by key), waiting for room if the local queue
        is full."""
        produce = self._producer.produce
        while True:
            try:
                if timestamp_ms is None:
                    produce(topic, value, key, partition)
                else:
                    produce(topic, value, key, partition, timestamp=timestamp_ms)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(0.05)

    def queued(self) -> int:
        """Records queued or in flight, not yet acknowledged or failed."""
        return len(self._producer)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports (and statistics) that are due."""
        self._producer.poll(timeout_s)

    def pending(self, timeout_s: float) -> int:
        """Flush for at most ``timeout_s``; the records still queued (0: all acknowledged
        or failed)."""
        return int(self._producer.flush(timeout_s))

    def take_failures(self) -> list[str]:
        """The failures reported since the last call."""
        failures, self.failures = self.failures, []
        return failures

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every queued record is acknowledged or failed; raise
        :class:`DeliveryFailed` if any failed or some are still queued after ``timeout_s``."""
        left = self.pending(timeout_s)
        failures = self.take_failures()
        if left or failures:
            first = failures[0] if failures else "timed out"
            raise DeliveryFailed(
                f"{len(failures) + left} records not delivered ({left} still queued), e.g. {first}"
            )
