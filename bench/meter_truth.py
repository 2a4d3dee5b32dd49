"""Meter truth: does what the worker books equal what the meter data says?

    .venv/bin/python bench/meter_truth.py [--files-only | --series-only] [--show N]

Two checks, through the worker's own code path (``processing.Processor``, which the normalize
agent runs per message, and the day aggregates it keeps), with no broker in between: the
worker adds Kafka I/O around the same calls (``tests/integration/test_nem12_roundtrip.py``
runs real files through a real worker and checks that it equals this path).

* **Files.** Every NEM12/NEM13 file of ``../shared/data/nem12`` that the strict reader
  accepts is ingested as ``aurora-streams ingest`` would publish it, processed, and the
  energy booked per NMI and channel (the sum of the latest revision's delta of every
  reading) is compared with the file's own energy: interval sums of the best version of each
  interval (newest UpdateDateTime, then better quality, then first in the file: the worker's
  revision rule), and for NEM13 the 250 records' Quantity. The aggregates' validated
  energy plus their excluded energy must equal the same figure.
* **Series.** The real household series of ``../shared/data/series`` (no faults injected)
  are sent as live interval readings; the report gives anomaly events per type and the
  share of readings with any anomaly (target: at most 0.5%).

Results go to ``bench/results/meter-truth-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from common import ROOT, write_report

from aurora_streams.domain.aggregates import DayRecord, bucket_windows, day_of, is_validated
from aurora_streams.domain.flags import QUALITY_RANK
from aurora_streams.domain.model import AnomalyEvent, NormalizedReading
from aurora_streams.ingest.nem12 import AccumulationRead, DayBlock, Nem12Error, Nem12Reader
from aurora_streams.ingest.publish import ingest_reader, open_reader
from aurora_streams.ingest.summary import IngestSummary
from aurora_streams.processing import Processor, build_processor, new_state
from aurora_streams.settings import load_settings

DATA = ROOT.parent / "shared" / "data"
NEM_TIME = timezone(timedelta(hours=10))
_TOLERANCE = 1e-6


class Booked:
    """What the worker booked from a stream of raw messages: the latest revision of every
    normalized reading and of every anomaly, and the day aggregates built from them."""

    def __init__(self, processor: Processor, broker_ts_ms: int) -> None:
        self.processor = processor
        self.broker_ts_ms = broker_ts_ms
        self.states: dict[str, Any] = {}
        self.readings: dict[str, NormalizedReading] = {}
        self.anomalies: dict[str, AnomalyEvent] = {}
        self.days: dict[tuple[str, str, int], DayRecord] = {}
        self.dead_letters = 0
        self.offset = 0

    def send(self, key: bytes, value: bytes) -> None:
        emitted: list[NormalizedReading | AnomalyEvent] = []
        out = self.processor.process(
            key, value, partition=0, offset=self.offset, timestamp_ms=self.broker_ts_ms,
            states=self.states, load=new_state, emitted=emitted,
        )  # fmt: skip
        self.offset += 1
        self.dead_letters += sum(1 for o in out if o.topic == self.processor.topics.dlq)
        for rec in emitted:
            if isinstance(rec, NormalizedReading):
                old = self.readings.get(rec.event_id)
                if old is None or rec.revision >= old.revision:
                    self.readings[rec.event_id] = rec
                day = self.days.setdefault((rec.device_id, rec.channel, day_of(rec.ts_end)), DayRecord())
                day.apply(
                    rec.ts_end,
                    rec.delta_kwh,
                    rec.revision,
                    rec.updated_at,
                    rec.unit,
                    not is_validated(rec.flags),
                )
            else:
                prev = self.anomalies.get(rec.anomaly_id)
                if prev is None or rec.revision >= prev.revision:
                    self.anomalies[rec.anomaly_id] = rec

    def energy(self) -> dict[tuple[str, str], float]:
        """Per (device, channel): the sum of the latest revision's delta of each reading."""
        out: dict[tuple[str, str], float] = defaultdict(float)
        for rec in self.readings.values():
            out[(rec.device_id, rec.channel)] += rec.delta_kwh or 0.0
        return dict(out)

    def aggregated(self) -> dict[tuple[str, str], float]:
        """Per (device, channel): what the day aggregates hold over all time."""
        out: dict[tuple[str, str], float] = defaultdict(float)
        for (device, channel, _day), record in self.days.items():
            for b in bucket_windows([record], 86_400_000, -(2**62), 2**62):
                out[(device, channel)] += b.sum + b.excluded_sum
        return dict(out)

    def active_anomalies(self) -> list[AnomalyEvent]:
        """Anomalies whose latest revision is raised (not withdrawn) on the reading's latest
        revision."""
        return [
            a for a in self.anomalies.values()
            if not a.cleared and (r := self.readings.get(a.event_id)) is not None and a.revision == r.revision
        ]  # fmt: skip


