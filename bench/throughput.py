"""Throughput benchmark: readings per second, with baselines measured in the same run.

Run from the repository root:

    .venv/bin/python bench/throughput.py [--devices 2000] [--messages 50000] [--runs 3]
    # or: aurora-streams bench --runs 3

Each run starts its own embedded broker (Apache Kafka, KRaft), pre-produces the same seeded fleet of
single-reading JSON messages to a 4-partition raw topic, and measures:

* ``core``: the pure processor (validate + state machine + encode) in-process, no Kafka:
  the ceiling of our own code.
* ``bare_loop``: a bare confluent-kafka consumer -> orjson -> dict state (register delta) ->
  producer loop over the same topic: the practical ceiling of Python on this broker.
  (``bench_core_loop``, the same loop running the pure core, is one of bench/workloads.py's
  baselines.)
* ``worker``: an ``aurora-streams worker`` subprocess, from process start (and from its first
  output) to the last normalized record, checked for completeness against the core's count.

Results go to ``bench/results/throughput-<UTC time>.json`` and are summarized (min and
median over runs) on stdout. Timing is never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from common import ROOT, bench_broker, clean_env, free_port, summarize, write_report
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from aurora_streams.devbroker import KAFKA_VERSION, start_broker, stop_process
from aurora_streams.processing import build_processor, new_state
from aurora_streams.settings import load_settings
from aurora_streams.simulator import SimConfig, SimMessage, generate, produce
from aurora_streams.topics import ensure_topics


def fleet(devices: int, messages: int) -> list[SimMessage]:
    # W1-like fault mix: resets, out-of-order, exact duplicates, jumps.
    cfg = SimConfig(
        devices=devices,
        seed=1,
        reset_rate=0.005,
        late_rate=0.005,
        duplicate_rate=0.002,
        jump_rate=0.001,
        gap_rate=0.0,
        zero_run_rate=0.0,
        rollover_share=0.0,
        encoding="json",
        register_share=0.5,
        solar_share=0.0,
    )
    return list(generate(cfg, limit=messages))


def bench_core(msgs: list[SimMessage]) -> dict[str, Any]:
    s = load_settings()
    p = build_processor(s)
    states: dict[str, Any] = {}
    outputs = normalized = 0
    started = time.perf_counter()
    for offset, m in enumerate(msgs):
        out = p.process(
            m.key,
            m.value,
            partition=0,
            offset=offset,
            timestamp_ms=m.timestamp_ms,
            states=states,
            load=new_state,
        )
        outputs += len(out)
        normalized += sum(1 for o in out if o.topic == s.topic_normalized)
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "readings_per_s": len(msgs) / elapsed,
        "outputs": outputs,
        "normalized_records": normalized,
        "stats": dict(p.stats),
    }


def bare_outputs(
    value: bytes, last: dict[tuple[str, str], float], ingested_at: int | None = None
) -> list[bytes]:
    """The bare loop's work on one raw message: decode it, keep the last register per device
    channel in ``last``, and encode one output per reading (a gateway batch's readings each
    get their own, as the worker's do), carrying ``ingested_at`` when given."""
    doc = orjson.loads(value)
    device = doc["device_id"]
    outs = []
    for reading in doc.get("readings", (doc,)):
        key = (device, reading.get("channel", "E1"))
        prev = last.get(key)
        number = float(reading["value"])
        last[key] = number
        out = {"device_id": device, "ts": reading["ts"], "delta": None if prev is None else number - prev}
        if ingested_at is not None:
            out["ingested_at"] = ingested_at
        outs.append(orjson.dumps(out))
    return outs


def bench_bare_loop(bootstrap: str, topic: str, out_topic: str, n: int) -> dict[str, Any]:
    """Consume ``n`` messages and produce :func:`bare_outputs` of each."""
    last: dict[tuple[str, str], float] = {}
    elapsed, outputs = _consume_produce(
        bootstrap, topic, out_topic, n, lambda m: bare_outputs(m.value(), last)
    )
    return {"seconds": elapsed, "messages": n, "readings": outputs, "readings_per_s": outputs / elapsed}


def bench_core_loop(bootstrap: str, topic: str, out_topic: str, n: int, readings: int) -> dict[str, Any]:
    """The bare loop with our pure core as its work: consume ``n`` messages (``readings``
    readings), run each through :meth:`Processor.process` on device states in a plain dict,
    and produce every output record's value. No Faust, no table, no views, no checkpoint:
    what our domain work costs on a bare client, the ceiling of a worker running it."""
    p = build_processor(load_settings())
    states: dict[str, Any] = {}

    def work(m: Any) -> list[bytes]:
        out = p.process(
            m.key(),
            m.value(),
            partition=m.partition(),
            offset=m.offset(),
            timestamp_ms=m.timestamp()[1],
            states=states,
            load=new_state,
        )
        return [rec.value for rec in out]

    elapsed, outputs = _consume_produce(bootstrap, topic, out_topic, n, work)
    return {
        "seconds": elapsed,
        "messages": n,
        "readings": readings,
        "outputs": outputs,
        "readings_per_s": readings / elapsed,
    }


def ensure_topic(bootstrap: str, topic: str, partitions: int = 4) -> None:
    """Create ``topic`` unless it exists, and wait until metadata shows it."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        try:
            fut.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    deadline = time.monotonic() + 15
    while topic not in admin.list_topics(timeout=5).topics and time.monotonic() < deadline:
        time.sleep(0.1)


def _consume_produce(
    bootstrap: str, topic: str, out_topic: str, n: int, work: Callable[[Any], list[bytes]]
) -> tuple[float, int]:
    """Consume ``n`` messages of ``topic`` from the beginning and produce ``work(message)``
    of each to ``out_topic`` (keyed as the message), until all are acknowledged. Returns the
    seconds taken and the outputs produced. ``out_topic`` is created first (4 partitions):
    the broker creates no topic on first use."""
    ensure_topic(bootstrap, out_topic)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
    seen = outputs = 0
    started = time.perf_counter()
    while seen < n:
        for m in consumer.consume(1000, 1.0):
            if m.error():
                continue
            seen += 1
            for out in work(m):
                outputs += 1
                while True:
                    try:
                        producer.produce(out_topic, key=m.key(), value=out)
                        break
                    except BufferError:
                        producer.poll(0.01)
            producer.poll(0)
    producer.flush(30)
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed, outputs


def follow(bootstrap: str, topic: str, partitions: int, stop: threading.Event, out: dict[str, Any]) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"follow-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out["count"] = 0
    while not stop.is_set():
        for m in consumer.consume(1000, 0.1):
            if m.error() is None:
                out["count"] += 1
                now = time.perf_counter()
                out.setdefault("first", now)
                out["last"] = now
    consumer.close()


def bench_worker(
    bootstrap: str, env: dict[str, str], normalized_topic: str, expected: int, workdir: Path
) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    stop = threading.Event()
    t = threading.Thread(target=follow, args=(bootstrap, normalized_topic, 4, stop, counts), daemon=True)
    t.start()
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aurora_streams", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 600
        while counts.get("count", 0) < expected and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}; see {workdir / 'worker.log'}")
            time.sleep(0.05)
        rss_kb = _rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        stop.set()
        t.join(5)
        log.close()
    if counts.get("count", 0) < expected:
        raise RuntimeError(f"worker produced {counts.get('count')} of {expected} normalized records")
    total = counts["last"] - started
    steady = counts["last"] - counts["first"]
    return {
        "seconds_from_start": total,
        "seconds_first_to_last": steady,
        "records": counts["count"],
        "readings_per_s_from_start": expected / total,
        "readings_per_s_steady": expected / steady,
        "rss_mb": rss_kb / 1024 if rss_kb else None,
    }


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def one_run(msgs: list[SimMessage], core: dict[str, Any]) -> dict[str, Any]:
    port = free_port()
    name = f"b{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = clean_env()
        env.update(
            {
                "AURORA_BROKER_URL": f"kafka://127.0.0.1:{port}",
                "AURORA_APP_ID": name,
                "AURORA_TOPIC_RAW": f"{name}.raw",
                "AURORA_TOPIC_NORMALIZED": f"{name}.normalized",
                "AURORA_TOPIC_ANOMALIES": f"{name}.anomalies",
                "AURORA_TOPIC_FORECASTS": f"{name}.forecasts",
                "AURORA_TOPIC_DLQ": f"{name}.dlq",
                "AURORA_DATADIR": str(work / "data"),
                "AURORA_WEB_PORT": str(free_port()),
                "AURORA_LOG_FORMAT": "text",
                "AURORA_LOG_LEVEL": "warning",
            }
        )
        os.environ.update(env)
        settings = load_settings()
        with open(work / "broker.log", "wb") as blog:
            broker = start_broker(bench_broker(port, work / "kafka"), log=blog)
        try:
            ensure_topics(settings)
            produce(
                iter(msgs), bootstrap=settings.bootstrap_servers, topic=settings.topic_raw, progress=False
            )
            bare = bench_bare_loop(settings.bootstrap_servers, settings.topic_raw, f"{name}.bare", len(msgs))
            worker = bench_worker(
                settings.bootstrap_servers, env, settings.topic_normalized, core["normalized_records"], work
            )
        finally:
            stop_process(broker)
    return {"bare_loop": bare, "worker": worker}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    msgs = fleet(args.devices, args.messages)
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        core = bench_core(msgs)
        result = {"core": core, **one_run(msgs, core)}
        runs.append(result)
        print(
            f"run {i + 1}: core {core['readings_per_s']:,.0f}/s  bare loop "
            f"{result['bare_loop']['readings_per_s']:,.0f}/s  worker "
            f"{result['worker']['readings_per_s_from_start']:,.0f}/s from start, "
            f"{result['worker']['readings_per_s_steady']:,.0f}/s steady",
            flush=True,
        )

    report = {
        "workload": {
            "devices": args.devices,
            "messages": len(msgs),
            "encoding": "json single readings",
            "partitions": 4,
            "broker": f"Apache Kafka {KAFKA_VERSION} (KRaft, single node, embedded)",
        },
        "summary_readings_per_s": {
            "core": summarize(runs, "core", "readings_per_s"),
            "bare_loop": summarize(runs, "bare_loop", "readings_per_s"),
            "worker_from_start": summarize(runs, "worker", "readings_per_s_from_start"),
            "worker_steady": summarize(runs, "worker", "readings_per_s_steady"),
        },
        "runs": runs,
    }
    path = write_report("throughput", "throughput (first figure, issue 2)", report)
    print(json.dumps(report["summary_readings_per_s"], indent=2))
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
