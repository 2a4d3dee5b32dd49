"""Footprint: what a running platform costs in memory, disk and broker bytes (issue 24).

For each meter count it runs what ``aurora-streams dev`` runs (the embedded broker, a worker,
the simulator at ``--rate``), each by its pid, for ``--minutes``, and samples every
``--sample-s`` seconds from outside:

* the worker's RSS (from /proc) and its data dir (allocated bytes);
* the bytes the worker's producer sent per topic (``aurora_produced_bytes_total``: its
  record batches as the broker appends them, compressed, outputs and table changelogs),
  and the readings it processed;
* the raw topic's own bytes: its log segments on the broker (a delete-policy topic, so
  nothing is cleaned from it during the run).

The report gives, per meter count, RSS over time (at minute 2 and at the end, the growth
between them, the maximum, the peak of each 5 minutes, and the growth of the peak from
``--warm-up-min`` to the last minute) and bytes appended per reading by topic beside the raw
topic's.

``--check`` is the CI-sized form: it exits 1 when the worker's peak RSS grew more than
``--max-growth`` (10%) between ``--warm-up-min`` (2) and the last minute. What a worker
holds fills with simulated time (a forecaster's 14 days of history, an hour-of-day profile,
RocksDB's cache up to its budget): at 2,000 readings/s, 14 simulated days take 100 s at 50
meters and 34 minutes at 1,000, so a 5-minute check at 1,000 meters sees state filling, not
a leak.

Usage: .venv/bin/python bench/footprint.py --minutes 30 --devices 1000 10000
       .venv/bin/python bench/footprint.py --minutes 5 --devices 1000 --check
Writes bench/results/footprint-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import clean_env, free_port, write_report
from soak import RAW, Platform, _du_mb, _get, _processed, _rss_mb, produced_bytes


def raw_topic_bytes(broker_dir: Path) -> int:
    """The raw topic's log segments on the broker, all partitions (record batches as the
    producers sent them)."""
    return sum(f.stat().st_size for f in broker_dir.glob(f"**/{RAW}-*/*.log"))


def smaps_mb(pid: int) -> dict[str, float]:
    """The worker's resident memory by kind of mapping: the main malloc arena (``heap``),
    other anonymous mappings of 32 MB and more (glibc's thread arenas), of exactly 1 MiB
    (CPython's small-object arenas), other anonymous ones (large allocations mapped on their
    own) and shared libraries."""
    out: dict[str, float] = {}
    kind = ""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    parts = line.split()
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    name = parts[5] if len(parts) > 5 else ""
                    if name == "[heap]":
                        kind = "heap"
                    elif name:
                        kind = "files"
                    elif hi - lo >= 32 << 20:
                        kind = "thread_arenas"
                    elif hi - lo == 1 << 20:
                        kind = "python_arenas"
                    else:
                        kind = "other_anon"
                elif line.startswith("Rss:"):
                    out[kind] = out.get(kind, 0.0) + int(line.split()[1]) / 1024
    except OSError:
        return {}
    return {k: round(v, 1) for k, v in sorted(out.items())}


def _gauge_mb(metrics: str, name: str, unit: float = 2**20) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return round(float(line.rsplit(" ", 1)[1]) / unit, 1)
    return None


MEMORY_GAUGES = {
    "state_memory_mb": ("aurora_state_memory_bytes", 2**20),
    "malloc_in_use_mb": ("aurora_malloc_in_use_bytes", 2**20),
    "malloc_free_mb": ("aurora_malloc_free_bytes", 2**20),
    "python_blocks": ("aurora_python_allocated_blocks", 1),
}
"""Sample field -> (gauge, unit): RocksDB's cache, glibc's heap (in use, freed and kept) and
Python's allocated blocks."""


def _memory_gauges(metrics: str) -> dict[str, float | None]:
    return {field: _gauge_mb(metrics, name, unit) for field, (name, unit) in MEMORY_GAUGES.items()}


def run_one(devices: int, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"aurora-footprint-{devices}-"))
    web_port = free_port()
    env = {
        **clean_env(),
        "AURORA_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
        "AURORA_WEB_PORT": str(web_port),
        "AURORA_DATADIR": str(work / "data"),
        "PYTHONUNBUFFERED": "1",
        **args.worker_env,
    }
    plat = Platform(work, env, devices, args.rate)
    samples: list[dict[str, Any]] = []
    print(f"footprint: {devices} meters, {args.rate:g}/s, {args.minutes:g} min; work dir {work}", flush=True)
    try:
        plat.start()  # inside: an interrupt while it starts still stops what it started
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            status, metrics = _get(f"http://127.0.0.1:{web_port}/metrics")
            sample = {
                "t_s": round(elapsed, 1),
                "rss_mb": _rss_mb(plat.procs["worker"].pid),
                "rss_by_kind_mb": smaps_mb(plat.procs["worker"].pid),
                "worker_data_mb": round(_du_mb(work / "data") - _du_mb(work / "data" / "broker"), 1),
                "readings": sum(_processed(metrics).values()) if status == 200 else None,
                "produced_bytes": produced_bytes(metrics) if status == 200 else None,
                "raw_bytes": raw_topic_bytes(work / "data" / "broker"),
                **_memory_gauges(metrics if status == 200 else ""),
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            time.sleep(max(0.0, args.sample_s - (time.monotonic() - started - elapsed)))
    finally:
        plat.stop()
    return {"devices": devices, "summary": summarize(samples, args.warm_up_min * 60), "samples": samples}


def peak_growth(rows: list[dict[str, Any]], warm_up_s: float) -> dict[str, float] | None:
    """RSS growth from the end of the warm-up to the end, peak against peak: the highest
    sample within 30 s of ``warm_up_s`` and the highest of the last minute. A single sample
    swings by an epoch's buffers (+-10% at 1,000 meters) either way; a peak does not fall
    when memory is only moved, and a leak or a cache still filling raises both the same."""
    at = [s["rss_mb"] for s in rows if abs(s["t_s"] - warm_up_s) <= 30]
    end = [s["rss_mb"] for s in rows if s["t_s"] >= rows[-1]["t_s"] - 60]
    if not at or rows[-1]["t_s"] - warm_up_s < 90:
        return None
    return {
        "from_s": warm_up_s,
        "peak_at_mb": round(max(at), 1),
        "peak_last_minute_mb": round(max(end), 1),
        "growth": round(max(end) / max(at) - 1, 4),
    }


def summarize(samples: list[dict[str, Any]], warm_up_s: float = 120.0) -> dict[str, Any]:
    rows = [s for s in samples if s["rss_mb"] is not None]
    at_2 = next((s for s in rows if s["t_s"] >= 120), rows[-1])
    last = rows[-1]
    done = [s for s in rows if s["readings"] and s["produced_bytes"]]
    end = done[-1] if done else None
    readings = end["readings"] if end else 0
    sent = sorted(end["produced_bytes"].items()) if end and readings else []
    per_topic = {topic: round(b / readings, 1) for topic, b in sent}
    return {
        "rss_mb": {
            "minute_2": round(at_2["rss_mb"], 1),
            "end": round(last["rss_mb"], 1),
            "max": round(max(s["rss_mb"] for s in rows), 1),
            "growth_from_minute_2": round(last["rss_mb"] / at_2["rss_mb"] - 1, 4),
            # One sample swings by an epoch's buffers (+-40 MB at 1,000 meters): the peak of
            # each 5 minutes shows a trend that the end sample alone can hide or invent.
            "max_by_5_min": [
                round(max(in_window), 1)
                for start in range(0, int(rows[-1]["t_s"]) + 1, 300)
                if (in_window := [s["rss_mb"] for s in rows if start <= s["t_s"] < start + 300])
            ],
            "peak_growth_after_warm_up": peak_growth(rows, warm_up_s),
        },
        "rss_by_kind_mb": {"minute_2": at_2.get("rss_by_kind_mb"), "end": last.get("rss_by_kind_mb")},
        **{key: {"minute_2": at_2.get(key), "end": last.get(key)} for key in MEMORY_GAUGES},
        "worker_data_mb_end": last["worker_data_mb"],
        "readings": readings,
        "readings_per_s": round(readings / end["t_s"], 1) if end and end["t_s"] else None,
        "bytes_per_reading": {
            "by_topic": per_topic,
            "all_worker_topics": round(sum(per_topic.values()), 1),
            "raw_topic": round(end["raw_bytes"] / readings, 1) if end and readings else None,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=2000.0, help="simulator messages/s")
    ap.add_argument("--devices", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--sample-s", type=float, default=15.0)
    ap.add_argument("--check", action="store_true", help="exit 1 if RSS grew more than --max-growth")
    ap.add_argument("--max-growth", type=float, default=0.10)
    ap.add_argument(
        "--warm-up-min",
        type=float,
        default=2.0,
        help="where growth is measured from (peak_growth_after_warm_up; --check uses it)",
    )
    ap.add_argument("--out", type=Path, default=None, help="the report's path (default: bench/results/)")
    ap.add_argument(
        "--env",
        dest="worker_env",
        type=lambda v: tuple(v.split("=", 1)),
        action="append",
        default=[],
        metavar="AURORA_X=V",
        help="a setting for the platform's processes (the defaults are measured otherwise); repeatable",
    )
    args = ap.parse_args()
    args.worker_env = dict(args.worker_env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    runs = [run_one(devices, args) for devices in args.devices]
    out = write_report(
        "footprint",
        "footprint: worker RSS, data dir and broker bytes per reading (issue 24)",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            # The worker's C allocator (AURORA_MALLOC, passed through to the worker).
            "malloc": os.environ.get("AURORA_MALLOC", "glibc"),
            "runs": runs,
        },
        args.out,
    )
    failed = False
    for run in runs:
        s = run["summary"]
        print(f"{run['devices']} meters: {json.dumps(s)}")
        growth = s["rss_mb"]["peak_growth_after_warm_up"]
        if growth is None:
            failed = True
            print(f"the run is too short to measure growth after minute {args.warm_up_min:g}")
        elif growth["growth"] > args.max_growth:
            failed = True
            print(
                f"RSS's peak grew {growth['growth']:.1%} between minute {args.warm_up_min:g} and the "
                f"last minute ({growth['peak_at_mb']} -> {growth['peak_last_minute_mb']} MB, limit "
                f"{args.max_growth:.0%})"
            )
    print(f"wrote {out}")
    if args.check and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