def file_energy(days: Iterable[DayBlock | AccumulationRead]) -> dict[tuple[str, str], float]:
    """The file's own energy per (NMI, channel), energy channels only."""
    best: dict[tuple[str, str, int], tuple[tuple[int, int], float]] = {}
    quantities: dict[tuple[str, str], float] = defaultdict(float)
    for day in days:
        if day.unit is None:
            continue
        if isinstance(day, AccumulationRead):
            quantities[(day.nmi, day.suffix)] += day.energy_kwh()
            continue
        for i, value in enumerate(day.values):
            if value is None:
                continue
            key = (day.nmi, day.suffix, day.interval_end_ms(i))
            version = (day.update_ms if day.update_ms is not None else -1, QUALITY_RANK[day.qualities[i]])
            held = best.get(key)
            if held is None or version > held[0]:
                best[key] = (version, value * day.factor)
    out: dict[tuple[str, str], float] = defaultdict(float)
    for (nmi, suffix, _ts), (_v, kwh) in best.items():
        out[(nmi, suffix)] += kwh
    for key, kwh in quantities.items():
        out[key] += kwh
    return dict(out)


def corpus() -> list[Path]:
    root = DATA / "nem12"
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in (".md", ".json", ".py")
    )


def check_file(path: Path, processor: Processor, broker_ts_ms: int) -> dict[str, Any] | None:
    """None: the strict reader rejects the file (it is not published at all)."""
    try:
        days = list(Nem12Reader.from_path(path, "strict"))
    except Nem12Error:
        return None
    except Exception as exc:  # not a NEM file at all (a readme, a zip of other things)
        return {"file": str(path.relative_to(DATA)), "error": f"{type(exc).__name__}: {exc}"}
    truth = file_energy(days)
    booked = Booked(processor, broker_ts_ms)
    summary = IngestSummary()
    ingest_reader(
        functools.partial(open_reader, path), path.name, mode="strict", sink=booked.send, summary=summary
    )
    energy, aggregated = booked.energy(), booked.aggregated()
    differ = []
    for key in sorted(set(truth) | set(energy)):
        want, got, agg = truth.get(key, 0.0), energy.get(key, 0.0), aggregated.get(key, 0.0)
        tol = _TOLERANCE * max(1.0, abs(want))
        if abs(want - got) > tol or abs(want - agg) > tol:
            differ.append({"channel": "/".join(key), "file_kwh": round(want, 6), "booked_kwh": round(got, 6),
                           "aggregates_kwh": round(agg, 6)})  # fmt: skip
    return {
        "file": str(path.relative_to(DATA)),
        "channels": len(truth),
        "file_kwh": round(sum(truth.values()), 6),
        "booked_kwh": round(sum(energy.values()), 6),
        "readings": len(booked.readings),
        "dead_letters": booked.dead_letters,
        "anomalies": dict(Counter(a.type for a in booked.active_anomalies())),
        "differ": differ,
    }


