"""Integration harness: the embedded broker, worker subprocesses, topic readers and the
reference oracle.

The oracle reads the raw topic back from the broker (so it sees exactly the partitions,
offsets and timestamps the worker saw) and runs the pure :class:`Processor` over each
partition in offset order, with no crash, no rebalance and no Faust: what a correct worker
must end up with.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from aurora_streams.codecs import decode_output
from aurora_streams.devbroker import BrokerConfig, start_broker
from aurora_streams.domain.device import DeviceState
from aurora_streams.kafka.offsets import Offsets
from aurora_streams.processing import build_processor, new_state
from aurora_streams.settings import Settings, load_settings
from aurora_streams.simulator import SimMessage, produce
from aurora_streams.tables.device_state import is_device_key
from aurora_streams.topics import ensure_topics

REPO = Path(__file__).resolve().parents[2]


def start_test_broker(workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A broker of its own (Apache Kafka, KRaft) on a free loopback port, data in ``workdir``;
    its bootstrap address and process. Its log is ``workdir/kafka.log``.

    Deployments create their topics with the platform's defaults: the raw topic is stamped on
    arrival, so its 7-day retention never deletes the simulated fleets' 2025-stamped readings
    (``test_retention``)."""
    config = BrokerConfig("127.0.0.1", free_port(), workdir / "kafka", heap_mb=384)
    with open(workdir / "kafka.log", "ab") as log:
        proc = start_broker(config, log=log, say=lambda m: print(m, file=sys.stderr))
    return f"127.0.0.1:{config.port}", proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def read_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    *,
    idle_s: float = 1.0,
    until: Callable[[list[Record]], bool] | None = None,
    timeout_s: float = 120.0,
) -> list[Record]:
    """Every record of ``topic`` from the beginning: reads until every partition reported
    end-of-partition, ``until(records)`` holds (if given), and nothing new came for
    ``idle_s``.

    Uses assign() and end-of-partition events, never ListOffsets: the embedded broker
    undercounts end offsets (DESIGN.md, Brokers)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records: list[Record] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, 0.1)
            for m in msgs:
                err = m.error()
                if err is None:
                    records.append(Record(m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]))
                    at_end.discard(m.partition())
                    last = time.monotonic()
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
            if (
                len(at_end) == partitions
                and time.monotonic() - last >= idle_s
                and (until is None or until(records))
            ):
                return records
    finally:
        consumer.close()
    raise TimeoutError(f"{topic}: condition not met after {timeout_s} s ({len(records)} records)")


@dataclass
class Expected:
    """What the reference computes from the raw topic."""

    outputs: dict[str, list[bytes]]
    states: dict[str, bytes]
    stats: dict[str, int]


def reference(settings: Settings, raw: Iterable[Record]) -> Expected:
    processor = build_processor(settings)
    states: dict[str, DeviceState] = {}
    outputs: dict[str, list[bytes]] = {
        t: [] for t in (settings.topic_normalized, settings.topic_anomalies, settings.topic_dlq)
    }
    for rec in sorted(raw, key=lambda r: (r.partition, r.offset)):
        for out in processor.process(
            rec.key,
            rec.value,
            partition=rec.partition,
            offset=rec.offset,
            timestamp_ms=rec.timestamp_ms,
            states=states,
            load=new_state,
        ):
            outputs[out.topic].append(out.value)
    return Expected(outputs, {k: v.to_bytes() for k, v in states.items()}, dict(processor.stats))


def latest_by(values: Iterable[bytes], id_field: str) -> dict[str, dict[str, Any]]:
    """Latest version per id by the sink's rule: the higher ``(revision, updated_at)`` (no
    ``updated_at`` is older than any), and for equal versions the first record wins."""
    latest: dict[str, dict[str, Any]] = {}
    for v in values:
        doc = decode_output(v)
        old = latest.get(doc[id_field])
        if old is None or _version(doc) > _version(old):
            latest[doc[id_field]] = doc
    return latest


def _version(doc: dict[str, Any]) -> tuple[int, int]:
    updated = doc.get("updated_at")
    return doc["revision"], updated if updated is not None else -(2**62)


def latest_states(changelog: Iterable[Record]) -> dict[str, bytes]:
    """The latest value of every device in the device table's changelog (its partition
    records, see ``tables.device_state.LOG_BASE_PREFIX``, are not devices)."""
    out: dict[str, bytes] = {}
    for rec in sorted(changelog, key=lambda r: (r.partition, r.offset)):
        assert rec.key is not None
        if not is_device_key(rec.key.decode()):
            continue
        if rec.value is None:
            out.pop(rec.key.decode(), None)
        else:
            out[rec.key.decode()] = rec.value
    return out


@dataclass
class Deployment:
    """One isolated deployment on the shared broker: its own app id and topic names."""

    bootstrap: str
    workdir: Path
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    workers: list[Worker] = field(default_factory=list)

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AURORA_")}
        env.update(
            {
                "AURORA_BROKER_URL": f"kafka://{self.bootstrap}",
                "AURORA_APP_ID": f"aurora-{self.name}",
                "AURORA_PARTITIONS": str(self.partitions),
                "AURORA_TOPIC_RAW": f"{self.name}.raw",
                "AURORA_TOPIC_NORMALIZED": f"{self.name}.normalized",
                "AURORA_TOPIC_ANOMALIES": f"{self.name}.anomalies",
                "AURORA_TOPIC_FORECASTS": f"{self.name}.forecasts",
                "AURORA_TOPIC_DLQ": f"{self.name}.dlq",
                "AURORA_SESSION_TIMEOUT_S": "6",
                "AURORA_HEARTBEAT_INTERVAL_S": "1",
                "AURORA_LOG_FORMAT": "text",
                **self.extra_env,
                **more,
            }
        )
        return env

    @property
    def settings(self) -> Settings:
        env = self.env()
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(env)
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def create_topics(self) -> None:
        ensure_topics(self.settings)

    def produce(self, messages: Iterable[SimMessage]) -> int:
        return produce(
            iter(messages), bootstrap=self.bootstrap, topic=self.settings.topic_raw, progress=False
        )

    def produce_with_reference(self, messages: Iterable[SimMessage]) -> tuple[list[Record], Expected]:
        """Produce ``messages`` to the raw topic and read them back as the broker stored them
        (partition, offset, timestamp): the raw records and what the pure core makes of them."""
        sent = self.produce(messages)
        s = self.settings
        raw = self.read(s.topic_raw, until=lambda r: len(r) >= sent)
        return raw, reference(s, raw)

    def start_worker(self, label: str, *, datadir: Path | None = None) -> Worker:
        port = free_port()
        datadir = datadir or self.workdir / f"data-{label}"
        w = Worker(
            label,
            self.env(AURORA_WEB_PORT=str(port), AURORA_DATADIR=str(datadir)),
            port,
            self.workdir / f"worker-{label}.log",
        )
        w.start()
        self.workers.append(w)
        return w

    def read(self, topic: str, **kw: Any) -> list[Record]:
        return read_topic(self.bootstrap, topic, self.partitions, **kw)

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop()


@dataclass
class Worker:
    label: str
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aurora_streams", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()

    def wait_ready(self, timeout: float = 90.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.label} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"worker {self.label} not ready after {timeout} s:\n{self.tail()}")

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def run_async(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


def json_msg(doc: Any, key: str | None, ts: int) -> SimMessage:
    return SimMessage(key.encode() if key else b"", orjson.dumps(doc), ts)


def _dlq_keys(values: list[bytes]) -> set[tuple[int, int, int | None, str]]:
    out = set()
    for v in values:
        d = decode_output(v)
        out.add((d["source_partition"], d["source_offset"], d["reading_index"], d["error_reason"]))
    return out


def assert_matches(dep: Deployment, expected: Expected) -> None:
    """The deployment's topics hold what the reference computed: the latest revision of every
    normalized record and anomaly, the DLQ entries and the final device states (replays may
    repeat records, never invent them)."""
    s = dep.settings
    exp_norm = latest_by(expected.outputs[s.topic_normalized], "event_id")
    exp_anom = latest_by(expected.outputs[s.topic_anomalies], "anomaly_id")
    # Wait for every expected event id, not for a count: replays add repeated records, so
    # a count can be reached while a restarted worker has yet to produce the last ones.
    norm = dep.read(s.topic_normalized, idle_s=3.0, until=_has_ids(exp_norm.keys(), "event_id"))
    got_norm = latest_by([r.value for r in norm if r.value], "event_id")
    assert got_norm.keys() == exp_norm.keys(), "normalized records missing or unexpected"
    assert got_norm == exp_norm
    # Every record ever produced is one the reference produced too (replays repeat, never invent).
    assert {r.value for r in norm} <= set(expected.outputs[s.topic_normalized])
    anom = dep.read(s.topic_anomalies, idle_s=1.0)
    assert latest_by([r.value for r in anom if r.value], "anomaly_id") == exp_anom
    dlq = dep.read(s.topic_dlq, idle_s=1.0)
    assert _dlq_keys([r.value for r in dlq if r.value]) == _dlq_keys(expected.outputs[s.topic_dlq])
    assert stored_states(dep, expected.states) == expected.states


def stored_states(dep: Deployment, expected: dict[str, bytes], timeout_s: float = 60.0) -> dict[str, bytes]:
    """The latest device states in the changelog, once they equal ``expected`` (or after
    ``timeout_s``, for the caller's assertion to show the difference). The last states are
    stored by a worker's last checkpoint, up to a checkpoint interval after its last output
    (see agents.normalize)."""
    topic = dep.settings.changelog_topic
    try:
        changelog = dep.read(
            topic, idle_s=1.0, until=lambda r: latest_states(r) == expected, timeout_s=timeout_s
        )
    except TimeoutError:
        changelog = dep.read(topic, idle_s=1.0)
    return latest_states(changelog)


def _has_ids(ids: Iterable[str], id_field: str) -> Callable[[list[Record]], bool]:
    """``until`` for :func:`read_topic`: every id in ``ids`` has been read."""
    missing = set(ids)
    seen = 0

    def check(records: list[Record]) -> bool:
        nonlocal seen
        for r in records[seen:]:
            if r.value:
                missing.discard(decode_output(r.value)[id_field])
        seen = len(records)
        return not missing

    return check


class TopicTail:
    """A running count of a topic's records, read incrementally by one consumer so that
    each poll is cheap (re-reading the whole topic lets a fast worker overshoot the kill
    points)."""

    def __init__(self, dep: Deployment, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": dep.bootstrap,
                "group.id": f"tail-{topic}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(dep.partitions)])
        self.seen = 0

    def __call__(self) -> int:
        # One fetch per call: draining until quiet would wait for the worker to finish.
        msgs = self._consumer.consume(10_000, 0.05)
        self.seen += sum(1 for m in msgs if m.error() is None)
        return self.seen

    def close(self) -> None:
        self._consumer.close()


def wait_for(progress: Callable[[], int], target: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress() >= target:
            return
        time.sleep(0.02)
    raise TimeoutError(f"progress stuck below {target}")


def committed_offsets(dep: Deployment, topic: str) -> dict[int, int]:
    """The worker group's committed offset per partition of ``topic`` (negative: none)."""
    with Offsets(dep.bootstrap, dep.settings.app_id, timeout_s=10) as offsets:
        committed = offsets.committed(topic, range(dep.partitions))
    return {p: -1001 if offset is None else offset for p, offset in committed.items()}


def end_offsets(dep: Deployment, topic: str) -> dict[int, int]:
    """The broker's log end offset per partition of ``topic`` (ListOffsets, exact on Kafka)."""
    with Offsets(dep.bootstrap, timeout_s=10) as offsets:
        ends = offsets.ends((topic, p) for p in range(dep.partitions))
    return {p: end for (_t, p), end in ends.items()}


def log_ends(records: Iterable[Record]) -> dict[int, int]:
    """Each partition's next offset after ``records`` (the records read)."""
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends


def wait_committed(dep: Deployment, topic: str, ends: dict[int, int], timeout: float = 30.0) -> None:
    """Wait until the group has committed ``topic`` up to ``ends`` on every partition."""
    deadline = time.monotonic() + timeout
    while committed_offsets(dep, topic) != ends and time.monotonic() < deadline:
        time.sleep(0.5)
    assert committed_offsets(dep, topic) == ends
