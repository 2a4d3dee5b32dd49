"""The soak's final comparison: what the worker wrote against an independent reference.

The reference is the worker's pure core (:class:`aurora_streams.processing.Processor`) run
over the raw topic as the broker holds it, partition by partition in offset order (a device
lives on one partition, so partitions are independent). Both sides are reduced to the latest
version of every normalized record and anomaly by the sink's rule (the higher ``(revision,
updated_at)``, first of equals), kept as a digest of the record's bytes: an hour at 2,000
readings/s is 7 million records, and the worker's outputs are byte-identical to the
reference's (the encoding is deterministic and instants come from broker timestamps).

It streams: memory is the two maps of digests, not the topics.

It also measures end-to-end latency from every normalized record: the broker stamps a raw
record on arrival (LogAppendTime), the record's ``ingested_at`` carries that stamp, and the
normalized record's own timestamp is when the worker handed it to its producer (CreateTime):
their difference is the reading's time from the broker's log to the worker's output, replays
after a crash included (a re-published record counts with its later stamp).
"""

from __future__ import annotations

import hashlib
import statistics
import time
from array import array
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from aurora_streams.codecs import decode_output
from aurora_streams.processing import build_processor, new_state
from aurora_streams.settings import Settings

Latest = dict[str, tuple[int, str, bytes]]
"""id -> (revision, updated_at or "", digest of the record's bytes). JSON outputs only (the
soak's default encoding)."""


def _digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=12).digest()


def _keep(latest: Latest, doc: dict[str, Any], id_field: str, value: bytes) -> None:
    # JSON instants are fixed-width ISO-8601 UTC, so they order as strings; "" (no version
    # stamp) before any.
    version = (doc["revision"], doc.get("updated_at") or "")
    held = latest.get(doc[id_field])
    if held is None or version > held[:2]:
        latest[doc[id_field]] = (*version, _digest(value))


