"""Issue 8's workloads: W1 catch-up, W2 gateway batches, latency at a steady rate and state
size, with the baselines measured in the same run.

    .venv/bin/python bench/workloads.py [--runs 3] [--devices 10000] [--messages 500000]
        [--latency-s 30] [--load-linger-ms 5] [--no-quix] [--skip w2,latency,state]

Each run starts its own embedded broker (Apache Kafka, KRaft, single node) and, on 4-partition raw
topics keyed by device, measures:

* **W1**: ``--devices`` meters, ``--messages`` single-reading JSON messages pre-produced;
  0.5% counter resets, 0.5% out of order, 0.2% exact duplicates, 0.1% jumps. An
  ``aurora-streams worker`` from process start to its last normalized record: readings/s and
  peak RSS. The normalized records are checked against the pure core (the reference): the
  same multiset of records, byte for byte.
* **W2**: the same readings as gateway batches of up to 48 consecutive readings of a device.
* **latency**: a fresh worker fed 5,000 readings/s for ``--latency-s``; for each normalized
  record, the time it was readable minus the time its raw message was produced (the raw
  message's timestamp, set at the produce call and carried as ``ingested_at``): p50 and p99.
  The load producer batches with ``--load-linger-ms`` (5, librdkafka's default; the time a
  reading waits in it is inside the figure).
* **state**: ``--state-devices`` meters with two readings each: worker RSS and data-dir
  bytes once every device has state.
* baselines in the same run, on the same broker: a bare confluent-kafka consume -> orjson ->
  dict -> produce loop (the practical ceiling of Python here) on the W1 and on the W2 topic
  (one output per reading), the same loop running our pure core (``Processor.process`` on
  states in a dict, every output produced: no Faust, table, views or checkpoint; the
  ceiling of a worker running this core), the latency workload through the bare loop
  instead of a worker (what this broker allows a Python consumer-producer at 5,000/s), and
  Quix Streams 3.28 on W1 (its RocksDB state and a 15-minute tumbling window;
  ``bench/quix_w1.py``), in ``bench/.venv-quix``, made on first use (Quix pins
  confluent-kafka < 2.13, older than ours).

Results: ``bench/results/workloads-<UTC time>.json`` (machine facts, versions, every run,
min and median). Timing is never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from common import ROOT, bench_broker, clean_env, free_port, summarize, write_report
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from throughput import _rss_kb, bare_outputs, bench_bare_loop, bench_core_loop, ensure_topic, fleet

from aurora_streams.devbroker import KAFKA_VERSION, start_broker, stop_process
from aurora_streams.domain.timeutil import parse_timestamp
from aurora_streams.processing import build_processor, new_state
from aurora_streams.settings import load_settings
from aurora_streams.simulator import SimMessage, produce
from aurora_streams.topics import ensure_topics

QUIX_VENV = ROOT / "bench" / ".venv-quix"
QUIX_VERSION = "3.28.1"


def gateway_batches(msgs: list[SimMessage], size: int = 48) -> list[SimMessage]:
    """The same readings as batches of up to ``size`` consecutive readings of one device,
    each sent when full (or at the end), so a device's readings keep their order."""
    pending: dict[bytes, list[dict[str, Any]]] = {}
    out: list[SimMessage] = []

    def flush(key: bytes, ts: int) -> None:
        readings = pending.pop(key)
        doc = {"device_id": key.decode(), "readings": readings}
        out.append(SimMessage(key, orjson.dumps(doc), ts))

    for m in msgs:
        reading = orjson.loads(m.value)
        del reading["device_id"]
        pending.setdefault(m.key, []).append(reading)
        if len(pending[m.key]) == size:
            flush(m.key, m.timestamp_ms)
    last = msgs[-1].timestamp_ms
    for key in list(pending):
        flush(key, last)
    return out


def reference(msgs: list[SimMessage], topic: str) -> list[bytes]:
    """The normalized records the pure core makes of ``msgs`` (JSON encoding)."""
    s = load_settings()
    p = build_processor(s)
    states: dict[str, Any] = {}
    out: list[bytes] = []
    for offset, m in enumerate(msgs):
        for o in p.process(
            m.key,
            m.value,
            partition=0,
            offset=offset,
            timestamp_ms=m.timestamp_ms,
            states=states,
            load=new_state,
        ):
            if o.topic == topic:
                out.append(o.value)
    return out


