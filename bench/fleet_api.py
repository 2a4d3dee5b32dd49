"""Fleet views at fleet scale: ``/v1/fleet``, ``/v1/fleet/consumption`` and a page of
``/v1/devices`` over 100,000 devices, with ``/healthz`` measured under the same load
(issue 21: at 92,000 devices the fleet view took 37.6 s and ``/healthz`` waited 36.8 s
behind it).

    .venv/bin/python bench/fleet_api.py [--devices 100000] [--seconds 20] [--connections 20]

Starts an embedded broker and one worker, loads a simulated fleet (the simulator's mix of
register and interval meters, ``--hours`` of readings each), waits until ``/v1/fleet``
counts every device (so the summaries are checked at scale, not only timed), then for
``--seconds`` keeps ``--connections`` clients busy taking turns over the three views while
one more client polls ``/healthz`` every 50 ms. Reports requests/s and p50/p99/max per
endpoint. Results go to ``bench/results/fleet-api-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
from common import ROOT, WebPlatform, pct, write_report

from aurora_streams.simulator import SimConfig, SimMessage, generate, produce

TOKEN = "f" * 32
T0 = 1_735_653_600_000  # 2025-01-01T00:00+10:00
DAY = 86_400_000


async def load(url: str, paths: list[str], connections: int, seconds: float) -> dict[str, list[float]]:
    """``connections`` closed-loop clients over ``paths`` and one /healthz poller."""
    latencies: dict[str, list[float]] = {p.split("?")[0]: [] for p in [*paths, "/healthz"]}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(
        headers=headers, connector=aiohttp.TCPConnector(limit=connections + 1)
    ) as session:

        async def one(path: str) -> None:
            started = time.perf_counter()
            async with session.get(url + path) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{path}: {resp.status}")
            latencies[path.split("?")[0]].append(time.perf_counter() - started)

        async def client(i: int) -> None:
            n = i
            while time.perf_counter() < stop:
                await one(paths[n % len(paths)])
                n += 1

        async def health() -> None:
            while time.perf_counter() < stop:
                await one("/healthz")
                await asyncio.sleep(0.05)

        await asyncio.gather(*(client(i) for i in range(connections)), health())
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--hours", type=float, default=1.0, help="simulated hours of readings per device")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, WebPlatform(tmp, TOKEN) as plat:
        cfg = SimConfig(devices=args.devices, seed=7, start_ms=T0, encoding="json")
        started = time.monotonic()
        keys: set[bytes] = set()

        def counted() -> Iterator[SimMessage]:
            for m in generate(cfg, duration_s=int(args.hours * 3600)):
                keys.add(m.key)
                yield m

        sent = produce(
            counted(),
            bootstrap=plat.settings.bootstrap_servers,
            topic=plat.settings.topic_raw,
            progress=False,
        )
        # A meter whose first reading falls after --hours sends nothing: it is not in the fleet.
        devices = len(keys)
        print(f"{sent:,} raw readings from {devices:,} meters in {time.monotonic() - started:.0f} s")
        plat.start_worker()
        url = plat.url
        started = time.monotonic()
        fleet: dict[str, Any] = {}
        while time.monotonic() - started < 900:  # until the summaries count every device
            try:
                fleet = plat.get("/v1/fleet")
                if fleet["devices"] >= devices:
                    break
            except OSError:
                pass
            time.sleep(2)
        loaded_s = time.monotonic() - started
        print(f"/v1/fleet counts {fleet.get('devices'):,} devices after {loaded_s:.0f} s: {fleet}")
        if fleet.get("devices") != devices:
            raise SystemExit(f"the fleet view counts {fleet.get('devices')} of {devices} meters that sent")
        time.sleep(10)  # the last checkpoint, then a quiet worker
        day = (T0 // DAY) * DAY
        paths = [
            "/v1/fleet",
            f"/v1/fleet/consumption?size=15m&from={day}&to={day + 2 * DAY}",
            "/v1/devices?limit=100&cursor=meter-050000",
        ]
        consumption = plat.get(paths[1])
        lat = asyncio.run(load(url, paths, args.connections, args.seconds))
    endpoints = {
        path: {
            "requests": len(values),
            "requests_per_s": round(len(values) / args.seconds, 1),
            "p50_ms": round(1000 * pct(values, 0.5), 2),
            "p99_ms": round(1000 * pct(values, 0.99), 2),
            "max_ms": round(1000 * max(values), 2),
        }
        for path, values in lat.items()
    }
    report = {
        "workload": {
            "devices": args.devices,
            "devices_that_sent": devices,
            "raw_messages": sent,
            "connections": args.connections,
            "seconds": args.seconds,
            "workers": 1,
        },
        "fleet": fleet,
        "consumption_windows": len(consumption["items"]),
        "consumption_import_kwh": round(sum(i["import_kwh"] for i in consumption["items"]), 3),
        "seconds_until_every_device_counted": round(loaded_s, 1),
        "endpoints": endpoints,
    }
    out = write_report("fleet-api", "fleet views at 100,000 devices, /healthz beside them (issue 21)", report)
    print(json.dumps(endpoints, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
