"""Helpers shared by the benchmark scripts: a free loopback port, machine facts, writing a
report to ``bench/results/<kind>-<UTC time>.json``, quantiles, and the platform of the HTTP
benchmarks (:class:`WebPlatform`)."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aurora_streams import __version__, native
from aurora_streams.devbroker import BrokerConfig

ROOT = Path(__file__).resolve().parents[1]


def bench_broker(port: int, datadir: Path) -> BrokerConfig:
    """The benchmarks' broker: Apache Kafka (KRaft, single node) as dev runs it, without
    time retention. Benchmark records are stamped in simulated time (2025) and some topics
    are made by others with the broker's defaults (Quix Streams' output): at the broker's
    retention check (every minute) their records were deleted mid-run, and the bench's
    reader of Quix's output, reset to the log's end, waited for ever."""
    return BrokerConfig("127.0.0.1", port, datadir, retention_hours=-1)


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
    # Benchmark records carry simulated 2025 stamps; the raw topic is stamped on arrival
    # (AURORA_RAW_TIMESTAMP_TYPE), so the default retention keeps them (test_retention).
    return {k: v for k, v in os.environ.items() if not k.startswith("AURORA_") or k in _PASSED}


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


def pct(values: list[float], p: float) -> float:
    """The ``p`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class WebPlatform:
    """An HTTP benchmark's platform in a temporary directory: the embedded broker and the
    app's topics (on entry), and one worker serving the read API to ``token``
    (:meth:`start_worker`); both stopped on exit, each by its own process."""

    def __init__(self, tmp: str, token: str) -> None:
        self.tmp = Path(tmp)
        self.port, self.web = free_port(), free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.web}"
        self.env = clean_env()
        self.env.update({
            "AURORA_BROKER_URL": f"kafka://127.0.0.1:{self.port}", "AURORA_WEB_PORT": str(self.web),
            "AURORA_DATADIR": f"{tmp}/data", "AURORA_LOG_LEVEL": "warning", "AURORA_LOG_FORMAT": "text",
            "AURORA_API_TOKENS": json.dumps({"bench": {"token": token, "roles": ["read"]}}),
        })  # fmt: skip
        self.broker: Any = None
        self.worker: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> WebPlatform:
        from aurora_streams.devbroker import start_broker
        from aurora_streams.settings import load_settings
        from aurora_streams.topics import ensure_topics

        os.environ.update(self.env)
        self.settings = load_settings()
        with open(self.tmp / "broker.log", "wb") as blog:
            self.broker = start_broker(bench_broker(self.port, self.tmp / "kafka"), log=blog)
        ensure_topics(self.settings)
        return self

    def start_worker(self) -> None:
        with open(self.tmp / "worker.log", "wb") as wlog:
            self.worker = subprocess.Popen([sys.executable, "-m", "aurora_streams", "worker"], env=self.env,
                                           stdout=wlog, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip

    def get(self, path: str, timeout_s: float = 120) -> Any:
        """``path``'s JSON answer, with the token."""
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read())

    def __exit__(self, *exc: object) -> None:
        from aurora_streams.devbroker import stop_process

        if self.worker is not None:
            self.worker.terminate()
            self.worker.wait(60)
        if self.broker is not None:
            stop_process(self.broker)