def run_files(show: int) -> dict[str, Any]:
    settings = load_settings()
    broker_ts_ms = int(time.time() * 1000)
    results, rejected = [], []
    for path in corpus():
        r = check_file(path, build_processor(settings), broker_ts_ms)
        if r is None:
            rejected.append(str(path.relative_to(DATA)))
        else:
            results.append(r)
    bad = [r for r in results if r.get("differ") or r.get("error") or r.get("dead_letters")]
    for r in bad[:show]:
        print(f"  {r['file']}: {r.get('error') or ''} dlq={r.get('dead_letters')} {r.get('differ', [])[:3]}")
    return {
        "accepted": len(results),
        "rejected_by_reader": len(rejected),
        "files_differing": sum(1 for r in results if r.get("differ")),
        "files_with_dead_letters": sum(1 for r in results if r.get("dead_letters")),
        "files_unreadable": sum(1 for r in results if r.get("error")),
        "results": results,
        "rejected": rejected,
    }


_ID_CHARS = re.compile(r"[^A-Za-z0-9._:\-]")


def series_messages(path: Path) -> Iterable[tuple[bytes, bytes]]:
    """One raw message per row (a live meter sends each interval as it closes)."""
    import orjson

    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            device = _ID_CHARS.sub("", row["nmi"]) or "meter"
            end = datetime.fromisoformat(row["t_end"]).replace(tzinfo=NEM_TIME)
            start = datetime.fromisoformat(row["t_start"]).replace(tzinfo=NEM_TIME)
            quality = row["quality"][:1] or "A"
            reading: dict[str, Any] = {
                "device_id": device, "channel": row["suffix"], "kind": "interval",
                "ts": end.isoformat(), "value": float(row["value"]), "unit": row["uom"],
                "interval_s": int((end - start).total_seconds()), "quality": quality,
            }  # fmt: skip
            if row["quality"][1:].isdigit():
                reading["reason_code"] = int(row["quality"][1:])
            yield device.encode(), orjson.dumps(reading)


def run_series() -> dict[str, Any]:
    settings = load_settings()
    out: dict[str, Any] = {}
    for path in sorted((DATA / "series").glob("*.csv.gz")):
        booked = Booked(build_processor(settings), int(time.time() * 1000))
        for key, value in series_messages(path):
            booked.send(key, value)
        active = booked.active_anomalies()
        flagged = {a.event_id for a in active}
        n = len(booked.readings)
        out[path.name] = {
            "readings": n,
            "dead_letters": booked.dead_letters,
            "anomalies_by_type": dict(sorted(Counter(a.type for a in active).items())),
            "readings_with_anomaly": len(flagged),
            "share_with_anomaly": round(len(flagged) / n, 5) if n else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files-only", action="store_true")
    parser.add_argument("--series-only", action="store_true")
    parser.add_argument("--show", type=int, default=20, help="print this many differing files")
    parser.add_argument("--no-write", action="store_true", help="print, do not record a result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report: dict[str, Any] = {}
    if not args.series_only:
        files = run_files(args.show)
        report["files"] = files
        print(
            f"files: {files['accepted']} accepted by the strict reader "
            f"({files['rejected_by_reader']} rejected); {files['files_differing']} differ in energy; "
            f"{files['files_with_dead_letters']} with dead letters; {files['files_unreadable']} unreadable"
        )
    if not args.files_only:
        report["series"] = run_series()
        for name, s in report["series"].items():
            print(f"series {name}: {s['readings']} readings, {s['share_with_anomaly']:.2%} with an anomaly "
                  f"{s['anomalies_by_type']}, dlq={s['dead_letters']}")  # fmt: skip
    if not args.no_write:
        print(
            write_report(
                "meter-truth", "meter truth: worker energy vs the files, anomaly share on real series", report
            )
        )


if __name__ == "__main__":
    main()
