"""Operational endpoints: ``/healthz`` (process alive), ``/readyz`` (tables recovered,
partitions assigned, and progress on the input it owns), ``/metrics`` (Prometheus text
format). All open, no auth."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aurora_streams import metrics
from aurora_streams.kafka.offsets import Offsets
from aurora_streams.progress import StallDetector

log = logging.getLogger(__name__)

__all__ = ["BrokerProgress", "attach_health"]


class BrokerProgress:
    """The raw topic's log end and the worker group's committed offsets, as the broker has
    them: what an operator's lag dashboard shows. The worker's own view (the last fetch's
    highwater, the offsets it believes it committed) missed a partition it owned but never
    fetched after a rebalance: no highwater means no lag, and ``/readyz`` stayed 200 while
    that partition's input waited (the soak of 2026-12-07, after a second worker left).

    Blocking (librdkafka calls with ``timeout_s`` each): call it from a thread. ``read``
    returns None when the broker does not answer in time; the caller then falls back to the
    worker's own view (a paused broker is exactly when it does not answer)."""

    def __init__(self, bootstrap: str, group: str, topic: str, timeout_s: float = 2.0) -> None:
        self.topic = topic
        self._offsets = Offsets(bootstrap, group, timeout_s)

    def read(self, partitions: list[int]) -> tuple[dict[int, int | None], dict[int, int | None]] | None:
        from confluent_kafka import KafkaException

        try:
            committed = self._offsets.committed(self.topic, partitions)
            ends: dict[int, int | None] = {
                p: end for (_t, p), end in self._offsets.ends((self.topic, p) for p in partitions).items()
            }
        except (KafkaException, RuntimeError):
            return None
        return ends, committed

    def close(self) -> None:
        self._offsets.close()


def attach_health(app: faust.App) -> None:
    settings: Any = app.aurora_settings  # type: ignore[attr-defined]
    detector = StallDetector(settings.stall_after_s)
    broker = BrokerProgress(settings.bootstrap_servers, settings.app_id, settings.topic_raw)

    @app.timer(min(5.0, settings.stall_after_s / 4))  # type: ignore[untyped-decorator]
    async def _watch_progress() -> None:
        # The log end from the consumer's last fetch answer (kept even when it held no
        # records) against the committed offset: a worker that stopped consuming said
        # "ready" forever before.
        if app.rebalancing or not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
            return
        consumer: Any = app.consumer
        tps = [tp for tp in app.assignor.assigned_actives() if tp.topic == settings.topic_raw]
        # The broker's view first (what the lag dashboards show); the worker's own when the
        # broker does not answer.
        seen = await asyncio.get_running_loop().run_in_executor(
            None, broker.read, sorted(tp.partition for tp in tps)
        )
        if seen is not None:
            ends, committed_by_partition = seen
        else:
            committed = dict(app.monitor.tp_committed_offsets or {})
            ends = {tp.partition: consumer.highwater(tp) for tp in tps}
            committed_by_partition = {tp.partition: committed.get(tp) for tp in tps}
        was = bool(detector.stalled)
        stalled = detector.observe(time.monotonic(), ends, committed_by_partition)
        metrics.STALLED_PARTITIONS.set(len(stalled))
        if stalled and not was:
            diagnose = getattr(consumer, "diagnose", None)
            state = {}
            if diagnose is not None:
                state = {s.partition: diagnose(TP(settings.topic_raw, s.partition)) for s in stalled}
            intake = getattr(app, "raw_intake", None)
            log.error(
                "worker stalled, not ready: %s; consumer state: %s; intake: %s",
                detector.describe(),
                state,
                None if intake is None else len(intake),
            )
        elif was and not stalled:
            log.warning("worker progressing again, ready")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        stalled = detector.stalled
        ready = recovered and not app.rebalancing and not stalled
        body: dict[str, Any] = {
            "status": "ready" if ready else "not_ready",
            "recovered": recovered,
            "rebalancing": bool(app.rebalancing),
            "stalled": [
                {"partition": s.partition, "lag": s.lag, "idle_s": round(s.idle_s, 1)} for s in stalled
            ],
        }
        if stalled:
            body["reason"] = detector.describe()
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
