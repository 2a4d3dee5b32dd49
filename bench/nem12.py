"""NEM12 parsing benchmark: interval readings parsed per second, and peak memory.

    .venv/bin/python bench/nem12.py [--runs 3]

On the largest sample of the corpus (by interval readings), in the same run:

* ``aurora``: our streaming reader, strict=False (lenient), summarizing every day.
* ``baseline_split_float``: the floor of any Python CSV parser: split each line and float()
  every interval value, with no validation at all.
* ``nemreader``: nemreader 0.9.2 (the test oracle) reading the same file.

Peak memory is tracemalloc's peak for our reader (Python allocations while parsing).
Results go to ``bench/results/nem12-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

from common import ROOT, write_report

from aurora_streams.ingest.nem12 import Nem12Reader, open_nem12
from aurora_streams.ingest.summary import IngestSummary

DATA = ROOT.parent / "shared" / "data" / "nem12"


def largest_sample() -> tuple[Path, int]:
    best: tuple[Path, int] | None = None
    for path in sorted(p for p in DATA.rglob("*") if p.is_file() and p.suffix != ".md"):
        if "invalid" in path.parts or "NEM12-Errors" in path.parts or "nem13" in str(path).lower():
            continue
        try:
            n = sum(len(d.values) for d in Nem12Reader.from_path(path, "lenient"))
        except Exception:
            continue
        if best is None or n > best[1]:
            best = (path, n)
    assert best is not None
    return best


def ours(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    summary = IngestSummary()
    for day in Nem12Reader.from_path(path, "lenient"):
        summary.add(day)
    return time.perf_counter() - started, summary.readings


def baseline(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    stream, _ = open_nem12(path)
    n = 0
    length = 48
    for line in stream:
        f = line.rstrip("\r\n").split(",")
        if f[0] == "200":
            length = 1440 // int(f[8])
        elif f[0] == "300":
            values = [float(v) for v in f[2 : 2 + length] if v]
            n += len(values)
    return time.perf_counter() - started, n


def nemreader(path: Path) -> tuple[float, int]:
    from nemreader import read_nem_file

    logging.disable(logging.CRITICAL)
    started = time.perf_counter()
    data = read_nem_file(str(path))
    n = sum(len(rs) for ch in data.readings.values() for rs in ch.values())
    return time.perf_counter() - started, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    path, readings = largest_sample()
    print(f"largest sample: {path.relative_to(DATA)} ({readings} interval readings)")
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        result = {}
        for name, fn in (("aurora", ours), ("baseline_split_float", baseline), ("nemreader", nemreader)):
            seconds, n = fn(path)
            result[name] = n / seconds
        runs.append(result)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in result.items()), flush=True)
    tracemalloc.start()
    ours(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    summary = {
        k: {"min": min(r[k] for r in runs), "median": statistics.median(r[k] for r in runs)} for k in runs[0]
    }
    report = {
        "sample": {
            "file": str(path.relative_to(DATA)),
            "interval_readings": readings,
            "bytes": path.stat().st_size,
        },
        "readings_per_s": summary,
        "peak_python_memory_bytes": peak,
        "runs": runs,
    }
    out = write_report("nem12", "NEM12 interval readings parsed per second (issue 5)", report)
    print(json.dumps({"readings_per_s": summary, "peak_python_memory_bytes": peak}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
