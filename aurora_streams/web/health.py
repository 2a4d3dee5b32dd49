"""Operational endpoints: ``/healthz`` (process alive), ``/readyz`` (tables recovered,
partitions assigned, and progress on the input it owns), ``/metrics`` (Prometheus text
format). All open, no auth."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aurora_streams import metrics
from aurora_streams.progress import StallDetector

log = logging.getLogger(__name__)

__all__ = ["attach_health"]


def attach_health(app: faust.App) -> None:
    settings: Any = app.aurora_settings  # type: ignore[attr-defined]
    detector = StallDetector(settings.stall_after_s)

    @app.timer(min(5.0, settings.stall_after_s / 4))  # type: ignore[untyped-decorator]
    async def _watch_progress() -> None:
        # The log end from the consumer's last fetch answer (kept even when it held no
        # records) against the committed offset: a worker that stopped consuming said
        # "ready" forever before.
        if app.rebalancing or not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
            return
        consumer: Any = app.consumer
        tps = [tp for tp in app.assignor.assigned_actives() if tp.topic == settings.topic_raw]
        committed = dict(app.monitor.tp_committed_offsets or {})
        ends = {tp.partition: consumer.highwater(tp) for tp in tps}
        was = bool(detector.stalled)
        stalled = detector.observe(time.monotonic(), ends, {tp.partition: committed.get(tp) for tp in tps})
        metrics.STALLED_PARTITIONS.set(len(stalled))
        if stalled and not was:
            log.error("worker stalled, not ready: %s", detector.describe())
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
