"""The read API under ``/v1`` (role ``read``): HTTP over :mod:`aurora_streams.web.queries`.

Handlers parse and check parameters (a malformed one is a 400 with the JSON error body),
then ask the query service. Per-device requests are answered by the worker that owns the
device: any other worker routes them there (:class:`FaustCluster`, Faust's router, with the
key serialized exactly as the tables and the raw topic's murmur2 partitioning do).
Fleet-wide requests fan out to every worker (each answers ``?scope=local`` from the
partitions it actively owns, never standbys, so nothing is counted twice) and are merged.
List endpoints paginate with ``limit`` and ``cursor``.

:func:`attach_api` serves it from a Faust worker; :func:`application` serves the same
handlers from a plain aiohttp application over any :class:`~aurora_streams.web.queries.Stores`
(one worker, nothing routed): what the in-process tests use.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import faust
import orjson
from aiohttp import ClientSession, ClientTimeout, web
from faust.exceptions import SameNode

from aurora_streams.domain.aggregates import SIZES
from aurora_streams.domain.timeutil import TimestampError, parse_timestamp
from aurora_streams.domain.validate import CHANNEL_RE, DEVICE_ID_RE
from aurora_streams.errors import InvalidQuery
from aurora_streams.faust_adapter import partition_db
from aurora_streams.settings import Settings
from aurora_streams.web import queries
from aurora_streams.web.auth import Authenticator, authenticator
from aurora_streams.web.errors import error_response, request_id
from aurora_streams.web.queries import MAX_LIMIT, Queries, Stores, Table

__all__ = ["ROUTES", "ApiHandlers", "Cluster", "FaustCluster", "FaustStores", "LocalCluster", "application",
           "attach_api"]  # fmt: skip


def _param(request: web.Request, name: str) -> str | None:
    """A query parameter; empty means not given (``?from=&to=`` from a dashboard form)."""
    value = request.query.get(name)
    return value if value else None


def _device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.match(device_id):
        raise InvalidQuery("invalid_device", "device id must be 1-64 of [A-Za-z0-9._:-]", "device_id")
    return device_id


_DIGITS: Final = re.compile(r"[0-9]{1,15}\Z")
_EPOCH_MS: Final = re.compile(r"-?[0-9]{1,15}\Z")


def _digits(raw: str) -> int | None:
    """A plain non-negative decimal of at most 15 ASCII digits, else None. ``str.isdigit``
    takes superscripts ("²") that ``int`` refuses, and ``int`` refuses more than 4,300
    digits: both were 500s."""
    return int(raw) if _DIGITS.match(raw) else None


def _limit(request: web.Request, default: int = 100) -> int:
    n = _digits(request.query.get("limit", str(default)))
    if n is None or not 1 <= n <= MAX_LIMIT:
        raise InvalidQuery("invalid_limit", f"limit must be 1-{MAX_LIMIT}", "limit")
    return n


def _instant(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_timestamp(int(raw) if _EPOCH_MS.match(raw) else raw)
    except TimestampError as exc:
        raise InvalidQuery("invalid_time", f"{name}: {exc}", name) from exc


def _cursor_after(request: web.Request) -> tuple[int, str] | None:
    """An anomalies cursor (``ts_end:anomaly_id`` from ``next_cursor``), or None."""
    cursor = _param(request, "cursor")
    if not cursor:
        return None
    ts, _, aid = cursor.partition(":")
    at = _digits(ts)
    if at is None or not aid:
        raise InvalidQuery("invalid_cursor", "cursor must come from next_cursor", "cursor")
    return at, aid


def _local(request: web.Request) -> bool:
    """``?scope=local``: what workers ask each other (this worker's active partitions only)."""
    return request.query.get("scope") == "local"


class Cluster(Protocol):
    """Where a request is answered: routing to a device's owner, fan-out to every worker."""

    async def route(self, request: web.Request, device_id: str) -> web.Response | None:
        """The owner's answer when another worker owns ``device_id``; None when this one
        does. With ``?scope=local`` nothing is routed, and a device this worker does not
        actively own is a 404: a standby's copy may be stale."""

    async def fan_out(self, request: web.Request) -> list[dict[str, Any]]:
        """Every other worker's ``scope=local`` answer to ``request``."""


class LocalCluster:
    """One worker that owns everything: nothing is routed, there is no one to fan out to."""

    async def route(self, request: web.Request, device_id: str) -> web.Response | None:
        return None

    async def fan_out(self, request: web.Request) -> list[dict[str, Any]]:
        return []


def _ok(request: web.Request, body: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"X-Request-Id": request_id(request)},
    )


def _unknown_device(request: web.Request, device_id: str) -> web.Response:
    return error_response(request, 404, "unknown_device", f"no device {device_id[:64]!r}")


Handler = Callable[..., Awaitable[web.Response]]


