"""Replay a meter series through the online forecaster and measure it against the
seasonal-naive baseline, per horizon. Used by ``aurora-streams backtest``.

Input: CSV (optionally gzip) with a ``t_end`` column (ISO-8601; naive times are NEM time,
UTC+10) and a ``value`` column, optionally ``suffix`` to pick a channel. Readings are summed
into windows of ``window_min`` minutes (the model learns windows as they close).
"""

from __future__ import annotations

import csv
import gzip
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from aurora_streams.domain.forecast import DeviceForecaster, ForecastConfig

__all__ = ["BacktestResult", "backtest", "load_windows"]

_NEM = timezone(timedelta(hours=10))


def load_windows(path: Path, *, window_min: int, suffix: str | None = None) -> list[tuple[int, float]]:
    opener = gzip.open if path.suffix == ".gz" else open
    windows: dict[int, float] = {}
    size = window_min * 60_000
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for row in csv.DictReader(f):
            if suffix is not None and row.get("suffix", suffix) != suffix:
                continue
            end = datetime.fromisoformat(row["t_end"])
            if end.tzinfo is None:
                end = end.replace(tzinfo=_NEM)
            ms = int(end.timestamp() * 1000)
            key = (ms - 1) // size * size + size
            windows[key] = windows.get(key, 0.0) + float(row["value"])
    return sorted(windows.items())


@dataclass
class BacktestResult:
    windows: int
    horizons: dict[int, dict[str, float]]
    """steps ahead -> {mae, naive_mae, ratio, scored}."""
    day_ahead: dict[str, float]
    """The online model's own running day-ahead accuracy and interval coverage."""
    state_bytes: int


def backtest(
    series: Iterable[tuple[int, float]], *, window_ms: int, config: ForecastConfig, horizons: Iterable[int]
) -> BacktestResult:
    import orjson

    model = DeviceForecaster(window_ms, config)
    day = model.day
    hs = sorted(set(h for h in horizons if 1 <= h <= day))
    pending: dict[int, deque[float | None]] = {h: deque(maxlen=h) for h in hs}
    history: deque[float] = deque(maxlen=day)
    errors = {h: [0.0, 0.0, 0] for h in hs}
    n = 0
    for ts, y in series:
        for h in hs:
            q = pending[h]
            if len(q) == h and q[0] is not None and len(history) == day:
                e = errors[h]
                e[0] += abs(y - q[0])
                e[1] += abs(y - history[-day])  # seasonal naive: the same window a day earlier
                e[2] += 1
        model.learn(ts, y)
        history.append(y)
        n += 1
        points = [p.value for p in model.forecast(max(hs))] if hs else []
        for h in hs:
            pending[h].append(points[h - 1] if points else None)
    table = {
        h: {
            "mae": e[0] / e[2],
            "naive_mae": e[1] / e[2],
            "ratio": e[0] / e[1] if e[1] else float("nan"),
            "scored": e[2],
        }
        for h, e in errors.items()
        if e[2]
    }
    return BacktestResult(n, table, model.accuracy(), len(orjson.dumps(model.to_dict())))