def reader(bootstrap: str, topic: str) -> Consumer:
    """A consumer of all 4 partitions of ``topic`` from the beginning, outside any group's
    commits, whose fetches wait at most as long as the worker's (``fetch_max_wait_ms``)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": load_settings().fetch_max_wait_ms,
        }
    )
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
    return c


class Follower(threading.Thread):
    """Reads a topic from the beginning and counts records (and keeps them if asked)."""

    def __init__(self, bootstrap: str, topic: str, *, keep: bool = False, latency: bool = False) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.keep, self.latency = bootstrap, topic, keep, latency
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.values: list[bytes] = []
        self.latencies_ms: list[float] = []
        self.trace: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        ensure_topic(self.bootstrap, self.topic)  # it may be read before its writer made it
        c = reader(self.bootstrap, self.topic)
        while not self.stop.is_set():
            batch = c.consume(2000, 0.05)
            now = time.perf_counter()
            wall = time.time() * 1000
            for m in batch:
                if m.error() is not None:
                    continue
                self.count += 1
                value = m.value()
                assert value is not None  # every output record has a value
                if self.keep:
                    self.values.append(value)
                if self.latency:
                    sent = parse_timestamp(orjson.loads(value)["ingested_at"])
                    self.latencies_ms.append(wall - sent)
                    self.trace.append((wall, wall - sent))
            if batch:
                self.first = self.first or now
                self.last = now
        c.close()


def _run_until(proc: subprocess.Popen[bytes], follower: Follower, expected: int, log: Path) -> int | None:
    deadline = time.monotonic() + 1800
    peak: int | None = None
    while follower.count < expected and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode}; see {log}")
        time.sleep(0.05)
    peak = _rss_kb(proc.pid)
    if follower.count < expected:
        raise RuntimeError(f"{follower.count} of {expected} records; see {log}")
    return peak


def _worker(env: dict[str, str], out: Any, label: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "aurora_streams", "worker"]
    memray_dir = os.environ.get("BENCH_MEMRAY_DIR")
    if memray_dir:  # memray (pip install memray) records the worker's allocations, for issue 24
        out_file = Path(memray_dir) / f"worker-{label}-{uuid.uuid4().hex[:6]}.bin"
        cmd = [sys.executable, "-m", "memray", "run", "--aggregate", "-o", str(out_file), *cmd[1:]]
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    profile_dir = os.environ.get("BENCH_PYSPY_DIR")
    if profile_dir:  # py-spy samples the worker for 30 s (collapsed stacks), for issue 8's notes
        rate, seconds = os.environ.get("BENCH_PYSPY_RATE", "47"), os.environ.get("BENCH_PYSPY_SECONDS", "30")
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "-r", rate, "-f", "raw", "-d", seconds]
        spy += ["--nonblocking", "-o", str(Path(profile_dir) / f"worker-{label}.txt"), "--pid", str(proc.pid)]
        after = float(os.environ.get("BENCH_PYSPY_AFTER_S", "15"))
        threading.Timer(after, subprocess.Popen, args=(spy,), kwargs={"stdout": subprocess.DEVNULL}).start()
    return proc


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_worker(
    env: dict[str, str],
    topics: dict[str, str],
    expected: list[bytes] | int,
    work: Path,
    label: str,
    broker_pid: int | None = None,
) -> dict[str, Any]:
    """Start a worker on ``topics``; time from process start to its last normalized record.
    Also reports the CPU seconds the worker and the broker spent meanwhile (2 cores share
    both)."""
    n = expected if isinstance(expected, int) else len(expected)
    env = {
        **env,
        **topics,
        "AURORA_DATADIR": str(work / f"data-{label}"),
        "AURORA_WEB_PORT": str(free_port()),
    }
    env["AURORA_APP_ID"] = f"{topics['AURORA_TOPIC_RAW']}-app"
    follower = Follower(
        env["AURORA_BROKER_URL"].removeprefix("kafka://"),
        topics["AURORA_TOPIC_NORMALIZED"],
        keep=not isinstance(expected, int),
    )
    follower.start()
    log = work / f"worker-{label}.log"
    broker_cpu = _cpu_s(broker_pid) if broker_pid else None
    worker_cpu: float | None = None
    histograms: dict[str, Any] = {}
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = _worker(env, out, label)
        try:
            peak = _run_until(proc, follower, n, log)
            worker_cpu = _cpu_s(proc.pid)
            histograms = _worker_histograms(int(env["AURORA_WEB_PORT"]))
            if broker_pid:
                broker_cpu = _cpu_s(broker_pid) - (broker_cpu or 0.0)
        finally:
            _stop(proc)
            follower.stop.set()
            follower.join(10)
    assert follower.last is not None and follower.first is not None
    result: dict[str, Any] = {
        "records": follower.count,
        "seconds": follower.last - started,
        "first_record_s": follower.first - started,
        "readings_per_s": n / (follower.last - started),
        "readings_per_s_first_to_last": n / max(1e-9, follower.last - follower.first),
        "peak_rss_mb": peak / 1024 if peak else None,
        "data_dir_bytes": _du(work / f"data-{label}"),
        "worker_cpu_s": worker_cpu,
        "broker_cpu_s": broker_cpu,
        "worker": histograms,
    }
    if not isinstance(expected, int):
        result["matches_reference"] = sorted(follower.values) == sorted(expected)
        if not result["matches_reference"]:
            raise RuntimeError(f"{label}: the worker's normalized records differ from the reference")
    return result


def _rates(r: dict[str, Any]) -> str:
    return (
        f"{r['readings_per_s']:,.0f}/s from start ({r['readings_per_s_first_to_last']:,.0f}/s from the "
        f"first record, at {r['first_record_s']:.1f} s)"
    )


def _cpu_note(r: dict[str, Any]) -> str:
    keys = ("worker_cpu_s", "broker_cpu_s")
    parts = [f"{k.removesuffix('_cpu_s')} {r[k]:.0f} CPU s" for k in keys if r.get(k)]
    return f"({', '.join(parts)} in {r['seconds']:.0f} s)" if parts else ""


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def ensure_quix() -> Path:
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}"], check=True
        )
    return python


def run_quix(bootstrap: str, raw: str, n: int, work: Path) -> dict[str, Any]:
    python = ensure_quix()
    out_topic = f"{raw}.quix"
    ensure_topic(bootstrap, out_topic)  # before the follower reads it; Quix uses it as it is
    follower = Follower(bootstrap, out_topic)
    follower.start()
    log = work / "quix.log"
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [
                str(python),
                str(ROOT / "bench" / "quix_w1.py"),
                bootstrap,
                raw,
                out_topic,
                str(work / "quix-state"),
                f"quix-{uuid.uuid4().hex[:6]}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            peak = _run_until(proc, follower, n, log)
        finally:
            _stop(proc)
            follower.stop.set()
            follower.join(10)
    assert follower.last is not None and follower.first is not None
    return {
        "seconds": follower.last - started,
        "first_record_s": follower.first - started,
        "readings_per_s": n / (follower.last - started),
        "readings_per_s_first_to_last": n / max(1e-9, follower.last - follower.first),
        "peak_rss_mb": peak / 1024 if peak else None,
    }


def steady(rate: float, seconds: float, devices: int) -> Iterator[SimMessage]:
    """Register readings of ``devices`` meters, timestamped when produced (see ``pace``)."""
    per_device: dict[int, float] = {}
    i = 0
    while i < rate * seconds:
        d = i % devices
        reading = per_device.get(d, 1000.0) + 0.01
        per_device[d] = reading
        ts = 1_735_653_600_000 + (i // devices + 1) * 300_000
        key = f"lat-{d:06d}".encode()
        doc = {"device_id": key.decode(), "ts": ts, "kind": "register", "value": reading, "unit": "kWh"}
        yield SimMessage(key, orjson.dumps(doc), 0)
        i += 1


_SPAWN = multiprocessing.get_context("spawn")


class BarePipe(_SPAWN.Process):  # type: ignore[name-defined,misc]
    """The latency baseline: a bare confluent-kafka consume -> orjson -> dict -> produce loop
    (``bare_outputs``, as ``bench_bare_loop``) on the raw topic, one output per reading
    carrying the raw message's timestamp as ``ingested_at``, as the worker's records do. In a
    process of its own, as the worker is: in the benchmark's process it would share the GIL
    with the load producer and the follower."""

    def __init__(self, bootstrap: str, topic: str, out_topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.out_topic = bootstrap, topic, out_topic
        self.stop = _SPAWN.Event()

    def run(self) -> None:
        ensure_topic(self.bootstrap, self.out_topic)
        c = reader(self.bootstrap, self.topic)
        # linger.ms 5: the worker's
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
        last: dict[tuple[str, str], float] = {}
        while not self.stop.is_set():
            for m in c.consume(1000, 0.05):
                if m.error() is not None:
                    continue
                value = m.value()
                assert value is not None  # the load producer's messages all have one
                for out in bare_outputs(value, last, ingested_at=m.timestamp()[1]):
                    p.produce(self.out_topic, key=m.key(), value=out)
            p.poll(0)
        p.flush(10)
        c.close()


def _steady_feed(
    bootstrap: str,
    raw: str,
    follower: Follower,
    rate: float,
    seconds: float,
    alive: Any,
    pids: dict[str, int],
    load_linger_ms: int,
) -> dict[str, float]:
    """Warm up (one reading per device, until all are out; ``alive()`` meanwhile), then
    produce ``rate`` readings/s for ``seconds``, each timestamped when produced, and wait until
    all are out (at most 60 s). Returns the wall time after the warm-up and the CPU seconds
    meanwhile of each process in ``pids`` (``<name>_cpu_s``)."""
    warm = list(steady(rate, 1000 / rate, 1000))
    # The load producer batches as librdkafka does by default (``load_linger_ms`` 5); the
    # latency is counted from the produce call, so its linger is inside the figure.
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": load_linger_ms, "partitioner": "murmur2_random"}
    )
    for m in warm:
        producer.produce(raw, key=m.key, value=m.value)
    producer.flush(30)
    deadline = time.monotonic() + 120
    while follower.count < len(warm) and time.monotonic() < deadline:
        alive()
        time.sleep(0.1)
    follower.latencies_ms.clear()
    follower.trace.clear()
    cpu_before = {name: _cpu_s(pid) for name, pid in pids.items()}
    total = 0
    started = time.perf_counter()
    for i, m in enumerate(steady(rate, seconds, 1000)):
        if i < len(warm):
            continue  # the same first readings: duplicates
        target = started + (i - len(warm)) / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        producer.produce(raw, key=m.key, value=m.value, timestamp=int(time.time() * 1000))
        producer.poll(0)
        total += 1
    producer.flush(30)
    deadline = time.monotonic() + 60
    while follower.count < len(warm) + total and time.monotonic() < deadline:
        time.sleep(0.1)
    used = {f"{name}_cpu_s": _cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
    return {**used, "wall_s": time.perf_counter() - started}


def _latency_figures(follower: Follower, rate: float, seconds: float) -> dict[str, Any]:
    lat = sorted(follower.latencies_ms)
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "records": len(lat),
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[int(len(lat) * 0.99)],
        "max_ms": lat[-1],
    }


def run_bare_latency(
    bootstrap: str, topics: dict[str, str], rate: float, seconds: float, broker_pid: int, load_linger_ms: int
) -> dict[str, Any]:
    """The latency workload through :class:`BarePipe` instead of a worker: what this broker
    allows a Python consumer-producer at all, measured in the same run."""
    pipe = BarePipe(bootstrap, topics["AURORA_TOPIC_RAW"], topics["AURORA_TOPIC_NORMALIZED"])
    follower = Follower(bootstrap, topics["AURORA_TOPIC_NORMALIZED"], latency=True)
    pipe.start()
    follower.start()
    try:
        cpu = _steady_feed(
            bootstrap,
            topics["AURORA_TOPIC_RAW"],
            follower,
            rate,
            seconds,
            lambda: None,
            {"broker": broker_pid},
            load_linger_ms,
        )
    finally:
        for part in (pipe, follower):
            part.stop.set()
            part.join(10)
    return {**_latency_figures(follower, rate, seconds), **cpu}


def run_latency(
    env: dict[str, str],
    topics: dict[str, str],
    work: Path,
    rate: float,
    seconds: float,
    broker_pid: int,
    load_linger_ms: int,
) -> dict[str, Any]:
    env = {**env, **topics, "AURORA_DATADIR": str(work / "data-lat"), "AURORA_WEB_PORT": str(free_port())}
    env["AURORA_APP_ID"] = f"{topics['AURORA_TOPIC_RAW']}-app"
    bootstrap = env["AURORA_BROKER_URL"].removeprefix("kafka://")
    log = work / "worker-latency.log"

    def alive() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}; see {log}")

    with open(log, "wb") as out:
        proc = _worker(env, out, "latency")
        follower = Follower(bootstrap, topics["AURORA_TOPIC_NORMALIZED"], latency=True)
        follower.start()
        try:
            pids = {"worker": proc.pid, "broker": broker_pid}
            cpu = _steady_feed(
                bootstrap, topics["AURORA_TOPIC_RAW"], follower, rate, seconds, alive, pids, load_linger_ms
            )
            inside = _worker_histograms(int(env["AURORA_WEB_PORT"]))
        finally:
            _stop(proc)
            follower.stop.set()
            follower.join(10)
    if os.environ.get("BENCH_LATENCY_TRACE"):
        Path(os.environ["BENCH_LATENCY_TRACE"]).write_bytes(orjson.dumps(follower.trace))
    return {**_latency_figures(follower, rate, seconds), "worker": inside, **cpu}


_HISTOGRAMS = {
    "aurora_record_e2e_latency_seconds": "e2e_to_queued",
    "aurora_batch_duration_seconds": "batch",
    "aurora_checkpoint_duration_seconds": "checkpoint",
    "aurora_checkpoint_seal_duration_seconds": "seal",
    "aurora_checkpoint_messages": "checkpoint_messages",
}


def _worker_histograms(port: int) -> dict[str, Any]:
    """Where the time goes, from the worker's own histograms (/metrics): broker timestamp to
    outputs queued, batch and checkpoint durations (seconds) and messages per checkpoint,
    as count, mean and bucket upper bounds at p50/p99."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        label = _HISTOGRAMS.get(family.name)
        if label is None:
            continue
        buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
        count = max((v for _, v in buckets), default=0.0)
        total = sum(s.value for s in family.samples if s.name.endswith("_sum"))
        if not count:
            continue

        def quantile(q: float, buckets: list[tuple[float, float]] = buckets, count: float = count) -> float:
            return next(le for le, v in sorted(buckets) if v >= q * count)

        out[label] = {
            "count": count,
            "mean": total / count,
            "p50_le": quantile(0.5),
            "p99_le": quantile(0.99),
        }
    return out


