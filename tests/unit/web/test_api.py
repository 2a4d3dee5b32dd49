"""The read API's handlers in process: aiohttp's test client against
:func:`aurora_streams.web.api.application` over real RocksDB stores filled by the worker's
core (``stores.py``). No broker and no worker: routing and fan-out between workers are
tested through workers in ``tests/integration/test_api.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from aurora_streams.domain.timeutil import parse_timestamp
from aurora_streams.errors import InvalidQuery
from aurora_streams.settings import ApiToken, Settings
from aurora_streams.web import api
from aurora_streams.web.api import application

from .stores import RdictStores, fill

DAY0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
Q = 900_000  # 15 minutes
BROKER_TS = DAY0 + 3 * 86_400_000  # after every reading: none is future-stamped
READER = "r" * 20
HEADERS = {"Authorization": f"Bearer {READER}"}


def _interval(device: str, i: int, kwh: float, channel: str = "E1") -> dict[str, Any]:
    return {"device_id": device, "channel": channel, "ts": DAY0 + (i + 1) * Q, "kind": "interval",
            "interval_s": 900, "value": kwh, "unit": "kWh"}  # fmt: skip


def _register(device: str, i: int, value: float) -> dict[str, Any]:
    return {"device_id": device, "ts": DAY0 + (i + 1) * Q, "kind": "register", "value": value, "unit": "kWh"}


def _messages() -> list[tuple[str, dict[str, Any], int]]:
    """Two days of 15-minute readings: ``m1`` (interval, 0.2 and 0.3 kWh in turn) on
    partition 0; ``m2`` (a register rising 0.5 kWh, stepping back once at reading 60) and
    ``solar`` (export channel B1, 0.05 and 0.15 kWh in turn) on partition 1."""
    out: list[tuple[str, dict[str, Any], int]] = []
    register = 1000.0
    for i in range(192):
        out.append(("m1", _interval("m1", i, 0.3 if i % 2 else 0.2), 0))
        register += -3.0 if i == 60 else 0.5
        out.append(("m2", _register("m2", i, register), 1))
        out.append(("solar", _interval("solar", i, 0.15 if i % 2 else 0.05, channel="B1"), 1))
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Any:
    filled = RdictStores(Path(tmp_path_factory.mktemp("stores")))
    fill(filled, _messages(), BROKER_TS)
    yield filled
    filled.close()


@pytest_asyncio.fixture
async def client(stores: RdictStores) -> AsyncIterator[TestClient[Any, Any]]:
    stores.active_partitions = [0, 1]
    settings = Settings(api_tokens={"reader": ApiToken(token=READER, roles=["read"])})  # type: ignore[arg-type]
    async with TestClient(TestServer(application(stores, settings))) as c:
        yield c


async def _get(client: TestClient[Any, Any], path: str, *, status: int = 200, **params: Any) -> Any:
    resp = await client.get(path, params=params, headers=HEADERS)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_fleet_counts_every_active_partition_and_only_those(
    client: TestClient[Any, Any], stores: RdictStores
) -> None:
    body = await _get(client, "/v1/fleet")
    assert (body["devices"], body["channels"], body["workers"]) == (3, 3, 1)
    assert body["latest_reading"] == "2025-01-03T00:00:00.000Z"
    assert sum(body["open_anomalies_by_type"].values()) >= 1
    stores.active_partitions = [0]  # partition 1 is a standby's copy here: never counted
    body = await _get(client, "/v1/fleet")
    assert (body["devices"], body["channels"], body["open_anomalies_by_type"]) == (1, 1, {})


async def test_devices_page_in_id_order_with_a_cursor(client: TestClient[Any, Any]) -> None:
    first = await _get(client, "/v1/devices", limit=2)
    assert [d["device_id"] for d in first["items"]] == ["m1", "m2"]
    assert first["next_cursor"] == "m2"
    rest = await _get(client, "/v1/devices", limit=2, cursor=first["next_cursor"])
    assert rest == {"items": [{"device_id": "solar"}], "next_cursor": None}


async def test_a_device_and_an_unknown_one(client: TestClient[Any, Any]) -> None:
    body = await _get(client, "/v1/devices/m2")
    (channel,) = body["channels"]
    assert (channel["channel"], channel["kind"], channel["latest"]["value"]) == ("E1", "register", 1092.5)
    assert channel["latest"]["ts_end"] == "2025-01-03T00:00:00.000Z"
    error = (await _get(client, "/v1/devices/nobody", status=404))["error"]
    assert (error["status"], error["reason"]) == (404, "unknown_device") and error["request_id"]


async def test_hourly_aggregates_sum_the_readings_and_page_by_cursor(client: TestClient[Any, Any]) -> None:
    window = {"from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z", "size": "1h"}
    body = await _get(client, "/v1/devices/m1/aggregates", **window)
    assert len(body["items"]) == 24 and body["next_cursor"] is None
    assert {round(item["sum"], 9) for item in body["items"]} == {1.0}
    assert {item["count"] for item in body["items"]} == {4}
    page = await _get(client, "/v1/devices/m1/aggregates", **window, limit=10)
    assert len(page["items"]) == 10
    more = await _get(client, "/v1/devices/m1/aggregates", **window, limit=10, cursor=page["next_cursor"])
    assert more["items"][0]["start"] == "2025-01-01T10:00:00.000Z"


async def test_readings_are_the_deltas_in_time_order(client: TestClient[Any, Any]) -> None:
    body = await _get(
        client, "/v1/devices/m2/readings", **{"from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z"}
    )
    deltas = [item["delta"] for item in body["items"]]
    assert len(deltas) == 95  # [from, to): the reading ending at midnight is the next day's
    # The first reading anchors the register; the backward step at reading 60 books nothing
    # (a correction is flagged, not energy).
    assert deltas[0] is None and deltas[60] is None and set(deltas[1:60] + deltas[61:]) == {0.5}
    assert [item["ts_end"] for item in body["items"]] == sorted(item["ts_end"] for item in body["items"])


async def test_anomalies_newest_first_filtered_and_paged(client: TestClient[Any, Any]) -> None:
    body = await _get(client, "/v1/anomalies")
    events = body["items"]
    assert events and {e["device_id"] for e in events} == {"m2"}
    assert [e["ts_end"] for e in events] == sorted((e["ts_end"] for e in events), reverse=True)
    kind = events[0]["type"]
    only = await _get(client, "/v1/anomalies", type=kind)
    assert only["items"] and {e["type"] for e in only["items"]} == {kind}
    assert (await _get(client, "/v1/anomalies", device="m1"))["items"] == []
    if len(events) > 1:
        first = await _get(client, "/v1/anomalies", limit=1)
        second = await _get(client, "/v1/anomalies", limit=1, cursor=first["next_cursor"])
        assert second["items"][0]["anomaly_id"] == events[1]["anomaly_id"]


async def test_a_devices_anomalies_and_a_list_stored_by_an_earlier_version(
    client: TestClient[Any, Any], stores: RdictStores
) -> None:
    """One device's anomalies are its event keys; a device whose list an earlier version
    stored whole under its id is answered from that list until its next anomaly."""
    fleet = (await _get(client, "/v1/anomalies"))["items"]
    assert (await _get(client, "/v1/anomalies", device="m2"))["items"] == fleet
    old = [{**e, "device_id": "old", "anomaly_id": "old" + e["anomaly_id"][2:]} for e in fleet[:2]]
    for e in old:  # stored as the worker stores them: instants as epoch ms
        e["ts_end"], e["detected_at"] = parse_timestamp(e["ts_end"]), parse_timestamp(e["detected_at"])
    stores.put("recent", 0, "old", orjson.dumps(old))
    try:
        mine = (await _get(client, "/v1/anomalies", device="old"))["items"]
        assert [e["anomaly_id"] for e in mine] == [e["anomaly_id"] for e in old]
        both = (await _get(client, "/v1/anomalies"))["items"]
        assert {e["device_id"] for e in both} == {"m2", "old"} and len(both) == len(fleet) + len(old)
    finally:
        del stores.dbs["recent"][0][b"old"]


async def test_fleet_consumption_books_import_and_export_per_window(client: TestClient[Any, Any]) -> None:
    hours = {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T03:00:00Z"}
    body = await _get(client, "/v1/fleet/consumption", size="1h", **hours)
    assert [item["start"] for item in body["items"]] == [
        "2025-01-01T00:00:00.000Z", "2025-01-01T01:00:00.000Z", "2025-01-01T02:00:00.000Z",
    ]  # fmt: skip
    # m1 1.0 and m2 4 x 0.5 imported, solar 0.4 exported, three channels each; m2's first
    # register reading is its anchor and books no energy.
    booked = [(item["import_kwh"], item["export_kwh"], item["channel_windows"]) for item in body["items"]]
    assert booked == [(2.5, 0.4, 3), (3.0, 0.4, 3), (3.0, 0.4, 3)]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/devices", {"limit": "²"}, "limit"),
        ("/v1/anomalies", {"since": "--5"}, "since"),
        ("/v1/anomalies", {"limit": "1" * 5000}, "limit"),
        ("/v1/anomalies", {"cursor": "x"}, "cursor"),
        ("/v1/devices/m1/aggregates", {"size": "7m"}, "size"),
        ("/v1/devices/m1/aggregates", {"to": "2025-01-02T00:00:00Z", "cursor": "2000000000000"}, "cursor"),
        ("/v1/devices/m1/aggregates", {"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "from"),
        ("/v1/devices/bad%20id", {}, "device_id"),
        ("/v1/devices/m1/forecast", {"horizon": "0"}, "horizon"),
        ("/v1/fleet/consumption", {"size": "1h"}, "from"),
        ("/v1/fleet/consumption", {"from": "2025-01-01T00:10:00Z", "to": "2025-01-01T02:00:00Z"}, "from"),
    ],
)
async def test_a_malformed_parameter_is_a_400_naming_it(
    client: TestClient[Any, Any], path: str, params: dict[str, str], field: str
) -> None:
    error = (await _get(client, path, status=400, **params))["error"]
    assert (error["status"], error["field"]) == (400, field)


async def test_reading_needs_the_read_role(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/fleet")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["error"]["reason"] == "missing_token"
    resp = await client.get("/v1/fleet", headers={"Authorization": "Bearer " + "w" * 20})
    assert resp.status == 401 and READER not in await resp.text()


# -- parameter parsing: superscript digits, ``--5`` and numbers over 4,300 digits were 500s ------


def request(query: str):  # type: ignore[no-untyped-def]
    return make_mocked_request("GET", f"/v1/anomalies?{query}")


@pytest.mark.parametrize("raw", ["%C2%B2", "-1", "0", "1001", "1" * 5000, "1e3", "+5", " 5"])
def test_a_bad_limit_is_a_400(raw: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        api._limit(request(f"limit={raw}"))
    assert (info.value.reason, info.value.field) == ("invalid_limit", "limit")


def test_a_good_limit() -> None:
    assert api._limit(request("limit=25")) == 25
    assert api._limit(request("")) == 100


@pytest.mark.parametrize("raw", ["--5", "%C2%B2", "1" * 5000, "yesterday", "9" * 15, "-9" * 3])
def test_a_bad_instant_is_a_400(raw: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        api._instant(request(f"since={raw}"), "since")
    assert (info.value.reason, info.value.field) == ("invalid_time", "since")


def test_good_instants() -> None:
    assert api._instant(request("since=1735689600000"), "since") == 1_735_689_600_000
    assert api._instant(request("since=2025-01-01T00:00:00Z"), "since") == 1_735_689_600_000
    assert api._instant(request(""), "since") is None


@pytest.mark.parametrize(
    ("raw", "want"), [("12", 12), ("²", None), ("", None), ("1" * 16, None), ("-1", None)]
)
def test_digits(raw: str, want: int | None) -> None:
    assert api._digits(raw) == want
