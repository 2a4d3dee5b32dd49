"""Online per-device forecasts: River's Holt-Winters with daily seasonality, learning one
closed interval at a time, with its running accuracy beside the seasonal-naive baseline.
No Faust imports.

:class:`DeviceForecaster` wraps ``river.time_series.HoltWinters`` (additive, a negligible
trend, seasonality = one week of intervals at the model's resolution: households keep weekly
habits, and on the real two-year series a weekly season beats a daily one, MAE ratio 0.70 vs
1.09) and adds what an operator needs to trust a forecast:

* **Running accuracy** of the day-ahead forecast (the forecast made one day before each
  interval): MAE and sMAPE of the model, and MAE of the seasonal-naive baseline (the same
  interval one day earlier), over the same intervals.
* **Prediction intervals** from an online estimate of the 90% quantile of the day-ahead
  absolute error, so a band is as wide as the model's recent misses, not a textbook formula.
* **An explicit, versioned codec** (:meth:`to_dict` / :meth:`from_dict`): the River model's
  components and warm-up values, the pending forecasts and the accuracy counters, as plain
  numbers. Size is bounded by the seasonality (a week plus a day of floats).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from river.time_series import HoltWinters

__all__ = ["CODEC_VERSION", "DeviceForecaster", "Forecast", "ForecastConfig"]

CODEC_VERSION: Final = 1
MODEL_ID: Final = "river.time_series.HoltWinters(additive, weekly seasonality)"


@dataclass(frozen=True, slots=True)
class ForecastConfig:
    alpha: float = 0.01
    """Level smoothing: how fast the overall level follows recent readings."""
    beta: float = 1e-9
    """Trend smoothing (River's additive seasonality needs a trend component; kept small so
    the trend stays near zero for meters, whose consumption has no lasting slope)."""
    gamma: float = 0.3
    """Seasonal smoothing: about 1/gamma seasons of history shape the profile."""
    season_days: int = 7
    """Length of the season in days (7: a weekly profile, which households often have)."""
    coverage: float = 0.90
    """Target share of actuals inside the prediction interval."""
    quantile_rate: float = 0.02
    """Step of the online quantile estimate, as a share of the current mean absolute error."""


@dataclass(frozen=True, slots=True)
class Forecast:
    ts_end: int
    value: float
    lower: float
    upper: float


class DeviceForecaster:
    """One device channel's model. ``learn`` must see intervals in time order, one per
    step of ``interval_ms`` (gaps are filled with the model's own forecast)."""

    def __init__(self, interval_ms: int, config: ForecastConfig | None = None) -> None:
        self.config = config or ForecastConfig()
        self.interval_ms = interval_ms
        self.day = max(1, 86_400_000 // interval_ms)
        self.season = max(2, self.day * self.config.season_days)
        self.model = HoltWinters(
            alpha=self.config.alpha, beta=self.config.beta, gamma=self.config.gamma, seasonality=self.season
        )
        self.last_ts: int | None = None
        self.learned = 0
        self.history: deque[float] = deque(maxlen=self.day)  # for the seasonal-naive baseline
        self.pending: deque[float | None] = deque(maxlen=self.day)  # day-ahead forecasts, oldest first
        self.err_q90 = 0.0
        self.n_scored = 0
        self.abs_err = 0.0
        self.smape = 0.0
        self.naive_abs_err = 0.0
        self.covered = 0

    @property
    def ready(self) -> bool:
        return bool(self.model._initialized)

    def learn(self, ts_end: int, value: float) -> None:
        """Learn the interval ending at ``ts_end``; earlier or equal times are ignored."""
        if self.last_ts is not None:
            if ts_end <= self.last_ts:
                return
            missing = (ts_end - self.last_ts) // self.interval_ms - 1
            for _ in range(min(missing, self.season)):  # fill a gap with what we expected
                self._step(self._expected(), observed=False)
        self._step(value, observed=True)
        self.last_ts = ts_end

    def _expected(self) -> float:
        if self.ready:
            return float(self.model.forecast(1)[0])
        return self.history[-1] if self.history else 0.0

    def _step(self, y: float, *, observed: bool) -> None:
        if len(self.pending) == self.day:
            predicted = self.pending[0]
            if observed and predicted is not None and len(self.history) == self.day:
                self._score(y, predicted, self.history[0])
        if self.ready:
            self.model.learn_one(y)
        else:
            self._warm_up(y)
        self.learned += 1
        self.history.append(y)
        self.pending.append(float(self.model.forecast(self.day)[-1]) if self.ready else None)

    def _warm_up(self, y: float) -> None:
        # River initializes the additive seasonality with ratios (y / level) and divides by
        # zero on an all-zero first day (night-time solar, zero-substituted days): collect the
        # first day here and initialize the components additively instead.
        m = self.model
        m._first_values.append(y)
        if len(m._first_values) < self.season:
            return
        level = sum(m._first_values) / len(m._first_values)
        m.level.append(level)
        if m.trend is not None:
            m.trend.append(0.0)
        if m.season is not None:
            m.season.extend(v - level for v in m._first_values)
        m._first_values = []
        m._initialized = True

    def _score(self, actual: float, predicted: float, naive: float) -> None:
        error = abs(actual - predicted)
        self.n_scored += 1
        self.abs_err += error
        self.naive_abs_err += abs(actual - naive)
        denominator = abs(actual) + abs(predicted)
        self.smape += 2 * error / denominator if denominator else 0.0
        if error <= self.err_q90:
            self.covered += 1
        # Online quantile (stochastic gradient on the pinball loss), step scaled by the MAE.
        step = self.config.quantile_rate * max(self.abs_err / self.n_scored, 1e-6)
        target = self.config.coverage
        self.err_q90 += step * (target if error > self.err_q90 else target - 1)
        self.err_q90 = max(self.err_q90, 0.0)

    def forecast(self, horizon: int) -> list[Forecast]:
        """The next ``horizon`` intervals after the last learned one (empty when the model has
        not seen a full day yet: no invented numbers)."""
        if not self.ready or self.last_ts is None:
            return []
        points = self.model.forecast(horizon)
        band = self.err_q90
        return [
            Forecast(
                self.last_ts + (h + 1) * self.interval_ms,
                float(p),
                max(0.0, float(p) - band),
                float(p) + band,
            )
            for h, p in enumerate(points)
        ]

    def accuracy(self) -> dict[str, Any]:
        n = self.n_scored
        if n == 0:
            return {"scored": 0}
        mae, naive = self.abs_err / n, self.naive_abs_err / n
        return {
            "scored": n,
            "mae": mae,
            "smape": self.smape / n,
            "naive_mae": naive,
            "mae_ratio": mae / naive if naive else math.nan,
            "coverage": self.covered / n,
        }

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "v": CODEC_VERSION,
            "interval_ms": self.interval_ms,
            "config": [
                self.config.alpha,
                self.config.beta,
                self.config.gamma,
                self.config.season_days,
                self.config.coverage,
                self.config.quantile_rate,
            ],
            "level": list(m.level),
            "trend": list(m.trend) if m.trend is not None else [],
            "season": list(m.season) if m.season is not None else [],
            "first": list(m._first_values),
            "init": bool(m._initialized),
            "last_ts": self.last_ts,
            "learned": self.learned,
            "history": list(self.history),
            "pending": list(self.pending),
            "q90": self.err_q90,
            "acc": [self.n_scored, self.abs_err, self.smape, self.naive_abs_err, self.covered],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DeviceForecaster:
        if doc.get("v") != CODEC_VERSION:
            raise ValueError(f"unsupported forecaster state version {doc.get('v')!r}")
        alpha, beta, gamma, days, coverage, rate = doc["config"]
        f = cls(doc["interval_ms"], ForecastConfig(alpha, beta, gamma, days, coverage, rate))
        f.model.level.extend(doc["level"])
        if f.model.trend is not None:
            f.model.trend.extend(doc["trend"])
        if f.model.season is not None:
            f.model.season.extend(doc["season"])
        f.model._first_values = list(doc["first"])
        f.model._initialized = doc["init"]
        f.last_ts, f.learned = doc["last_ts"], doc["learned"]
        f.history.extend(doc["history"])
        f.pending.extend(doc["pending"])
        f.err_q90 = doc["q90"]
        f.n_scored, f.abs_err, f.smape, f.naive_abs_err, f.covered = doc["acc"]
        return f