class Latency:
    """End-to-end latencies in ms, by the minute (of the raw record's arrival) they began in."""

    def __init__(self) -> None:
        self.by_minute: dict[int, array[int]] = {}

    def add(self, doc: dict[str, Any], output_ms: int) -> None:
        ingested = round(datetime.fromisoformat(doc["ingested_at"]).timestamp() * 1000)
        self.by_minute.setdefault(ingested // 60_000, array("q")).append(output_ms - ingested)

    @staticmethod
    def _stats(values: list[int]) -> dict[str, float]:
        values.sort()
        n = len(values)
        return {
            "records": n,
            "p50_ms": values[n // 2],
            "p99_ms": values[min(n - 1, n * 99 // 100)],
            "p999_ms": values[min(n - 1, n * 999 // 1000)],
            "max_ms": values[-1],
            "mean_ms": round(statistics.fmean(values), 1),
        }

    def report(self) -> dict[str, Any]:
        if not self.by_minute:
            return {}
        first = min(self.by_minute)
        minutes = [{"minute": m - first, **self._stats(list(v))} for m, v in sorted(self.by_minute.items())]
        overall = self._stats([x for v in self.by_minute.values() for x in v])
        return {"overall": overall, "by_minute": minutes}


def _letter(value: bytes) -> tuple[int, int, int | None, str]:
    d = decode_output(value)
    return d["source_partition"], d["source_offset"], d["reading_index"], d["error_reason"]


def read_partition(bootstrap: str, topic: str, partition: int, timeout_s: float = 600) -> Iterator[Any]:
    """Every message of one partition from the beginning to its end (end-of-partition)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"soak-check-{time.monotonic_ns()}",
        "enable.auto.commit": False, "enable.partition.eof": True, "fetch.wait.max.ms": 50,
    })  # fmt: skip
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(5000, 0.5):
                err = m.error()
                if err is None:
                    yield m
                elif err.code() == KafkaError._PARTITION_EOF:
                    return
                else:
                    raise RuntimeError(f"{topic}[{partition}]: {err}")
        raise TimeoutError(f"{topic}[{partition}] not read to its end in {timeout_s} s")
    finally:
        consumer.close()


def _ranges(offsets: list[int], limit: int = 20) -> list[list[int]]:
    """Sorted offsets as [first, last, count] runs of consecutive offsets, the first ``limit``."""
    runs: list[list[int]] = []
    for o in sorted(offsets):
        if runs and o <= runs[-1][1] + 1:
            runs[-1][1] = o
            runs[-1][2] += 1
        else:
            runs.append([o, o, 1])
    return runs[:limit]


def compare(
    bootstrap: str,
    settings: Settings,
    partitions: int,
    progress: Callable[[str], None],
    detail: bool = True,
) -> dict[str, Any]:
    """Run the reference over the raw topic and compare its latest records with the output
    topics'. Returns counts: missing, extra and differing ids per topic, outputs the
    reference never produced ("invented"), and dead letters by reason on both sides.

    With ``detail`` (memory: one int per expected id), the raw offsets the missing and
    differing records came from, per partition as runs, and the first invented records."""
    processor = build_processor(settings)
    want: dict[str, Latest] = {settings.topic_normalized: {}, settings.topic_anomalies: {}}
    source: dict[str, int] = {}
    produced: set[bytes] = set()
    dlq_want: set[tuple[int, int, int | None, str]] = set()
    raw = 0
    started = time.monotonic()
    for p in range(partitions):
        states: dict[str, Any] = {}
        for m in read_partition(bootstrap, settings.topic_raw, p):
            raw += 1
            ts = m.timestamp()[1]
            for out in processor.process(m.key(), m.value(), partition=p, offset=m.offset(), timestamp_ms=ts,
                                         states=states, load=new_state):  # fmt: skip
                if out.topic == settings.topic_dlq:
                    d = decode_output(out.value)
                    dlq_want.add(
                        (d["source_partition"], d["source_offset"], d["reading_index"], d["error_reason"])
                    )
                    continue
                produced.add(_digest(out.value))
                id_field = "event_id" if out.topic == settings.topic_normalized else "anomaly_id"
                doc = orjson.loads(out.value)
                _keep(want[out.topic], doc, id_field, out.value)
                if detail:
                    source[doc[id_field]] = p << 40 | m.offset()
        progress(f"reference: partition {p} done, {raw:,} raw messages, {time.monotonic() - started:.0f} s")
    report: dict[str, Any] = {"raw_messages": raw, "reference_s": round(time.monotonic() - started, 1)}
    latency = Latency()
    for topic, id_field in (
        (settings.topic_normalized, "event_id"),
        (settings.topic_anomalies, "anomaly_id"),
    ):
        got: Latest = {}
        records = invented = 0
        invented_examples: list[dict[str, Any]] = []
        for p in range(partitions):
            for m in read_partition(bootstrap, topic, p):
                value = m.value()
                if value is None:
                    continue
                records += 1
                doc = orjson.loads(value)
                if topic == settings.topic_normalized:
                    latency.add(doc, m.timestamp()[1])
                if _digest(value) not in produced:
                    invented += 1
                    if detail and len(invented_examples) < 20:
                        invented_examples.append({"partition": p, "offset": m.offset(), "record": doc})
                _keep(got, doc, id_field, value)
        expected = want[topic]
        missing = [k for k in expected if k not in got]
        differing = [k for k, v in expected.items() if k in got and got[k] != v]
        report[topic] = {
            "records_read": records,
            "ids_expected": len(expected),
            "ids_got": len(got),
            "missing": len(missing),
            "extra": sum(1 for k in got if k not in expected),
            "differing": len(differing),
            "invented": invented,
        }
        if detail and (missing or differing or invented):
            for name, ids in (("missing", missing), ("differing", differing)):
                by_partition: dict[int, list[int]] = {}
                for k in ids:
                    by_partition.setdefault(source[k] >> 40, []).append(source[k] & (1 << 40) - 1)
                runs = {str(q): _ranges(v) for q, v in sorted(by_partition.items())}
                report[topic][f"{name}_raw_offsets"] = runs
            report[topic]["invented_examples"] = invented_examples
        progress(f"{topic}: {report[topic]}")
    report["e2e_latency"] = latency.report()
    progress(f"end-to-end latency: {report['e2e_latency'].get('overall')}")
    dlq_got: set[tuple[int, int, int | None, str]] = set()
    for p in range(partitions):
        for m in read_partition(bootstrap, settings.topic_dlq, p):
            if m.value() is not None:
                d = decode_output(m.value())
                dlq_got.add(
                    (d["source_partition"], d["source_offset"], d["reading_index"], d["error_reason"])
                )
    report[settings.topic_dlq] = {
        "expected": len(dlq_want),
        "got": len(dlq_got),
        "missing": len(dlq_want - dlq_got),
        "extra": len(dlq_got - dlq_want),
    }
    report["equal"] = (
        all(
            report[t][k] == 0
            for t in (settings.topic_normalized, settings.topic_anomalies)
            for k in ("missing", "extra", "differing", "invented")
        )
        and report[settings.topic_dlq]["missing"] == 0
        and report[settings.topic_dlq]["extra"] == 0
    )
    return report
