"""The read API under ``/v1`` (role ``read``), over the stream tables.

Per-device requests are answered by the worker that owns the device: any other worker
routes them there (Faust's router, with the key serialized exactly as the tables and the
raw topic's murmur2 partitioning do). Fleet-wide requests fan out to every worker (each
answers ``?scope=local`` from the partitions it actively owns, never standbys, so nothing
is counted twice) and are merged. List endpoints paginate with ``limit`` and ``cursor``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Final

import faust
import orjson
from aiohttp import ClientSession, ClientTimeout, web
from faust.exceptions import SameNode

from aurora_streams.domain.aggregates import (
    DAY_MS,
    SIZES,
    DayRecord,
    bucket_windows,
    day_key,
    day_of,
    row_excluded,
)
from aurora_streams.domain.device import DeviceState
from aurora_streams.domain.fleet import SUMMARY_KEY, DayTotals, DeviceCounts, OpenAnomalies, totals_key
from aurora_streams.domain.timeutil import TimestampError, format_ms, parse_timestamp
from aurora_streams.domain.validate import CHANNEL_RE, DEVICE_ID_RE
from aurora_streams.faust_adapter import partition_db
from aurora_streams.processing import log_offset
from aurora_streams.settings import Settings
from aurora_streams.tables.device_state import is_device_key
from aurora_streams.web.auth import authenticator
from aurora_streams.web.errors import error_response, request_id

__all__ = ["attach_api"]

_MAX_LIMIT: Final = 1000
# The worker's id rules: a device or channel it would refuse is never found here.
_CHANNEL_RE: Final = CHANNEL_RE
_DEVICE_RE: Final = DEVICE_ID_RE
_MAX_RANGE_DAYS: Final = 400


class _BadRequest(Exception):
    def __init__(self, reason: str, message: str, field: str) -> None:
        super().__init__(message)
        self.reason, self.message, self.field = reason, message, field


def _param(request: web.Request, name: str) -> str | None:
    """A query parameter; empty means not given (``?from=&to=`` from a dashboard form)."""
    value = request.query.get(name)
    return value if value else None


def _device_id(device_id: str) -> str:
    if not _DEVICE_RE.match(device_id):
        raise _BadRequest("invalid_device", "device id must be 1-64 of [A-Za-z0-9._:-]", "device_id")
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
    if n is None or not 1 <= n <= _MAX_LIMIT:
        raise _BadRequest("invalid_limit", f"limit must be 1-{_MAX_LIMIT}", "limit")
    return n


def _instant(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_timestamp(int(raw) if _EPOCH_MS.match(raw) else raw)
    except TimestampError as exc:
        raise _BadRequest("invalid_time", f"{name}: {exc}", name) from exc


class ApiService:
    def __init__(
        self, app: faust.App, settings: Settings, device_state: Any, days: Any, recent: Any, forecasts: Any
    ) -> None:
        self.forecasts = forecasts
        self.app = app
        self.settings = settings
        self.device_state = device_state
        self.days = days
        self.recent = recent
        self.auth = authenticator(settings)

    # -- plumbing ---------------------------------------------------------------------------

    def _deny(self, request: web.Request) -> web.Response | None:
        result = self.auth.authorize(request.headers.get("Authorization"), "read")
        return None if result.ok else error_response(request, result.status, result.reason, result.message)

    async def _owned_state(self, request: web.Request, device_id: str) -> web.Response | bytes:
        """The device's stored state when this worker owns it; otherwise the owner's answer
        (routed) or a 404."""
        routed = await self._route(request, device_id)
        if routed is not None:
            return routed
        data: bytes | None = self.device_state.get(device_id) if is_device_key(device_id) else None
        if data is None:
            return error_response(request, 404, "unknown_device", f"no device {device_id[:64]!r}")
        return data

    async def _route(self, request: web.Request, device_id: str) -> web.Response | None:
        """The owner's answer when another worker owns ``device_id``; None when we do.
        With ``?scope=local`` (what workers ask each other) nothing is routed, and a device
        this worker does not actively own is a 404: a standby's copy may be stale."""
        if request.query.get("scope") == "local":
            if self._is_active(device_id):
                return None
            return error_response(
                request, 404, "not_local", f"this worker does not own {device_id[:64]!r} (scope=local)"
            )
        try:
            router: Any = self.app.router  # faust types its web layer abstractly; this is aiohttp
            routed: web.Response = await router.route_req(
                self.device_state.name, device_id, self.app.web, request
            )
            return routed
        except SameNode:
            return None

    def _is_active(self, device_id: str) -> bool:
        partition = self.app.producer.key_partition(self.settings.topic_raw, device_id.encode()).partition
        actives = self.app.assignor.assigned_actives()
        return any(tp.partition == partition and tp.topic == self.settings.topic_raw for tp in actives)

    def _active_dbs(self, table: Any) -> list[Any]:
        """The RocksDB databases of ``table``'s partitions this worker actively owns (not its
        standbys: a fan-out would count them twice)."""
        raw = self.settings.topic_raw
        partitions = sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == raw)
        return [partition_db(table, p) for p in partitions]

    def _local_devices_after(self, cursor: str, n: int) -> list[str]:
        """The first ``n`` device ids after ``cursor`` over the active partitions: a seek and
        at most ``n`` keys per partition (RocksDB orders keys bytewise, as ids sort), where
        listing every device to page through them cost seconds at 100,000 devices."""
        start = cursor.encode() + b"\x00" if cursor else b""
        found: list[str] = []
        for db in self._active_dbs(self.device_state):
            it = db.iter()
            it.seek(start)
            taken = 0
            while it.valid() and taken < n:
                key = it.key().decode()
                it.next()
                if is_device_key(key):
                    found.append(key)
                    taken += 1
        return sorted(found)[:n]

    async def _fan_out(self, request: web.Request) -> list[dict[str, Any]]:
        """Every other worker's ``scope=local`` answer to this request."""
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

    @staticmethod
    def _ok(request: web.Request, body: Any) -> web.Response:
        return web.Response(
            body=orjson.dumps(body),
            content_type="application/json",
            headers={"X-Request-Id": request_id(request)},
        )

    async def guard(self, request: web.Request, handler: Any, *args: Any) -> web.Response:
        denied = self._deny(request)
        if denied:
            return denied
        try:
            return await handler(request, *args)  # type: ignore[no-any-return]
        except _BadRequest as exc:
            return error_response(request, 400, exc.reason, exc.message, field=exc.field)

    # -- endpoints --------------------------------------------------------------------------

    async def devices(self, request: web.Request) -> web.Response:
        limit = _limit(request)
        cursor = _param(request, "cursor") or ""
        ids = self._local_devices_after(cursor, limit + 1)
        if request.query.get("scope") != "local":
            for other in await self._fan_out(request):
                ids.extend(other["items_all"])
        ids = sorted(set(ids))
        if request.query.get("scope") == "local":
            return self._ok(request, {"items_all": ids[: limit + 1]})
        page = ids[:limit]
        next_cursor = page[-1] if len(ids) > limit else None
        return self._ok(request, {"items": [{"device_id": d} for d in page], "next_cursor": next_cursor})

    async def device(self, request: web.Request, device_id: str) -> web.Response:
        _device_id(device_id)
        data = await self._owned_state(request, device_id)
        if isinstance(data, web.Response):
            return data
        state = DeviceState.from_bytes(data)
        channels = []
        for name, ch in sorted(state.channels.items()):
            last = ch.entries[-1] if ch.entries else None
            channels.append(
                {
                    "channel": name,
                    "kind": ch.kind,
                    "window": len(ch.entries),
                    "anchored": ch.anchored,
                    "latest": None
                    if last is None
                    else {
                        "ts_end": format_ms(last.ts),
                        "value": last.value,
                        "unit": last.unit,
                        "delta": last.delta,
                        "flags": list(last.flags),
                        "revision": last.revision,
                        "quality": last.quality,
                    },
                }
            )
        return self._ok(
            request,
            {"device_id": device_id, "last_offset": log_offset(state.last_offset), "channels": channels},
        )

    async def aggregates(self, request: web.Request, device_id: str) -> web.Response:
        _device_id(device_id)
        size = _param(request, "size") or "15m"
        if size not in SIZES:
            raise _BadRequest("invalid_size", f"size must be one of {', '.join(SIZES)}", "size")
        channel = _channel(request)
        start, end = _instant(request, "from"), _instant(request, "to")
        if start is not None and end is not None and not start < end:
            raise _BadRequest("invalid_range", "need from < to", "from")
        limit = _limit(request, default=_MAX_LIMIT)
        data = await self._owned_state(request, device_id)
        if isinstance(data, web.Response):
            return data
        if end is None:
            latest = DeviceState.from_bytes(data).latest_ts() or int(time.time() * 1000)
            end = latest - latest % SIZES["1d"] + SIZES["1d"] if size == "1d" else latest
        if start is None:
            start = end - SIZES["1d"]
        _check_range(start, end)
        cursor = _param(request, "cursor")
        if cursor is not None:
            at = _digits(cursor)
            if at is None or at >= end:
                raise _BadRequest("invalid_cursor", "cursor must come from next_cursor", "cursor")
            start = max(start, at)
        records = []
        for day in range(day_of(start + 1), day_of(end) + 1):
            stored = self.days.get(day_key(device_id, channel, day))
            if stored is not None:
                records.append(DayRecord.from_bytes(stored))
        buckets = bucket_windows(records, SIZES[size], start, end)
        unit = records[0].unit if records else "kWh"
        page = buckets[:limit]
        next_cursor = str(buckets[limit].start) if len(buckets) > limit else None
        items = [{**b.to_dict(), "start": format_ms(b.start), "end": format_ms(b.end)} for b in page]
        return self._ok(
            request,
            {
                "device_id": device_id,
                "channel": channel,
                "size": size,
                "unit": unit,
                "from": format_ms(start),
                "to": format_ms(end),
                "items": items,
                "next_cursor": next_cursor,
            },
        )

    async def readings(self, request: web.Request, device_id: str) -> web.Response:
        """The latest revision of each reading's delta in [from, to) (default: the day up to
        the device's latest reading), in time order, from the day aggregates."""
        _device_id(device_id)
        channel = _channel(request)
        start, end = _instant(request, "from"), _instant(request, "to")
        data = await self._owned_state(request, device_id)
        if isinstance(data, web.Response):
            return data
        if end is None:
            end = (DeviceState.from_bytes(data).latest_ts() or int(time.time() * 1000)) + 1
        if start is None:
            start = end - SIZES["1d"]
        _check_range(start, end)
        items = []
        unit = "kWh"
        for day in range(day_of(start + 1), day_of(end) + 1):
            stored = self.days.get(day_key(device_id, channel, day))
            if stored is None:
                continue
            record = DayRecord.from_bytes(stored)
            unit = record.unit
            for row in record.between(start - 1, end - 1):
                items.append(
                    {
                        "ts_end": format_ms(row[0]),
                        "delta": row[1],
                        "revision": row[2],
                        "validated": not row_excluded(row),
                    }
                )
        body = {"device_id": device_id, "channel": channel, "unit": unit, "from": format_ms(start),
                "to": format_ms(end), "items": items[: _MAX_LIMIT * 5]}  # fmt: skip
        return self._ok(request, body)

    async def anomalies(self, request: web.Request) -> web.Response:
        limit = _limit(request)
        since = _instant(request, "since")
        kind = _param(request, "type")
        device = _param(request, "device")
        if device is not None:
            _device_id(device)
        cursor = _param(request, "cursor")
        after: tuple[int, str] | None = None
        if cursor:
            ts, _, aid = cursor.partition(":")
            at = _digits(ts)
            if at is None or not aid:
                raise _BadRequest("invalid_cursor", "cursor must come from next_cursor", "cursor")
            after = (at, aid)
        if device is not None:
            routed = await self._route(request, device)
            if routed is not None:
                return routed
            stored_lists = [self.recent.get(device)]
        else:
            # One pass over the active partitions' lists (no per-device partition lookup).
            stored_lists = [
                value
                for db in self._active_dbs(self.recent)
                for key, value in db.items()
                if is_device_key(key.decode())
            ]
        events: list[dict[str, Any]] = []
        for stored in stored_lists:
            for e in orjson.loads(stored) if stored else []:
                if since is not None and e["ts_end"] < since:
                    continue
                if kind is not None and e["type"] != kind:
                    continue
                if after is not None and (e["ts_end"], e["anomaly_id"]) >= after:
                    continue
                events.append(e)
        if device is None and request.query.get("scope") != "local":
            for other in await self._fan_out(request):
                events.extend(other["items_all"])
        events.sort(key=lambda e: (e["ts_end"], e["anomaly_id"]), reverse=True)
        if request.query.get("scope") == "local":
            return self._ok(request, {"items_all": events[: limit + 1]})
        page = events[:limit]
        next_cursor = f"{page[-1]['ts_end']}:{page[-1]['anomaly_id']}" if len(events) > limit else None
        items = [
            {**e, "ts_end": format_ms(e["ts_end"]), "detected_at": format_ms(e["detected_at"])} for e in page
        ]
        return self._ok(request, {"items": items, "next_cursor": next_cursor})

    async def consumption(self, request: web.Request) -> web.Response:
        """Validated energy per window summed over the fleet, or one site: import (E
        channels) and export (B channels) in kWh, how many devices contributed, and the
        energy of both left out as not validated (``excluded_kwh``)."""
        size = _param(request, "size") or "1h"
        if size not in SIZES:
            raise _BadRequest("invalid_size", f"size must be one of {', '.join(SIZES)}", "size")
        start, end = _instant(request, "from"), _instant(request, "to")
        if start is None or end is None:
            raise _BadRequest("missing_range", "from and to are required", "from")
        if not start < end or end - start > 31 * SIZES["1d"]:
            raise _BadRequest("invalid_range", "need from < to, at most 31 days apart", "from")
        site = _param(request, "site")
        sites = self.settings.sites
        if site is not None and site not in set(sites.values()):
            return error_response(request, 404, "unknown_site", f"no site {site[:64]!r}")
        size_ms = SIZES[size]
        if start % size_ms or end % size_ms:
            raise _BadRequest(
                "unaligned_range", f"from and to must be on {size} window boundaries (UTC)", "from"
            )
        # The partitions' stored day totals (domain.fleet): a few keys per day, whatever the
        # fleet's size.
        totals: dict[int, list[float]] = {}
        keys = [
            totals_key(site or "", day).encode() for day in range(start // DAY_MS, (end - 1) // DAY_MS + 1)
        ]
        for db in self._active_dbs(self.days):
            for stored in db.get(keys):
                for (window_size, w), row in DayTotals.from_bytes(stored).windows.items():
                    if window_size != size_ms or not start <= w < end:
                        continue
                    acc = totals.setdefault(w, [0.0, 0.0, 0.0, 0.0])
                    for i in range(4):
                        acc[i] += row[i]
        local = {str(k): v for k, v in totals.items()}
        if request.query.get("scope") == "local":
            return self._ok(request, {"totals": local})
        for other in await self._fan_out(request):
            for k, (imp, exp, n, excluded) in other["totals"].items():
                row = local.setdefault(k, [0.0, 0.0, 0.0, 0.0])
                row[0] += imp
                row[1] += exp
                row[2] += n
                row[3] += excluded
        items = [
            {
                "start": format_ms(int(k)),
                "end": format_ms(int(k) + SIZES[size]),
                # Sums kept by adding and subtracting contributions: rounded to 1e-9 kWh.
                "import_kwh": round(v[0], 9),
                "export_kwh": round(v[1], 9),
                "channel_windows": int(v[2]),
                "excluded_kwh": round(v[3], 9),
            }
            for k, v in sorted(local.items(), key=lambda kv: int(kv[0]))
        ]
        return self._ok(
            request,
            {"site": site, "size": size, "from": format_ms(start), "to": format_ms(end), "items": items},
        )

    async def site_list(self, request: web.Request) -> web.Response:
        counts: dict[str, int] = {}
        for site in self.settings.sites.values():
            counts[site] = counts.get(site, 0) + 1
        items = [{"site": k, "devices": v} for k, v in sorted(counts.items())]
        return self._ok(request, {"items": items, "next_cursor": None})

    async def forecast(self, request: web.Request, device_id: str) -> web.Response:
        """Point forecasts with a 90% band for the next windows, the model's identity, how much
        it has learned and its running day-ahead accuracy beside the seasonal-naive baseline.
        A model still warming up says so and forecasts nothing."""
        from aurora_streams.agents.views import decode_forecast_entry
        from aurora_streams.domain.forecast import DeviceForecaster

        _device_id(device_id)
        channel = _channel(request)
        horizon = _digits(request.query.get("horizon", "48"))
        if horizon is None or not 1 <= horizon <= 7 * 48:
            raise _BadRequest("invalid_horizon", "horizon must be 1-336 windows", "horizon")
        routed = await self._route(request, device_id)
        if routed is not None:
            return routed
        stored = self.forecasts.get(f"{device_id}|{channel}")
        if stored is None:
            return error_response(
                request, 404, "no_forecast", f"no forecaster for {device_id[:64]!r} {channel}"
            )
        model = DeviceForecaster.from_bytes(decode_forecast_entry(stored)[1])
        snap = model.snapshot(horizon)
        body = {
            "device_id": device_id,
            "channel": channel,
            **snap,
            "origin_ts": format_ms(snap["origin_ts"]) if snap["origin_ts"] is not None else None,
            "points": [
                {"ts_end": format_ms(p.ts_end), "value": p.value, "lower": p.lower, "upper": p.upper}
                for p in snap["points"]
            ],
        }
        return self._ok(request, body)

    async def fleet(self, request: web.Request) -> web.Response:
        """Devices, channels, the newest reading and open anomalies by type, from each
        active partition's stored counts (domain.fleet), not from its devices."""
        counts = DeviceCounts()
        for db in self._active_dbs(self.device_state):
            part = DeviceCounts.from_bytes(db.get(SUMMARY_KEY.encode()))
            counts.devices += part.devices
            counts.channels += part.channels
            if part.latest_ts is not None and (counts.latest_ts is None or part.latest_ts > counts.latest_ts):
                counts.latest_ts = part.latest_ts
        open_anomalies = OpenAnomalies()
        for db in self._active_dbs(self.recent):
            open_anomalies.by_type.update(OpenAnomalies.from_bytes(db.get(SUMMARY_KEY.encode())).by_type)
        local: dict[str, Any] = {
            "devices": counts.devices,
            "channels": counts.channels,
            "latest_reading_ms": counts.latest_ts,
            "open_anomalies_by_type": dict(sorted(open_anomalies.by_type.items())),
            "workers": 1,
        }
        if request.query.get("scope") == "local":
            return self._ok(request, local)
        total: dict[str, Any] = dict(local)
        for other in await self._fan_out(request):
            total["devices"] += other["devices"]
            total["channels"] += other["channels"]
            total["workers"] += 1
            if other["latest_reading_ms"] is not None:
                total["latest_reading_ms"] = max(total["latest_reading_ms"] or 0, other["latest_reading_ms"])
            for k, v in other["open_anomalies_by_type"].items():
                total["open_anomalies_by_type"][k] = total["open_anomalies_by_type"].get(k, 0) + v
        latest_ms = total.pop("latest_reading_ms")
        total["latest_reading"] = format_ms(latest_ms) if latest_ms is not None else None
        return self._ok(request, total)


def _channel(request: web.Request) -> str:
    channel = _param(request, "channel") or "E1"
    if not _CHANNEL_RE.match(channel):
        raise _BadRequest("invalid_channel", "channel must be 1-8 letters or digits", "channel")
    return channel


def _check_range(start: int, end: int) -> None:
    if not start < end or end - start > _MAX_RANGE_DAYS * SIZES["1d"]:
        raise _BadRequest("invalid_range", f"need from < to, at most {_MAX_RANGE_DAYS} days apart", "from")


def attach_api(
    app: faust.App, settings: Settings, device_state: Any, days: Any, recent: Any, forecasts: Any
) -> ApiService:
    api = ApiService(app, settings, device_state, days, recent, forecasts)
    routes = {
        "/v1/devices": api.devices,
        "/v1/devices/{device_id}": api.device,
        "/v1/devices/{device_id}/aggregates": api.aggregates,
        "/v1/devices/{device_id}/readings": api.readings,
        "/v1/devices/{device_id}/forecast": api.forecast,
        "/v1/anomalies": api.anomalies,
        "/v1/fleet": api.fleet,
        "/v1/fleet/consumption": api.consumption,
        "/v1/sites": api.site_list,
    }
    for path, handler in routes.items():
        _get_view(app, path, api, handler)
    return api


def _get_view(app: faust.App, path: str, api: ApiService, handler: Any) -> None:
    """Register a GET view at ``path``: auth, then ``handler(request, *path parameters)``."""

    class ReadView(faust.web.View):  # type: ignore[misc]
        async def get(self, request: web.Request, **params: str) -> web.Response:
            return await api.guard(request, handler, *params.values())

    app.page(path, name=f"api:{path}")(ReadView)
