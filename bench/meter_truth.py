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

from aurora_streams.domain.aggregates import DayRecord, bucket_windows, day_of
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

    def send(self, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None:
        emitted: list[NormalizedReading | AnomalyEvent] = []
        out = self.processor.process(
            key, value, partition=0, offset=self.offset,
            timestamp_ms=self.broker_ts_ms if timestamp_ms is None else timestamp_ms,
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
                day.apply_reading(rec)
            else:
                prev = self.anomalies.get(rec.anomaly_id)
                if prev is None or rec.revision >= prev.revision:
                    self.anomalies[rec.anomaly_id] = rec

    def energy(self) -> dict[tuple[str, str, str], float]:
        """Per (device, channel, direction): the sum of the latest revision's delta of each
        reading."""
        out: dict[tuple[str, str, str], float] = defaultdict(float)
        for rec in self.readings.values():
            out[(rec.device_id, rec.channel, rec.direction or "-")] += rec.delta_kwh or 0.0
        return dict(out)

    def aggregated(self) -> dict[tuple[str, str, str], float]:
        """Per (device, channel, direction): what the day aggregates hold over all time."""
        directions = {(r.device_id, r.channel): r.direction or "-" for r in self.readings.values()}
        out: dict[tuple[str, str, str], float] = defaultdict(float)
        for (device, channel, _day), record in self.days.items():
            for b in bucket_windows([record], 86_400_000, -(2**62), 2**62):
                out[(device, channel, directions[(device, channel)])] += b.sum + b.excluded_sum
        return dict(out)

    def active_anomalies(self) -> list[AnomalyEvent]:
        """Anomalies whose latest revision is raised (not withdrawn) on the reading's latest
        revision."""
        return [
            a for a in self.anomalies.values()
            if not a.cleared and (r := self.readings.get(a.event_id)) is not None and a.revision == r.revision
        ]  # fmt: skip


def file_energy(days: Iterable[DayBlock | AccumulationRead]) -> dict[tuple[str, str, str], float]:
    """The file's own energy per (NMI, channel, direction), energy channels only: NEM12's
    direction from its suffix (E consumption, B generation, "-" otherwise), NEM13's from its
    DirectionIndicator (E, export from the market, is consumption; I is generation)."""
    best: dict[tuple[str, str, int], tuple[tuple[int, int], float]] = {}
    quantities: dict[tuple[str, str, str], float] = defaultdict(float)
    for day in days:
        if day.unit is None:
            continue
        if isinstance(day, AccumulationRead):
            direction = "consumption" if day.direction == "E" else "generation"
            quantities[(day.nmi, day.suffix, direction)] += day.energy_kwh()
            continue
        for i, value in enumerate(day.values):
            if value is None:
                continue
            key = (day.nmi, day.suffix, day.interval_end_ms(i))
            version = (day.update_ms if day.update_ms is not None else -1, QUALITY_RANK[day.qualities[i]])
            held = best.get(key)
            if held is None or version > held[0]:
                best[key] = (version, value * day.factor)
    out: dict[tuple[str, str, str], float] = defaultdict(float)
    for (nmi, suffix, _ts), (_v, kwh) in best.items():
        out[(nmi, suffix, {"E": "consumption", "B": "generation"}.get(suffix[:1].upper(), "-"))] += kwh
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


_HALF_HOUR_MS = 1_800_000
_SPACING = 400
"""Readings between two injected faults: far enough apart that they do not interact."""


def household_series() -> list[tuple[int, float]]:
    """The real 2-year household: (interval end, kWh) every 30 minutes."""
    path = DATA / "series" / "nem12_4103794252_E1_30min.csv.gz"
    out = []
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            end = datetime.fromisoformat(row["t_end"]).replace(tzinfo=NEM_TIME)
            out.append((int(end.timestamp() * 1000), float(row["value"])))
    return out


class Injected:
    """Faults injected at known places, and where each may legitimately show: per anomaly
    type, the interval ends it explains (a fault's side effects count as its own: the slot
    a late or future reading left empty is a true gap)."""

    def __init__(self) -> None:
        self.faults: list[tuple[str, str, int]] = []
        """(type, device, interval end where it must be detected)"""
        self.explains: dict[tuple[str, str], set[int]] = defaultdict(set)
        """(device, anomaly type) -> interval ends a fault explains"""

    def add(self, kind: str, device: str, at: int, *also: tuple[str, Iterable[int]]) -> None:
        self.faults.append((kind, device, at))
        self.explains[(device, kind)].add(at)
        for other, ends in also:
            self.explains[(device, other)].update(ends)


def faulty_streams(
    series: list[tuple[int, float]],
) -> tuple[list[tuple[int, dict[str, Any]]], Injected, float]:
    """Raw readings of two meters built from the real series, in send order with their
    broker times: an interval meter with spikes, zero runs, frozen runs, gaps, duplicates,
    late and future readings, and a register meter (the same energy, a 10,000 kWh register
    that wraps) with resets, frozen registers and gaps. Returns (messages, faults, the
    energy the register meter's resets make unknowable)."""
    inj = Injected()
    sent: list[tuple[int, dict[str, Any]]] = []
    kinds = ("spike", "zero_run", "frozen", "gap", "duplicate", "late", "future")
    plan = {i: kinds[n % len(kinds)] for n, i in enumerate(range(_SPACING, len(series) - 200, _SPACING))}
    held: dict[int, dict[str, Any]] = {}
    skip_until = -1
    override: dict[int, float] = {}

    def ivl(ts: int, v: float) -> dict[str, Any]:
        return {"device_id": "f-ivl", "channel": "E1", "kind": "interval", "ts": ts, "value": round(v, 3),
                "unit": "kWh", "interval_s": 1800}  # fmt: skip

    ends = [ts for ts, _ in series]
    for i, (ts, v) in enumerate(series):
        arrival = ts + 60_000
        kind = plan.get(i)
        if kind == "spike":
            v += 10.0  # 20 kW for half an hour on a household that draws about 5
            inj.add("spike", "f-ivl", ts)
        elif kind == "zero_run":
            override.update({j: 0.0 for j in range(i, i + 48)})  # a day of zeros
            inj.add("zero_run", "f-ivl", ts, ("zero_run", ends[i : i + 48]))
        elif kind == "frozen":
            c = max(round(v, 3), 0.3)
            override.update({j: c for j in range(i, i + 14)})  # seven hours of one value
            inj.add("frozen", "f-ivl", ts, ("frozen", ends[i : i + 14]))
        elif kind == "gap":
            skip_until = i + 3
            inj.add("gap", "f-ivl", ends[i + 4])
        elif kind == "late":
            held[i + 20] = ivl(ts, v)  # ten hours late: beyond the 6-hour horizon
            inj.add("late_beyond_horizon", "f-ivl", ts, ("gap", [ends[i + 1]]))
            continue
        elif kind == "future":
            sent.append((arrival, ivl(ts + 2 * 86_400_000, v)))  # the meter's clock two days ahead
            inj.add("future_timestamp", "f-ivl", ts + 2 * 86_400_000, ("gap", [ends[i + 1]]))
            continue
        if i <= skip_until:
            continue
        value = override.get(i, v)
        sent.append((arrival, ivl(ts, value)))
        if kind == "duplicate":
            sent.append((arrival + 1000, ivl(ts, value)))
            inj.add("duplicate", "f-ivl", ts)
        if i in held:
            sent.append((arrival, held.pop(i)))

    # The register meter: the same energy on a 10,000 kWh register from 5,000.
    modulus, register, lost = 10_000.0, 5_000.0, 0.0
    # Resets rarely (every ninth fault), so that the register also reaches its modulus and wraps.
    rplan = {
        i: "counter_reset" if n % 9 == 8 else ("frozen", "gap")[n % 2]
        for n, i in enumerate(range(_SPACING + 7, len(series) - 200, _SPACING))
    }
    stuck: dict[int, float] = {}
    skip_until = -1
    previous = register
    for i, (ts, v) in enumerate(series):
        register += v
        kind = rplan.get(i)
        if kind == "counter_reset" and 500 < register % modulus < 8_500:
            lost += v  # the step's energy: a reset register cannot say it
            register = v  # reset to zero, then counted this interval
            inj.add("counter_reset", "f-reg", ts)
        elif kind == "frozen":
            stuck.update({j: register % modulus for j in range(i, i + 14)})
            # When it comes unstuck, seven hours of energy arrive in one step: a spike, rightly.
            inj.add("frozen", "f-reg", ts, ("frozen", ends[i : i + 14]), ("spike", [ends[i + 14]]))
        elif kind == "gap":
            skip_until = i + 3
            inj.add("gap", "f-reg", ends[i + 4])
        shown = stuck.get(i, register % modulus)
        if register % modulus < previous % modulus and kind != "counter_reset" and i not in stuck:
            inj.add("rollover", "f-reg", ts)
        previous = register
        if i <= skip_until:
            continue
        sent.append((ts + 60_000, {"device_id": "f-reg", "channel": "E1", "kind": "register", "ts": ts,
                                   "value": round(shown, 3), "unit": "kWh"}))  # fmt: skip
    return sent, inj, lost


def run_faults() -> dict[str, Any]:
    """Recall and precision per anomaly type with faults injected at known places into the
    real household series, and the energy booked against the energy sent."""
    import orjson

    series = household_series()
    messages, inj, lost = faulty_streams(series)
    booked = Booked(build_processor(load_settings()), 0)
    duplicates_seen: set[int] = set()
    for arrival, reading in messages:
        before = booked.processor.stats["duplicate"]
        booked.send(reading["device_id"].encode(), orjson.dumps(reading), arrival)
        if booked.processor.stats["duplicate"] > before:
            duplicates_seen.add(reading["ts"])
    # Detections as raised (a future-stamped reading's anomaly stays raised on its record,
    # which the true reading at that time supersedes later).
    raised = [a for a in booked.anomalies.values() if not a.cleared]
    found: dict[tuple[str, str], set[int]] = defaultdict(set)
    for a in raised:
        found[(a.device_id, a.type)].add(a.ts_end)
    per_type: dict[str, dict[str, Any]] = {}
    for kind, device, at in inj.faults:
        row = per_type.setdefault(kind, {"injected": 0, "detected": 0})
        row["injected"] += 1
        hit = (
            at in duplicates_seen
            if kind == "duplicate"
            else bool(found[(device, kind)] & inj.explains[(device, kind)])
        )
        row["detected"] += hit
    for kind, row in per_type.items():
        row["recall"] = round(row["detected"] / row["injected"], 4)
        if kind == "duplicate":
            row["flagged"], row["precision"] = (
                len(duplicates_seen),
                round(row["detected"] / max(1, len(duplicates_seen)), 4),
            )
            continue
        flagged = [(d, ts) for (d, t), tss in found.items() if t == kind for ts in tss]
        true = sum(1 for d, ts in flagged if ts in inj.explains[(d, kind)])
        row["flagged"], row["precision"] = len(flagged), round(true / len(flagged), 4) if flagged else None
    others = Counter(t for (d, t), tss in found.items() if t not in per_type for _ in tss)
    # The interval meter's true energy: each slot's reading as the meter measured it (with
    # the injected spikes and runs), once; a future-stamped reading's energy belongs to a slot
    # that never arrives, so it is reported beside.
    slots: dict[int, float] = {}
    future_kwh = 0.0
    for arrival, r in messages:
        if r["device_id"] != "f-ivl":
            continue
        if r["ts"] > arrival + 300_000:
            future_kwh += r["value"]
        else:
            slots[r["ts"]] = r["value"]
    sent_ivl = sum(slots.values())
    energy = booked.energy()
    true_reg = sum(v for _, v in series[1:])
    return {
        "readings_sent": len(messages),
        "per_type": dict(sorted(per_type.items())),
        "other_anomalies": dict(others),
        "interval_meter": {
            "measured_kwh": round(sent_ivl, 3),
            "booked_kwh": round(energy.get(("f-ivl", "E1", "consumption"), 0.0), 3),
            "future_stamped_kwh": round(future_kwh, 3),
        },
        "register_meter": {
            "consumed_kwh": round(true_reg, 3),
            "booked_kwh": round(energy.get(("f-reg", "E1", "consumption"), 0.0), 3),
            "unknowable_at_resets_kwh": round(lost, 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files-only", action="store_true")
    parser.add_argument("--series-only", action="store_true")
    parser.add_argument("--faults-only", action="store_true")
    parser.add_argument("--show", type=int, default=20, help="print this many differing files")
    parser.add_argument("--no-write", action="store_true", help="print, do not record a result")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report: dict[str, Any] = {}
    if not (args.series_only or args.faults_only):
        files = run_files(args.show)
        report["files"] = files
        print(
            f"files: {files['accepted']} accepted by the strict reader "
            f"({files['rejected_by_reader']} rejected); {files['files_differing']} differ in energy; "
            f"{files['files_with_dead_letters']} with dead letters; {files['files_unreadable']} unreadable"
        )
    if not (args.files_only or args.faults_only):
        report["series"] = run_series()
        for name, s in report["series"].items():
            print(f"series {name}: {s['readings']} readings, {s['share_with_anomaly']:.2%} with an anomaly "
                  f"{s['anomalies_by_type']}, dlq={s['dead_letters']}")  # fmt: skip
    if not (args.files_only or args.series_only):
        report["faults"] = faults = run_faults()
        for kind, row in faults["per_type"].items():
            print(f"fault {kind:<20} injected {row['injected']:>3}  recall {row['recall']:.1%}  "
                  f"flagged {row['flagged']:>4}  precision {row['precision']}")  # fmt: skip
        print(f"  other anomalies: {faults['other_anomalies']}")
        print(f"  interval meter: {faults['interval_meter']}  register meter: {faults['register_meter']}")
    if not args.no_write:
        print(
            write_report(
                "meter-truth", "meter truth: worker energy vs the files, anomaly share on real series", report
            )
        )


if __name__ == "__main__":
    main()
