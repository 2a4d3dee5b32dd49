"""Forecaster cost and accuracy on the real series.

    .venv/bin/python bench/forecast.py [--runs 3]

Per series (30-minute windows): microseconds per update (learn one window, keep the
day-ahead bookkeeping), bytes of encoded state per device channel, and the day-ahead MAE
ratio against the seasonal-naive baseline with the 90% interval's coverage. Targets:
≤ 50 µs per update, ≤ 64 KB per device, ratio ≤ 0.85, coverage 85-95%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import orjson
from common import ROOT, write_report

from aurora_streams.backtest import load_windows
from aurora_streams.domain.forecast import DeviceForecaster, ForecastConfig

SERIES = ROOT.parent / "shared" / "data" / "series"
CASES = [
    ("nem12_4103794252_E1_30min.csv.gz", "E1"),
    ("nem12_redacted_E1B1_5min.csv.gz", "E1"),
    ("nem12_redacted_E1B1_5min.csv.gz", "B1"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    report = []
    for name, suffix in CASES:
        windows = load_windows(SERIES / name, window_min=30, suffix=suffix)
        costs = []
        for _ in range(args.runs):
            model = DeviceForecaster(1_800_000, ForecastConfig())
            started = time.perf_counter()
            for ts, y in windows:
                model.learn(ts, y)
            costs.append((time.perf_counter() - started) / len(windows) * 1e6)
        acc = model.accuracy()
        row = {
            "series": name,
            "channel": suffix,
            "windows": len(windows),
            "us_per_update_median": statistics.median(costs),
            "us_per_update_min": min(costs),
            "state_bytes": len(orjson.dumps(model.to_dict())),
            "day_ahead_mae_ratio": acc["mae_ratio"],
            "coverage_90": acc["coverage"],
            "smape": acc["smape"],
        }
        report.append(row)
        print(json.dumps(row))
    out = write_report("forecast", "online forecaster (issue 6)", {"results": report})
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
