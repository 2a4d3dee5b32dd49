"""The /v1 read API on real workers, checked against values computed independently from
the reference's outputs (not through the aggregates code the API uses)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Any

import orjson
import pytest

from aurora_streams.codecs import decode_output
from aurora_streams.domain.timeutil import format_ms
from aurora_streams.simulator import SimConfig, SimMessage, generate
from tests.integration.harness import Deployment, Expected, Worker, latest_by, reference
from tests.integration.test_pipeline import FLEET

READ, INGEST = "r" * 24, "i" * 24
SIZES = {"15m": 900_000, "1h": 3_600_000, "1d": 86_400_000}


def get(w: Worker, path: str, token: str | None = READ) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{w.port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def tokens(dep: Deployment) -> None:
    dep.extra_env["AURORA_API_TOKENS"] = json.dumps(
        {"viewer": {"token": READ, "roles": ["read"]}, "loader": {"token": INGEST, "roles": ["ingest"]}}
    )


def expected_buckets(
    records: dict[str, dict[str, Any]], device: str, channel: str, size: int
) -> list[dict[str, Any]]:
    # Validated energy in the sum; suspicious jumps and future-stamped readings beside it.
    acc: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for r in records.values():
        if r["device_id"] == device and r["channel"] == channel and r["delta_kwh"] is not None:
            at = r["ts_end"] - 1
            unvalidated = {"suspicious_jump", "future_timestamp"} & set(r["flags"])
            acc[at - at % size][1 if unvalidated else 0].append(r["delta_kwh"])
    return [
        {"start": format_ms(b), "end": format_ms(b + size), "sum": pytest.approx(sum(v)), "count": len(v),
         "min": min(v, default=None), "max": max(v, default=None), "excluded_sum": pytest.approx(sum(x)),
         "excluded_count": len(x)}
        for b, (v, x) in sorted(acc.items())
    ]  # fmt: skip


def check_device(w: Worker, expected: Expected, records: dict[str, dict[str, Any]], device: str) -> None:
    from aurora_streams.domain.device import DeviceState

    state = DeviceState.from_bytes(expected.states[device])
    status, body = get(w, f"/v1/devices/{device}")
    assert status == 200, body
    got = {c["channel"]: c["latest"] for c in body["channels"]}
    for name, ch in state.channels.items():
        last = ch.entries[-1]
        assert got[name]["ts_end"] == format_ms(last.ts) and got[name]["value"] == last.value
        assert got[name]["revision"] == last.revision and got[name]["delta"] == last.delta
    assert body["last_offset"] == state.last_offset
    for name in state.channels:
        times = [r["ts_end"] for r in records.values() if r["device_id"] == device and r["channel"] == name]
        lo, hi = min(times) - 86_400_000, max(times) + 86_400_000
        for size_name, size in SIZES.items():
            status, agg = get(
                w, f"/v1/devices/{device}/aggregates?size={size_name}&channel={name}&from={lo}&to={hi}"
            )
            assert status == 200, agg
            assert agg["items"] == expected_buckets(records, device, name, size), (device, name, size_name)


def test_two_workers_answer_every_device_the_same_through_either_port(deployment: Deployment) -> None:
    tokens(deployment)
    cfg = SimConfig(**{**FLEET.__dict__, "seed": 41, "devices": 40, "malformed_rate": 0.0})
    sent = deployment.produce(generate(cfg, limit=3000))
    s = deployment.settings
    expected = reference(s, deployment.read(s.topic_raw, until=lambda r: len(r) >= sent))
    a, b = deployment.start_worker("a"), deployment.start_worker("b")
    a.wait_ready()
    b.wait_ready()
    n = len(expected.outputs[s.topic_normalized])
    deployment.read(s.topic_normalized, until=lambda r: len(r) >= n)
    records = latest_by(expected.outputs[s.topic_normalized], "event_id")
    devices = sorted(expected.states)
    # States and views are stored at each worker's checkpoint, after the normalized records
    # (README, Guarantees), and the two workers' checkpoints are up to an interval apart: a
    # device the other worker owns can still be unstored when the last device answers. Wait
    # until every device answers fully through either port.
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            for device in devices:
                for w in (a, b):
                    check_device(w, expected, records, device)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    # ?scope=local answers only from the worker that owns the device, never from a standby's
    # copy (which may be stale): exactly one of the two answers, the other says not_local.
    for device in devices:
        answers = [get(w, f"/v1/devices/{device}?scope=local") for w in (a, b)]
        assert sorted(status for status, _ in answers) == [200, 404], (device, answers)
        assert next(body for status, body in answers if status == 404)["error"]["reason"] == "not_local"
    # Fleet-wide answers merge both workers without double counting standby replicas.
    for w in (a, b):
        status, fleet = get(w, "/v1/fleet")
        assert status == 200 and fleet["devices"] == len(devices) and fleet["workers"] == 2
        listed: list[str] = []
        cursor = ""
        while True:
            status, page = get(w, f"/v1/devices?limit=7&cursor={cursor}")
            listed += [d["device_id"] for d in page["items"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert listed == devices
        anomaly_ids = {decode_output(v)["anomaly_id"] for v in expected.outputs[s.topic_anomalies]}
        status, page = get(w, "/v1/anomalies?limit=1000")
        assert {e["anomaly_id"] for e in page["items"]} == anomaly_ids
        check_fleet(w, deployment, expected)


def test_late_and_revised_readings_move_exactly_their_windows_and_replays_change_nothing(
    deployment: Deployment,
) -> None:
    tokens(deployment)
    t0 = 1_735_653_600_000  # 2025-01-01T00:00+10:00 = 2024-12-31T14:00Z
    step = 900_000

    def msg(i: int, value: float, **extra: Any) -> SimMessage:
        doc = {"device_id": "m1", "ts": t0 + i * step, "kind": "interval", "value": value, "unit": "kWh",
               "interval_s": 900, **extra}  # fmt: skip
        return SimMessage(b"m1", orjson.dumps(doc), t0 + i * step + 5000)

    first = [msg(i, 1.0, quality="E", method="52", updated_at=t0) for i in range(1, 9) if i != 3]
    deployment.produce(first)
    w = deployment.start_worker("solo")
    w.wait_ready()
    query = f"/v1/devices/m1/aggregates?size=1h&from={t0}&to={t0 + 2 * 3_600_000}"

    def hours() -> list[tuple[float, int]]:
        import time

        for _ in range(100):
            status, body = get(w, query)
            if status == 200:
                return [(round(b["sum"], 6), b["count"]) for b in body["items"]]
            time.sleep(0.3)
        raise TimeoutError(query)

    import time

    deadline = time.monotonic() + 30
    while hours() != [(3.0, 3), (4.0, 4)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert hours() == [(3.0, 3), (4.0, 4)]  # interval 3 (00:30-00:45) is missing
    deployment.produce([msg(3, 2.0, quality="A", updated_at=t0 + 1)])  # late: fills the first hour only
    deployment.produce([msg(6, 5.0, quality="A", updated_at=t0 + 2)])  # revision of 01:15-01:30
    deadline = time.monotonic() + 30
    while hours() != [(5.0, 4), (8.0, 4)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert hours() == [(5.0, 4), (8.0, 4)]
    deployment.produce([*first, msg(3, 2.0, quality="A", updated_at=t0 + 1)])  # a replay of everything
    time.sleep(3)
    assert hours() == [(5.0, 4), (8.0, 4)]


READ_PATHS = [
    "/v1/devices",
    "/v1/devices/m1",
    "/v1/devices/m1/aggregates",
    "/v1/anomalies",
    "/v1/fleet",
    "/v1/fleet/consumption?from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z",
    "/v1/sites",
]


@pytest.mark.parametrize("path", READ_PATHS)
def test_read_endpoints_reject_missing_bad_and_wrong_role(http_worker: Worker, path: str) -> None:
    status, err = get(http_worker, path, token=None)
    assert status == 401 and err["error"]["reason"] == "missing_token" and err["error"]["request_id"]
    assert get(http_worker, path, token="x" * 30)[0] == 401
    status, err = get(http_worker, path, token=INGEST)
    assert status == 403 and err["error"]["reason"] == "forbidden"
    assert get(http_worker, path)[0] in (200, 404)


def test_health_and_openapi_are_open(http_worker: Worker) -> None:
    assert get(http_worker, "/healthz", token=None)[0] == 200
    status, doc = get(http_worker, "/openapi.json", token=None)
    assert (
        status == 200
        and doc["openapi"].startswith("3.1")
        and "/v1/devices/{device_id}/aggregates" in doc["paths"]
    )


def test_bad_parameters_are_400_with_the_field(http_worker: Worker) -> None:
    for query, field in [("size=2h", "size"), ("from=yesterday", "from"), ("limit=0", "limit"),
                         ("from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z", "from")]:  # fmt: skip
        status, err = get(http_worker, f"/v1/devices/m1/aggregates?{query}")
        assert status == 400 and err["error"]["field"] == field, query
    # The fleet's totals are kept per window: a range must start and end on the size's windows.
    status, err = get(
        http_worker, "/v1/fleet/consumption?size=1h&from=2025-01-01T00:30:00Z&to=2025-01-02T00:00:00Z"
    )
    assert status == 400 and err["error"]["reason"] == "unaligned_range"


@pytest.fixture(scope="module")
def http_worker(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    dep = Deployment(broker, tmp_path_factory.mktemp("api"))
    dep.create_topics()
    tokens(dep)
    w = dep.start_worker("api")
    w.wait_ready()
    yield w
    dep.stop_all()


def test_fleet_and_site_consumption_totals(deployment: Deployment, tmp_path: Any) -> None:
    import time

    tokens(deployment)
    sites = tmp_path / "sites.json"
    sites.write_text(json.dumps({"n1": "north", "n2": "north", "s1": "south"}))
    deployment.extra_env["AURORA_SITES_FILE"] = str(sites)
    t0 = 1_735_653_600_000
    msgs = []
    for device, channel, value, direction in [
        ("n1", "E1", 1.0, None),
        ("n2", "E1", 2.0, None),
        ("n2", "B1", 0.5, None),
        ("s1", "E1", 4.0, None),
        ("s1", "41", 0.25, "generation"),  # a NEM13 suffix: its direction declared
        ("s1", "11", 8.0, None),  # neither named nor declared: in no column
    ]:
        for i in range(1, 5):  # four half hours: 00:00-02:00
            doc = {"device_id": device, "channel": channel, "ts": t0 + i * 1_800_000, "kind": "interval",
                   "value": value, "unit": "kWh", "interval_s": 1800, "direction": direction}  # fmt: skip
            msgs.append(SimMessage(device.encode(), orjson.dumps(doc), t0 + i * 1_800_000 + 1000))
    deployment.produce(msgs)
    w = deployment.start_worker("sites")
    w.wait_ready()
    query = f"/v1/fleet/consumption?size=1h&from={t0}&to={t0 + 2 * 3_600_000}"
    deadline = time.monotonic() + 30
    while True:
        status, body = get(w, query + "&site=north")
        if (
            status == 200 and [i["import_kwh"] for i in body["items"]] == [6.0, 6.0]
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(i["import_kwh"], i["export_kwh"]) for i in body["items"]] == [(6.0, 1.0), (6.0, 1.0)]
    status, fleet = get(w, query)
    assert [(i["import_kwh"], i["export_kwh"]) for i in fleet["items"]] == [(14.0, 1.5), (14.0, 1.5)]
    assert get(w, query + "&site=nowhere")[0] == 404
    status, listed = get(w, "/v1/sites")
    assert listed["items"] == [{"site": "north", "devices": 2}, {"site": "south", "devices": 1}]


def expected_fleet(dep: Deployment, expected: Expected) -> tuple[dict[str, Any], dict[int, list[float]]]:
    """From the reference alone: the fleet's devices, channels and newest reading (its final
    states), and per UTC day its validated import and export kWh, channel-days and excluded
    kWh (the latest revision of every normalized record)."""
    from aurora_streams.domain.device import DeviceState

    states = [DeviceState.from_bytes(b) for b in expected.states.values()]
    latest = max((ts for st in states if (ts := st.latest_ts()) is not None), default=None)
    summary = {
        "devices": len(states),
        "channels": sum(len(st.channels) for st in states),
        "latest_reading": format_ms(latest) if latest is not None else None,
    }
    days: dict[int, list[float]] = {}
    channel_days: set[tuple[str, str, int]] = set()
    for r in latest_by(expected.outputs[dep.settings.topic_normalized], "event_id").values():
        if r["delta_kwh"] is None or r["unit"] != "kWh":
            continue
        direction = r.get("direction") or {"E": "consumption", "B": "generation"}.get(r["channel"][:1])
        if direction is None:
            continue
        day = (r["ts_end"] - 1) // SIZES["1d"] * SIZES["1d"]
        row = days.setdefault(day, [0.0, 0.0, 0.0, 0.0])
        unvalidated = {"suspicious_jump", "future_timestamp", "quality_unresolved"} & set(r["flags"])
        if unvalidated:
            row[3] += r["delta_kwh"]
        else:
            row[0 if direction == "consumption" else 1] += r["delta_kwh"]
        channel_days.add((r["device_id"], r["channel"], day))
    for _device, _channel, day in channel_days:
        days[day][2] += 1
    return summary, days


def check_fleet(w: Worker, dep: Deployment, expected: Expected, timeout_s: float = 60.0) -> None:
    """/v1/fleet and /v1/fleet/consumption (read from the partitions' stored summaries) equal
    what the reference gives, once the worker's last checkpoint is stored; open anomalies by
    type equal those counted over /v1/anomalies."""
    import time

    summary, days = expected_fleet(dep, expected)
    first, last = min(days), max(days) + SIZES["1d"]
    deadline = time.monotonic() + timeout_s
    while True:
        status, fleet = get(w, "/v1/fleet")
        got = {k: fleet.get(k) for k in summary}
        status_c, body = get(w, f"/v1/fleet/consumption?size=1d&from={first}&to={last}")
        got_days = {
            d: [i["import_kwh"], i["export_kwh"], i["channel_windows"], i["excluded_kwh"]]
            for i in body.get("items", [])
            for d in [int(parse_ms(i["start"]))]
        }
        listed: list[dict[str, Any]] = []
        cursor = ""
        while True:
            _, page = get(
                w, f"/v1/anomalies?limit=1000&cursor={cursor}" if cursor else "/v1/anomalies?limit=1000"
            )
            listed += page["items"]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        open_types: dict[str, int] = defaultdict(int)
        for e in listed:
            if not e["cleared"]:
                open_types[e["type"]] += 1
        ok = (
            status == 200
            and status_c == 200
            and got == summary
            and fleet["open_anomalies_by_type"] == dict(open_types)
            and got_days.keys() == days.keys()
            and all(got_days[d] == pytest.approx(days[d], abs=1e-6) for d in days)
        )
        if ok or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got == summary
    assert fleet["open_anomalies_by_type"] == dict(open_types)
    assert got_days.keys() == days.keys()
    for d in days:
        assert got_days[d] == pytest.approx(days[d], abs=1e-6), format_ms(d)


def parse_ms(text: str) -> int:
    from aurora_streams.domain.timeutil import parse_timestamp

    return parse_timestamp(text)
