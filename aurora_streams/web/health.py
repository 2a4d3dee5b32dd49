"""Operational endpoints: ``/healthz`` (process alive), ``/readyz`` (tables recovered and
partitions assigned), ``/metrics`` (Prometheus text format). All open, no auth."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["attach_health"]


def attach_health(app: faust.App) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        ready = recovered and not app.rebalancing
        body = {
            "status": "ready" if ready else "not_ready",
            "recovered": recovered,
            "rebalancing": bool(app.rebalancing),
        }
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])