def topic_set(name: str) -> dict[str, str]:
    return {
        "AURORA_TOPIC_RAW": f"{name}.raw",
        "AURORA_TOPIC_NORMALIZED": f"{name}.normalized",
        "AURORA_TOPIC_ANOMALIES": f"{name}.anomalies",
        "AURORA_TOPIC_FORECASTS": f"{name}.forecasts",
        "AURORA_TOPIC_DLQ": f"{name}.dlq",
        # The references are computed from the generated messages, their stamps included
        # (``ingested_at``): the raw topics keep the producer's stamps, and so need no time
        # retention (stamped 2025).
        "AURORA_RAW_TIMESTAMP_TYPE": "CreateTime",
        "AURORA_TOPIC_RETENTION_MS": "-1",
    }


def baselines(bootstrap: str, topic: str, name: str, messages: int, readings: int) -> dict[str, Any]:
    """The bare loop and the core loop on ``topic`` (``messages`` holding ``readings``), each
    with its own output topic, printed as they finish: what the worker is compared with."""
    label = " W2" if name.startswith("w2") else ""
    bare = bench_bare_loop(bootstrap, topic, f"{name}.bare", messages)
    print(f"  bare loop{label} {bare['readings_per_s']:,.0f}/s", flush=True)
    core = bench_core_loop(bootstrap, topic, f"{name}.core", messages, readings)
    print(f"  core loop{label} {core['readings_per_s']:,.0f}/s", flush=True)
    return {"bare_loop": bare, "core_loop": core}


