"""The operations page at ``/``: fleet health and throughput, recent anomalies and a device
drill-down chart. Static HTML, CSS and JS from this package; the charting library (Plotly)
is served from the installed ``plotly`` package, not copied in. The page reads the same
``/v1`` API with the same tokens (entered on the page, kept in the tab's session storage)
and the open ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import faust
from aiohttp import web

__all__ = ["attach_ops"]

_TYPES = {".html": "text/html", ".css": "text/css", ".js": "application/javascript"}


@cache
def _asset(name: str) -> bytes:
    if name == "plotly.min.js":
        import plotly

        return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    return (resources.files("aurora_streams.web") / "static" / name).read_bytes()


def attach_ops(app: faust.App) -> None:
    def page(path: str, name: str) -> None:
        content_type = _TYPES[Path(name).suffix]

        class Asset(faust.web.View):  # type: ignore[misc]
            async def get(self, request: web.Request) -> web.Response:
                headers = {"Cache-Control": "public, max-age=3600"} if name == "plotly.min.js" else {}
                return web.Response(body=_asset(name), content_type=content_type, headers=headers)

        app.page(path, name=f"ops:{name}")(Asset)

    page("/", "ops.html")
    for name in ("ops.css", "ops.js", "plotly.min.js"):
        page(f"/ops/{name}", name)
