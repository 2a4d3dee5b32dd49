"""Helpers shared by the benchmark scripts: a free loopback port, machine facts, and
writing a report to ``bench/results/<kind>-<UTC time>.json``."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aurora_streams import __version__, native
from aurora_streams.devbroker import BrokerConfig

ROOT = Path(__file__).resolve().parents[1]


def bench_broker(port: int, datadir: Path) -> BrokerConfig:
    """The benchmarks' broker: Apache Kafka (KRaft, single node) as dev runs it. Benchmark
    topics are created with no time retention (:func:`clean_env`)."""
    return BrokerConfig("127.0.0.1", port, datadir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summarize(runs: list[dict[str, Any]], *path: str) -> dict[str, float] | None:
    """min, median and max of the value at ``path`` in each run that has it."""
    values = []
    for run in runs:
        v: Any = run
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if v is not None:
            values.append(v)
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


_PASSED = ("AURORA_NATIVE", "AURORA_NATIVE_DIR", "AURORA_MALLOC")


def clean_env() -> dict[str, str]:
    """This process's environment without ``AURORA_*`` settings (a benchmark measures the
    defaults), except the compiled core's switches: ``AURORA_NATIVE=0`` measures the pure
    Python core, and the report's ``native`` says which one ran."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURORA_") or k in _PASSED}
    # Benchmark records carry simulated 2025 timestamps, and Kafka's time retention deletes by
    # record timestamp (the active segment too): unread input would vanish at the broker's
    # next retention check (DESIGN.md, Brokers).
    env["AURORA_TOPIC_RETENTION_MS"] = "-1"
    return env


def write_report(kind: str, title: str, body: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``body`` with the benchmark's title, time, version and machine facts, to ``out``
    or to ``bench/results/<kind>-<UTC time>.json``."""
    now = datetime.now(UTC)
    report = {
        "benchmark": title,
        "when": now.isoformat(timespec="seconds"),
        "version": __version__,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        # The compiled core, as the workers this benchmark starts load it (same checkout);
        # its directory relative to the repository, so a report names no machine's paths.
        "native": native.STATUS.replace(f"{ROOT}/", ""),
        **body,
    }
    out = out or ROOT / "bench" / "results" / f"{kind}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return out