class ApiHandlers:
    """The ``/v1`` handlers: authorize (role ``read``), parse, route or fan out, answer."""

    def __init__(self, queries: Queries, cluster: Cluster, settings: Settings, auth: Authenticator) -> None:
        self.queries, self.cluster, self.settings, self.auth = queries, cluster, settings, auth

    async def guard(self, request: web.Request, handler: Handler, *args: str) -> web.Response:
        result = self.auth.authorize(request.headers.get("Authorization"), "read")
        if not result.ok:
            return error_response(request, result.status, result.reason, result.message)
        try:
            return await handler(request, *args)
        except InvalidQuery as exc:
            return error_response(request, 400, exc.reason, exc.message, field=exc.field)

    async def devices(self, request: web.Request) -> web.Response:
        limit = _limit(request)
        ids = self.queries.devices_after(_param(request, "cursor") or "", limit + 1)
        if _local(request):
            return _ok(request, {"items_all": ids})
        for other in await self.cluster.fan_out(request):
            ids.extend(other["items_all"])
        return _ok(request, queries.devices_page(ids, limit))

    async def device(self, request: web.Request, device_id: str) -> web.Response:
        _device_id(device_id)
        routed = await self.cluster.route(request, device_id)
        if routed is not None:
            return routed
        body = self.queries.device(device_id)
        return _unknown_device(request, device_id) if body is None else _ok(request, body)

    async def aggregates(self, request: web.Request, device_id: str) -> web.Response:
        _device_id(device_id)
        size = _param(request, "size") or "15m"
        channel = _channel(request)
        start, end = _instant(request, "from"), _instant(request, "to")
        limit = _limit(request, default=MAX_LIMIT)
        cursor = _param(request, "cursor")
        at = None if cursor is None else _digits(cursor)
        if cursor is not None and at is None:
            raise InvalidQuery("invalid_cursor", "cursor must come from next_cursor", "cursor")
        routed = await self.cluster.route(request, device_id)
        if routed is not None:
            return routed
        body = self.queries.aggregates(device_id, channel, size, start, end, at, limit)
        return _unknown_device(request, device_id) if body is None else _ok(request, body)

    async def readings(self, request: web.Request, device_id: str) -> web.Response:
        _device_id(device_id)
        channel = _channel(request)
        start, end = _instant(request, "from"), _instant(request, "to")
        routed = await self.cluster.route(request, device_id)
        if routed is not None:
            return routed
        body = self.queries.readings(device_id, channel, start, end)
        return _unknown_device(request, device_id) if body is None else _ok(request, body)

    async def anomalies(self, request: web.Request) -> web.Response:
        limit = _limit(request)
        since = _instant(request, "since")
        kind = _param(request, "type")
        device = _param(request, "device")
        if device is not None:
            _device_id(device)
            routed = await self.cluster.route(request, device)
            if routed is not None:
                return routed
        events = self.queries.anomalies(device, since, kind, _cursor_after(request), limit + 1)
        if _local(request):
            return _ok(request, {"items_all": events})
        if device is None:
            for other in await self.cluster.fan_out(request):
                events.extend(other["items_all"])
        return _ok(request, queries.anomalies_page(events, limit))

    async def consumption(self, request: web.Request) -> web.Response:
        """Validated energy per window summed over the fleet, or one site: import (E
        channels) and export (B channels) in kWh, how many devices contributed, and the
        energy of both left out as not validated (``excluded_kwh``)."""
        size = _param(request, "size") or "1h"
        if size not in SIZES:
            raise InvalidQuery("invalid_size", f"size must be one of {', '.join(SIZES)}", "size")
        start, end = _instant(request, "from"), _instant(request, "to")
        if start is None or end is None:
            raise InvalidQuery("missing_range", "from and to are required", "from")
        site = _param(request, "site")
        if site is not None and site not in set(self.settings.sites.values()):
            return error_response(request, 404, "unknown_site", f"no site {site[:64]!r}")
        totals = self.queries.consumption(site, size, start, end)
        if _local(request):
            return _ok(request, {"totals": totals})
        others = [other["totals"] for other in await self.cluster.fan_out(request)]
        merged = queries.merge_consumption(totals, others)
        return _ok(request, queries.consumption_body(site, size, start, end, merged))

    async def site_list(self, request: web.Request) -> web.Response:
        counts: dict[str, int] = {}
        for site in self.settings.sites.values():
            counts[site] = counts.get(site, 0) + 1
        items = [{"site": k, "devices": v} for k, v in sorted(counts.items())]
        return _ok(request, {"items": items, "next_cursor": None})

    async def forecast(self, request: web.Request, device_id: str) -> web.Response:
        _device_id(device_id)
        channel = _channel(request)
        horizon = _digits(request.query.get("horizon", "48"))
        if horizon is None or not 1 <= horizon <= 7 * 48:
            raise InvalidQuery("invalid_horizon", "horizon must be 1-336 windows", "horizon")
        routed = await self.cluster.route(request, device_id)
        if routed is not None:
            return routed
        body = self.queries.forecast(device_id, channel, horizon)
        if body is None:
            return error_response(
                request, 404, "no_forecast", f"no forecaster for {device_id[:64]!r} {channel}"
            )
        return _ok(request, body)

    async def fleet(self, request: web.Request) -> web.Response:
        """Devices, channels, the newest reading and open anomalies by type."""
        local = self.queries.fleet()
        if _local(request):
            return _ok(request, local)
        return _ok(request, queries.merge_fleet(local, await self.cluster.fan_out(request)))


