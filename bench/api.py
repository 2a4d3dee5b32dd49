"""HTTP view latency: a device's day of 15-minute aggregates at a steady request rate.

    .venv/bin/python bench/api.py [--rate 200] [--seconds 20] [--devices 300] [--runs 3]

Starts an embedded broker and one worker, loads a simulated fleet (5-minute registers and
30-minute intervals over a few days), then sends an open-loop stream of requests at
``--rate`` per second (each for a random device's 24 hours of 15-minute windows), and
reports p50/p99/max latency. In the same run it measures ``/healthz`` the same way: the
floor of the web stack. Results go to ``bench/results/api-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time

import aiohttp
from common import ROOT, WebPlatform, pct, write_report

from aurora_streams.simulator import SimConfig, generate, produce

TOKEN = "b" * 32
T0 = 1_735_653_600_000


async def load(url: str, paths: list[str], rate: float, seconds: float) -> list[float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=200)) as session:

        async def one(path: str) -> None:
            started = time.perf_counter()
            async with session.get(url + path) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{path}: {resp.status}")
            latencies.append(time.perf_counter() - started)

        tasks = []
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(random.choice(paths))))
        await asyncio.gather(*tasks)
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--devices", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, WebPlatform(tmp, TOKEN) as plat:
        cfg = SimConfig(devices=args.devices, seed=5, start_ms=T0, encoding="json")
        sent = produce(
            generate(cfg, duration_s=3 * 86_400),
            bootstrap=plat.settings.bootstrap_servers,
            topic=plat.settings.topic_raw,
            progress=False,
        )
        plat.start_worker()
        url = plat.url
        day_from, day_to = T0 + 86_400_000, T0 + 2 * 86_400_000
        paths = [
            f"/v1/devices/meter-{i:06d}/aggregates?size=15m&from={day_from}&to={day_to}"
            for i in range(args.devices)
        ]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the last device's day is in the views
            try:
                if len(plat.get(paths[-1], timeout_s=5)["items"]) >= 40:  # 48 (30-min) or 96 (5-min)
                    break
            except OSError:
                pass
            time.sleep(1)
        runs = []
        for i in range(args.runs):
            agg = asyncio.run(load(url, paths, args.rate, args.seconds))
            health = asyncio.run(load(url, ["/healthz"], args.rate, args.seconds))
            r = {
                "aggregates_p50_ms": 1000 * pct(agg, 0.5),
                "aggregates_p99_ms": 1000 * pct(agg, 0.99),
                "aggregates_max_ms": 1000 * max(agg),
                "healthz_p50_ms": 1000 * pct(health, 0.5),
                "healthz_p99_ms": 1000 * pct(health, 0.99),
                "requests": len(agg),
            }
            runs.append(r)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
    summary = {
        k: {"min": min(r[k] for r in runs), "median": statistics.median(r[k] for r in runs)} for k in runs[0]
    }
    report = {
        "workload": {
            "devices": args.devices,
            "raw_messages": sent,
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "workers": 1,
        },
        "summary": summary,
        "runs": runs,
    }
    out = write_report("api", "a device's day of 15-minute aggregates over HTTP (issue 4)", report)
    print(json.dumps(summary, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