def one_run(
    args: argparse.Namespace, w1: list[SimMessage], w2: list[SimMessage], ref: dict[str, Any]
) -> dict[str, Any]:
    port = free_port()
    tag = uuid.uuid4().hex[:6]
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = clean_env()
        env.update(
            {
                "AURORA_BROKER_URL": f"kafka://127.0.0.1:{port}",
                "AURORA_LOG_FORMAT": "text",
                "AURORA_LOG_LEVEL": "warning",
                **args.worker_env,
            }
        )
        with open(work / "broker.log", "wb") as blog:
            broker = start_broker(bench_broker(port, work / "kafka"), log=blog)
        try:
            bootstrap = f"127.0.0.1:{port}"
            sets = {k: topic_set(f"{k}{tag}") for k in ("w1", "w2", "latb", "lat", "state")}
            for topics in sets.values():
                os.environ.update({**env, **topics, "AURORA_APP_ID": f"{topics['AURORA_TOPIC_RAW']}-app"})
                ensure_topics(load_settings())
            produce(iter(w1), bootstrap=bootstrap, topic=sets["w1"]["AURORA_TOPIC_RAW"], progress=False)
            if "baselines" not in args.skip:
                raw_w1 = sets["w1"]["AURORA_TOPIC_RAW"]
                result.update(baselines(bootstrap, raw_w1, f"w1{tag}", len(w1), len(w1)))
            if not args.no_quix:
                result["quix_w1"] = run_quix(bootstrap, sets["w1"]["AURORA_TOPIC_RAW"], len(w1), work)
                print(f"  quix W1 {_rates(result['quix_w1'])}", flush=True)
            if "w1" not in args.skip:
                result["w1"] = run_worker(env, sets["w1"], ref["w1"], work, "w1", broker.pid)
                print(f"  worker W1 {_rates(result['w1'])} {_cpu_note(result['w1'])}", flush=True)
            if "w2" not in args.skip:
                produce(iter(w2), bootstrap=bootstrap, topic=sets["w2"]["AURORA_TOPIC_RAW"], progress=False)
                if "baselines" not in args.skip:
                    found = baselines(bootstrap, sets["w2"]["AURORA_TOPIC_RAW"], f"w2{tag}", len(w2), len(w1))
                    result.update({f"{name}_w2": value for name, value in found.items()})
                result["w2"] = run_worker(env, sets["w2"], ref["w2"], work, "w2", broker.pid)
                result["w2"]["messages"] = len(w2)
                print(f"  worker W2 {_rates(result['w2'])} {_cpu_note(result['w2'])}", flush=True)
            if "latency" not in args.skip:
                result["bare_latency"] = run_bare_latency(
                    bootstrap, sets["latb"], 5000.0, args.latency_s, broker.pid, args.load_linger_ms
                )
                bare = result["bare_latency"]
                print(
                    f"  bare pipe latency p50 {bare['p50_ms']:.0f} ms p99 {bare['p99_ms']:.0f} ms "
                    f"(broker {bare['broker_cpu_s']:.1f} CPU s in {bare['wall_s']:.0f} s)",
                    flush=True,
                )
                result["latency"] = run_latency(
                    env, sets["lat"], work, 5000.0, args.latency_s, broker.pid, args.load_linger_ms
                )
                print(
                    f"  latency p50 {result['latency']['p50_ms']:.0f} ms "
                    f"p99 {result['latency']['p99_ms']:.0f} ms; "
                    f"inside the worker: {result['latency']['worker']}",
                    flush=True,
                )
            if "state" not in args.skip:
                msgs = list(steady(2 * args.state_devices, 1.0, args.state_devices))
                produce(
                    iter(msgs), bootstrap=bootstrap, topic=sets["state"]["AURORA_TOPIC_RAW"], progress=False
                )
                result["state"] = run_worker(env, sets["state"], len(msgs), work, "state")
                result["state"]["devices"] = args.state_devices
                print(
                    f"  state {args.state_devices} devices: "
                    f"peak RSS {result['state']['peak_rss_mb']:.0f} MB, "
                    f"data dir {result['state']['data_dir_bytes'] / 1e6:.0f} MB",
                    flush=True,
                )
        finally:
            stop_process(broker)
            keep = os.environ.get("BENCH_KEEP_LOGS")
            if keep:  # the worker and broker logs of every run, for a look after the fact
                dest = Path(keep) / f"run-{tag}"
                dest.mkdir(parents=True, exist_ok=True)
                for log in work.glob("*.log"):
                    shutil.copy(log, dest / log.name)
            shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--state-devices", type=int, default=100_000)
    ap.add_argument("--latency-s", type=float, default=30.0)
    ap.add_argument(
        "--load-linger-ms",
        type=int,
        default=5,
        help="linger.ms of the latency workload's load producer (default 5, librdkafka's own)",
    )
    ap.add_argument("--no-quix", action="store_true")
    ap.add_argument(
        "--skip", type=lambda v: set(v.split(",")), default=set(), help="of w1,w2,latency,state,baselines"
    )
    ap.add_argument(
        "--worker-env",
        type=lambda v: tuple(v.split("=", 1)),
        action="append",
        default=[],
        metavar="AURORA_X=V",
        help="a setting for the workers (the defaults are measured otherwise); repeatable",
    )
    args = ap.parse_args()
    args.worker_env = dict(args.worker_env)

    w1 = fleet(args.devices, args.messages)
    w2 = gateway_batches(w1)
    topic = load_settings().topic_normalized
    ref = {"w1": reference(w1, topic), "w2": reference(w2, topic)}
    print(f"W1 {len(w1)} messages ({len(ref['w1'])} normalized); W2 {len(w2)} batches", flush=True)
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1}", flush=True)
        runs.append(one_run(args, w1, w2, ref))

    report = {
        "workload": {
            "devices": args.devices,
            "messages": len(w1),
            "w2_batches": len(w2),
            "partitions": 4,
            "latency_seconds": args.latency_s,
            "latency_load_linger_ms": args.load_linger_ms,
            "broker": f"Apache Kafka {KAFKA_VERSION} (KRaft, single node, embedded)",
            "quix": QUIX_VERSION,
            "worker_env": args.worker_env,
        },
        "summary": {
            "w1_readings_per_s": summarize(runs, "w1", "readings_per_s"),
            "w1_peak_rss_mb": summarize(runs, "w1", "peak_rss_mb"),
            "w1_readings_per_s_first_to_last": summarize(runs, "w1", "readings_per_s_first_to_last"),
            "w2_readings_per_s": summarize(runs, "w2", "readings_per_s"),
            "w2_readings_per_s_first_to_last": summarize(runs, "w2", "readings_per_s_first_to_last"),
            "latency_p50_ms": summarize(runs, "latency", "p50_ms"),
            "latency_p99_ms": summarize(runs, "latency", "p99_ms"),
            "state_peak_rss_mb": summarize(runs, "state", "peak_rss_mb"),
            "state_data_dir_bytes": summarize(runs, "state", "data_dir_bytes"),
            "baseline_bare_loop_readings_per_s": summarize(runs, "bare_loop", "readings_per_s"),
            "baseline_bare_loop_w2_readings_per_s": summarize(runs, "bare_loop_w2", "readings_per_s"),
            "baseline_core_loop_readings_per_s": summarize(runs, "core_loop", "readings_per_s"),
            "baseline_core_loop_w2_readings_per_s": summarize(runs, "core_loop_w2", "readings_per_s"),
            "baseline_bare_pipe_latency_p50_ms": summarize(runs, "bare_latency", "p50_ms"),
            "baseline_bare_pipe_latency_p99_ms": summarize(runs, "bare_latency", "p99_ms"),
            "baseline_quix_w1_readings_per_s": summarize(runs, "quix_w1", "readings_per_s"),
            "baseline_quix_w1_readings_per_s_first_to_last": summarize(
                runs, "quix_w1", "readings_per_s_first_to_last"
            ),
        },
        "runs": runs,
    }
    path = write_report("workloads", "issue 8 workloads", report)
    print(json.dumps(report["summary"], indent=2))
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