ROUTES: Final = {
    "/v1/devices": "devices",
    "/v1/devices/{device_id}": "device",
    "/v1/devices/{device_id}/aggregates": "aggregates",
    "/v1/devices/{device_id}/readings": "readings",
    "/v1/devices/{device_id}/forecast": "forecast",
    "/v1/anomalies": "anomalies",
    "/v1/fleet": "fleet",
    "/v1/fleet/consumption": "consumption",
    "/v1/sites": "site_list",
}
"""Path -> the :class:`ApiHandlers` method that answers its GETs."""


def _channel(request: web.Request) -> str:
    channel = _param(request, "channel") or "E1"
    if not CHANNEL_RE.match(channel):
        raise InvalidQuery("invalid_channel", "channel must be 1-8 letters or digits", "channel")
    return channel


def application(stores: Stores, settings: Settings) -> web.Application:
    """The read API as a plain aiohttp application over ``stores``: one worker that owns
    every partition, nothing routed (the in-process tests serve it)."""
    handlers = ApiHandlers(Queries(stores), LocalCluster(), settings, authenticator(settings))
    app = web.Application()
    for path, name in ROUTES.items():
        app.router.add_get(path, _bound(handlers, getattr(handlers, name)))
    return app


def _bound(handlers: ApiHandlers, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def view(request: web.Request) -> web.Response:
        return await handlers.guard(request, handler, *request.match_info.values())

    return view


# -- in a Faust worker ------------------------------------------------------------------------


class FaustStores:
    """The stream tables of a Faust worker as :class:`~aurora_streams.web.queries.Stores`."""

    def __init__(self, app: faust.App, settings: Settings, tables: dict[Table, Any]) -> None:
        self.app, self.settings, self.tables = app, settings, tables

    def get(self, table: Table, key: str) -> bytes | None:
        value: bytes | None = self.tables[table].get(key)
        return value

    def active(self, table: Table) -> list[Any]:
        raw = self.settings.topic_raw
        partitions = sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == raw)
        return [partition_db(self.tables[table], p) for p in partitions]


class FaustCluster:
    """Routing and fan-out between the workers of a Faust app (its router and table metadata)."""

    def __init__(self, app: faust.App, settings: Settings, routing_table: Any) -> None:
        self.app, self.settings, self.routing_table = app, settings, routing_table

    def _is_active(self, device_id: str) -> bool:
        partition = self.app.producer.key_partition(self.settings.topic_raw, device_id.encode()).partition
        actives = self.app.assignor.assigned_actives()
        return any(tp.partition == partition and tp.topic == self.settings.topic_raw for tp in actives)

    async def route(self, request: web.Request, device_id: str) -> web.Response | None:
        if _local(request):
            if self._is_active(device_id):
                return None
            return error_response(
                request, 404, "not_local", f"this worker does not own {device_id[:64]!r} (scope=local)"
            )
        try:
            router: Any = self.app.router  # faust types its web layer abstractly; this is aiohttp
            routed: web.Response = await router.route_req(
                self.routing_table.name, device_id, self.app.web, request
            )
            return routed
        except SameNode:
            return None

    async def fan_out(self, request: web.Request) -> list[dict[str, Any]]:
        me = str(self.app.conf.canonical_url).rstrip("/")
        hosts = {str(h).rstrip("/") for h in self.app.router.tables_metadata()} - {me}
        if not hosts:
            return []
        query = dict(request.query) | {"scope": "local"}
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "x-request-id")}
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:

            async def one(host: str) -> dict[str, Any]:
                async with session.get(f"{host}{request.path}", params=query, headers=headers) as resp:
                    if resp.status != 200:
                        raise web.HTTPBadGateway(text=f"{host} answered {resp.status}")
                    return orjson.loads(await resp.read())  # type: ignore[no-any-return]

            return list(await asyncio.gather(*(one(h) for h in sorted(hosts))))


def attach_api(
    app: faust.App, settings: Settings, device_state: Any, days: Any, recent: Any, forecasts: Any
) -> ApiHandlers:
    """Serve the read API from the Faust worker ``app`` over its tables."""
    stores = FaustStores(
        app, settings, {"device_state": device_state, "days": days, "recent": recent, "forecasts": forecasts}
    )
    handlers = ApiHandlers(Queries(stores), FaustCluster(app, settings, device_state), settings,
                           authenticator(settings))  # fmt: skip
    for path, name in ROUTES.items():
        _get_view(app, path, handlers, getattr(handlers, name))
    return handlers


def _get_view(app: faust.App, path: str, handlers: ApiHandlers, handler: Handler) -> None:
    """Register a GET view at ``path``: auth, then ``handler(request, *path parameters)``."""

    class ReadView(faust.web.View):  # type: ignore[misc]
        async def get(self, request: web.Request, **params: str) -> web.Response:
            return await handlers.guard(request, handler, *params.values())

    app.page(path, name=f"api:{path}")(ReadView)
