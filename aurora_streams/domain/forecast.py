"""Online per-device forecasts: River's Holt-Winters in a small robust ensemble, learning one
closed interval at a time, with its running accuracy beside the seasonal-naive baseline.
No Faust imports.

:class:`DeviceForecaster` keeps two forecasters of each device channel's next intervals and
publishes the one whose recent day-ahead forecasts were better:

* ``holt_winters``: ``river.time_series.HoltWinters`` (additive, a negligible trend,
  seasonality = one week of intervals: households keep weekly habits, and on the real
  two-year household series a weekly season beats a daily one, MAE ratio 0.70 vs 1.09).
* ``robust_median``: the median of three forecasts of the same interval: Holt-Winters, the
  median of the same time of day over the last ``median_days`` days, and seasonal naive.
  Where the weather drives the load (a solar home's import and export), any mean-based
  smoother chases yesterday's clouds; the median of recent days does not, and the median of
  the three keeps whichever is not an outlier.

Before Holt-Winters has seen a full season, ``robust_median`` uses the two others, so a
device forecasts after its first full day. Before that it forecasts nothing.

What an operator needs to trust a forecast:

* **Running accuracy** of the day-ahead forecast (the one made a day before each interval):
  MAE and sMAPE of the published forecast, MAE of each member, and MAE of the seasonal-naive
  baseline (the same interval one day earlier), over the same intervals.
* **Prediction intervals** from an online estimate of the 90% quantile of the published
  forecast's day-ahead absolute error, so a band is as wide as the model's recent misses.
* **An explicit, versioned codec.** :meth:`to_bytes` / :meth:`from_bytes` (version 3) pack
  the state as little-endian float64 arrays behind a fixed header: a season of Holt-Winters
  components plus ``median_days`` of history is about 9 KB at 30-minute windows, where the
  JSON of :meth:`to_dict` (versions 1 and 2, still read) was about 23 KB, and it decodes
  without parsing text. Version 1 states (Holt-Winters alone) are upgraded on load.

Ordering: ``learn`` takes intervals in time order; an interval at or before the last one
learned is ignored (so replays change nothing), and a gap is filled with the model's own
expectation.
"""

from __future__ import annotations

import functools
import math
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any, Final

from aurora_streams.errors import CorruptState

__all__ = [
    "CODEC_VERSION",
    "MEMBERS",
    "MODEL_ID",
    "PUBLISHED_DECIMALS",
    "DeviceForecaster",
    "Forecast",
    "ForecastConfig",
    "forecast_record",
    "preload",
]

CODEC_VERSION: Final = 3
"""The version :meth:`DeviceForecaster.to_bytes` writes (1 and 2: the JSON of ``to_dict``)."""
_JSON_VERSION: Final = 2
_HEADER: Final = struct.Struct("<BBq8dqqdqdddq2d2q2d2d6I")
"""version, flags (1: Holt-Winters initialized, 2: ``last_ts`` set), interval_ms, the eight
config numbers, last_ts, learned, q90, the five accuracy sums, the four member pairs, and
the lengths of level, trend, season, first values, history and pending."""
_NAN: Final = float("nan")
MODEL_ID: Final = (
    "aurora ensemble: river.time_series.HoltWinters(additive, weekly season) | "
    "median(Holt-Winters, same-slot median of recent days, seasonal naive)"
)
MEMBERS: Final = ("holt_winters", "robust_median")


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
    """Length of the Holt-Winters season in days (7: a weekly profile)."""
    coverage: float = 0.90
    """Target share of actuals inside the prediction interval."""
    quantile_rate: float = 0.02
    """Step of the online quantile estimate, as a share of the current mean absolute error."""
    median_days: int = 14
    """Days of history behind the same-slot median."""
    selection_decay: float = 0.999
    """Per-interval decay of the members' running day-ahead error that picks the published
    member (0.999: about three weeks of 30-minute windows)."""


@dataclass(frozen=True, slots=True)
class Forecast:
    ts_end: int
    value: float
    lower: float
    upper: float


@functools.cache
def _holt_winters() -> Any:
    """River's HoltWinters, imported on first use (the app imports it from a startup task,
    while the consumer group forms: :func:`preload`).

    Only its own module and ``river.time_series.base`` are loaded, not the package's
    ``__init__``, which imports ``river.time_series.metrics`` and through it scipy.stats:
    62 of the 84 MB of RSS that importing River cost a worker (numpy 9, River 12), and half
    a second. The package is stood in for while the two modules load, then removed, so a
    later ``import river.time_series`` runs the real ``__init__``, which finds both modules
    loaded and binds the same class. Should River move them, the whole package is imported."""
    import importlib
    import importlib.util
    import sys

    if "river.time_series" not in sys.modules:
        spec = importlib.util.find_spec("river.time_series")
        if spec is not None and spec.submodule_search_locations is not None:
            package = importlib.util.module_from_spec(spec)  # not executed: no __init__
            sys.modules["river.time_series"] = package
            try:
                importlib.import_module("river.time_series.base")  # HoltWinters's base class
                return importlib.import_module("river.time_series.holt_winters").HoltWinters
            except (ImportError, AttributeError):
                for name in ("river.time_series.holt_winters", "river.time_series.base"):
                    sys.modules.pop(name, None)
            finally:
                if sys.modules.get("river.time_series") is package:
                    del sys.modules["river.time_series"]
    from river.time_series import HoltWinters

    return HoltWinters


def preload() -> None:
    """Import River now (see :func:`_holt_winters`)."""
    _holt_winters()


class DeviceForecaster:
    """One device channel's model. ``learn`` must see intervals in time order, one per
    step of ``interval_ms`` (gaps are filled with the model's own forecast)."""

    def __init__(self, interval_ms: int, config: ForecastConfig | None = None) -> None:
        self.config = config or ForecastConfig()
        self.interval_ms = interval_ms
        self.day = max(1, 86_400_000 // interval_ms)
        self.season = max(2, self.day * self.config.season_days)
        self.model = _holt_winters()(
            alpha=self.config.alpha, beta=self.config.beta, gamma=self.config.gamma, seasonality=self.season
        )
        self.last_ts: int | None = None
        self.learned = 0
        # Flat arrays of C doubles, not deques of Python floats: a decoded forecaster is held
        # per channel whose window closed in an epoch (up to a thousand at once), and two
        # weeks of 30-minute history took 21 KB as deque items against 5 KB here.
        self.history_max = self.day * max(1, self.config.median_days)
        self.history = array("d")
        """The last ``history_max`` values learned, oldest first."""
        self.pending = array("d")
        """Day-ahead forecasts of the next ``day`` intervals, oldest first, three numbers
        each: published, holt_winters (NaN: none), robust_median; three NaN: no forecast
        (before the first full day). Bounded to ``day`` of them."""
        self.err_q90 = 0.0
        self.n_scored = 0
        self.abs_err = 0.0
        self.smape = 0.0
        self.naive_abs_err = 0.0
        self.covered = 0
        self.member_abs_err = [0.0, 0.0]  # since the start, per member
        self.member_n = [0, 0]
        # Decayed sums of error and weight per member: their ratio is the recent mean error
        # (a member that joins late is not favoured by an empty sum), and it picks the
        # published member.
        self.recent_err = [0.0, 0.0]
        self.recent_w = [0.0, 0.0]

    @property
    def ready(self) -> bool:
        """At least one full day learned: the day-based members can forecast."""
        return len(self.history) >= self.day

    @property
    def hw_ready(self) -> bool:
        return bool(self.model._initialized)

    @property
    def active(self) -> str:
        """The member whose forecasts are published now."""
        err, w = self.recent_err, self.recent_w
        if self.hw_ready and w[0] and w[1] and err[0] / w[0] < err[1] / w[1]:
            return MEMBERS[0]
        return MEMBERS[1]

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
            return self._points(1)[0]
        return self.history[-1] if self.history else 0.0

    def _step(self, y: float, *, observed: bool) -> None:
        if len(self.pending) == 3 * self.day:
            predicted = _pending_item(self.pending, 0)
            if observed and predicted is not None:
                self._score(y, predicted, self.history[-self.day])
        if self.hw_ready:
            self.model.learn_one(y)
        else:
            self._warm_up(y)
        self.learned += 1
        history = self.history
        history.append(y)
        if len(history) > self.history_max:
            del history[0]  # a memmove of a few KB: cheaper than a ring's index arithmetic in Python
        if self.ready:
            hw = float(self.model.forecast(self.day)[-1]) if self.hw_ready else None
            robust = self._robust(self.day, hw)
            published = hw if hw is not None and self.active == MEMBERS[0] else robust
            _push_pending(self.pending, self.day, (published, hw, robust))
        else:
            _push_pending(self.pending, self.day, None)

    def _slot_median(self, h: int) -> float:
        """Median of the same time of day as step ``h`` ahead over the recent days."""
        hist, day = self.history, self.day
        n = len(hist)
        back = (h + day - 1) // day * day - h  # steps back from the newest to the newest same slot
        return median(hist[i] for i in range(n - 1 - back, -1, -day))

    def _naive(self, h: int) -> float:
        back = (h + self.day - 1) // self.day * self.day - h
        return self.history[-1 - back]

    def _robust(self, h: int, hw: float | None) -> float:
        # The median of two is their mean: before Holt-Winters is ready the robust member
        # averages the slot median and yesterday.
        parts = [self._slot_median(h), self._naive(h)]
        if hw is not None:
            parts.append(hw)
        return median(parts)

    def _warm_up(self, y: float) -> None:
        # River initializes the additive seasonality with ratios (y / level) and divides by
        # zero on an all-zero first day (night-time solar, zero-substituted days): collect the
        # first season here and initialize the components additively instead.
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

    def _score(self, actual: float, predicted: tuple[float, float | None, float], naive: float) -> None:
        published, hw, robust = predicted
        decay = self.config.selection_decay
        for i, member in enumerate((hw, robust)):
            if member is not None:
                e = abs(actual - member)
                self.member_abs_err[i] += e
                self.member_n[i] += 1
                self.recent_err[i] = decay * self.recent_err[i] + e
                self.recent_w[i] = decay * self.recent_w[i] + 1
        error = abs(actual - published)
        self.n_scored += 1
        self.abs_err += error
        self.naive_abs_err += abs(actual - naive)
        denominator = abs(actual) + abs(published)
        self.smape += 2 * error / denominator if denominator else 0.0
        if error <= self.err_q90:
            self.covered += 1
        # Online quantile (stochastic gradient on the pinball loss), step scaled by the MAE.
        step = self.config.quantile_rate * max(self.abs_err / self.n_scored, 1e-6)
        target = self.config.coverage
        self.err_q90 += step * (target if error > self.err_q90 else target - 1)
        self.err_q90 = max(self.err_q90, 0.0)

    def _points(self, horizon: int) -> list[float]:
        hw = [float(p) for p in self.model.forecast(horizon)] if self.hw_ready else None
        if hw is not None and self.active == MEMBERS[0]:
            return hw
        return [self._robust(h, hw[h - 1] if hw is not None else None) for h in range(1, horizon + 1)]

    def forecast(self, horizon: int) -> list[Forecast]:
        """The next ``horizon`` intervals after the last learned one (empty before the first
        full day: no invented numbers)."""
        if not self.ready or self.last_ts is None:
            return []
        band = self.err_q90
        return [
            Forecast(self.last_ts + (h + 1) * self.interval_ms, p, max(0.0, p - band), p + band)
            for h, p in enumerate(self._points(horizon))
        ]

    def status_note(self) -> str | None:
        """Why there are no forecasts yet, or ``None`` when there are."""
        if self.ready:
            return None
        return f"needs {self.day - len(self.history)} more windows before forecasting"

    def snapshot(self, horizon: int) -> dict[str, Any]:
        """What the API serves and ``meter.forecasts`` carries: points, the model, what it has
        learned and its accuracy. Deterministic in the model's state (no wall clock), so a
        replayed window yields the same record."""
        points = self.forecast(horizon)
        return {
            "model": MODEL_ID,
            "member": self.active,
            "window_minutes": self.interval_ms // 60_000,
            "learned_windows": self.learned,
            "origin_ts": self.last_ts,
            "status": "ready" if points else "warming_up",
            "note": self.status_note(),
            "accuracy": self.accuracy(),
            "points": points,
        }

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
            "mae_ratio": mae / naive if naive else None,
            "coverage": self.covered / n,
            "members": {
                name: {"scored": self.member_n[i], "mae": self.member_abs_err[i] / self.member_n[i]}
                for i, name in enumerate(MEMBERS)
                if self.member_n[i]
            },
        }

    def to_bytes(self) -> bytes:
        """The state, version 3 (see the module): decoding it resumes exactly, bit for bit."""
        m, c = self.model, self.config
        trend = m.trend if m.trend is not None else ()
        season = m.season if m.season is not None else ()
        flags = (1 if m._initialized else 0) | (2 if self.last_ts is not None else 0)
        header = _HEADER.pack(
            CODEC_VERSION, flags, self.interval_ms,
            c.alpha, c.beta, c.gamma, c.season_days, c.coverage, c.quantile_rate, c.median_days,
            c.selection_decay,
            self.last_ts or 0, self.learned, self.err_q90,
            self.n_scored, self.abs_err, self.smape, self.naive_abs_err, self.covered,
            *self.member_abs_err, *self.member_n, *self.recent_err, *self.recent_w,
            len(m.level), len(trend), len(season), len(m._first_values), len(self.history),
            len(self.pending) // 3,
        )  # fmt: skip
        body = array("d", (*m.level, *trend, *season, *m._first_values))
        body.extend(self.history)
        body.extend(self.pending)
        if sys.byteorder != "little":
            body.byteswap()
        return header + body.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceForecaster:
        """Decode :meth:`to_bytes`, or the JSON of :meth:`to_dict` (versions 1 and 2)."""
        if data[:1] == b"{":
            import orjson

            return cls.from_dict(orjson.loads(data))
        if not data or data[0] != CODEC_VERSION or len(data) < _HEADER.size:
            raise CorruptState(f"unsupported forecaster state (first byte {data[:1]!r}, {len(data)} bytes)")
        h = _HEADER.unpack_from(data)
        n_level, n_trend, n_season, n_first, n_history, n_pending = h[-6:]
        body = array("d")
        body.frombytes(data[_HEADER.size :])
        if sys.byteorder != "little":
            body.byteswap()
        if len(body) != n_level + n_trend + n_season + n_first + n_history + 3 * n_pending:
            raise CorruptState(f"forecaster state of {len(data)} bytes does not match its header")
        config = ForecastConfig(h[3], h[4], h[5], int(h[6]), h[7], h[8], int(h[9]), h[10])
        f = cls(h[2], config)
        m = f.model
        at = 0

        def take(n: int) -> array[float]:
            nonlocal at
            at += n
            return body[at - n : at]

        m.level.extend(take(n_level))
        trend = take(n_trend)
        if m.trend is not None:
            m.trend.extend(trend)
        season = take(n_season)
        if m.season is not None:
            m.season.extend(season)
        m._first_values = list(take(n_first))
        m._initialized = bool(h[1] & 1)
        f.history = take(n_history)[-f.history_max :]
        f.pending = take(3 * n_pending)[-3 * f.day :]
        f.last_ts = h[11] if h[1] & 2 else None
        f.learned, f.err_q90 = h[12], h[13]
        f.n_scored, f.abs_err, f.smape, f.naive_abs_err, f.covered = h[14:19]
        f.member_abs_err, f.member_n = list(h[19:21]), list(h[21:23])
        f.recent_err, f.recent_w = list(h[23:25]), list(h[25:27])
        return f

    def to_dict(self) -> dict[str, Any]:
        """The state as plain numbers (version 2, JSON-ready): for inspection and tests; the
        tables store :meth:`to_bytes`."""
        m, c = self.model, self.config
        return {
            "v": _JSON_VERSION,
            "interval_ms": self.interval_ms,
            "config": [
                *(c.alpha, c.beta, c.gamma, c.season_days, c.coverage, c.quantile_rate),
                *(c.median_days, c.selection_decay),
            ],
            "level": list(m.level),
            "trend": list(m.trend) if m.trend is not None else [],
            "season": list(m.season) if m.season is not None else [],
            "first": list(m._first_values),
            "init": bool(m._initialized),
            "last_ts": self.last_ts,
            "learned": self.learned,
            "history": list(self.history),
            "pending": [
                None if p is None else [p[0], p[1], p[2]]
                for p in (_pending_item(self.pending, i) for i in range(len(self.pending) // 3))
            ],
            "q90": self.err_q90,
            "acc": [self.n_scored, self.abs_err, self.smape, self.naive_abs_err, self.covered],
            "members": [self.member_abs_err, self.member_n, self.recent_err, self.recent_w],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DeviceForecaster:
        version = doc.get("v")
        if version not in (1, _JSON_VERSION):
            raise CorruptState(f"unsupported forecaster state version {version!r}")
        config = ForecastConfig(*doc["config"])  # v1 lacks the last two: their defaults apply
        f = cls(doc["interval_ms"], config)
        f.model.level.extend(doc["level"])
        if f.model.trend is not None:
            f.model.trend.extend(doc["trend"])
        if f.model.season is not None:
            f.model.season.extend(doc["season"])
        f.model._first_values = list(doc["first"])
        f.model._initialized = doc["init"]
        f.last_ts, f.learned = doc["last_ts"], doc["learned"]
        f.history.extend(doc["history"][-f.history_max :])
        f.err_q90 = doc["q90"]
        f.n_scored, f.abs_err, f.smape, f.naive_abs_err, f.covered = doc["acc"]
        for p in doc["pending"]:
            # v1 kept Holt-Winters' day-ahead forecasts alone; they become both members'.
            _push_pending(f.pending, f.day, None if p is None else (p, p, p) if version == 1 else p)
        if version != 1:
            f.member_abs_err, f.member_n, f.recent_err, f.recent_w = (list(x) for x in doc["members"])
        return f


def _pending_item(pending: array[float], i: int) -> tuple[float, float | None, float] | None:
    """The ``i``-th day-ahead forecast of :attr:`DeviceForecaster.pending`."""
    published, hw, robust = pending[3 * i : 3 * i + 3]
    if math.isnan(published):
        return None
    return (published, None if math.isnan(hw) else hw, robust)


def _push_pending(
    pending: array[float], day: int, item: tuple[float, float | None, float] | Sequence[float | None] | None
) -> None:
    """Append a day-ahead forecast (``None``: none) and keep the last ``day`` of them."""
    if item is None:
        pending.extend((_NAN, _NAN, _NAN))
    else:
        published, hw, robust = item
        pending.extend((published, _NAN if hw is None else hw, robust))  # type: ignore[arg-type]
    if len(pending) > 3 * day:
        del pending[:3]


_ACCURACY_FIELDS: Final = ("mae", "smape", "naive_mae", "mae_ratio", "coverage")
PUBLISHED_DECIMALS: Final = 4
"""Published forecasts are rounded to 0.1 Wh: far below any model's error, and a day of
half-hour values in JSON is a third of its size at full float precision."""


def forecast_record(
    device_id: str, channel: str, model: DeviceForecaster, horizon: int
) -> dict[str, Any] | None:
    """The ``meter.forecasts`` record (fields of ``aurora.Forecast`` version 2; instants as
    epoch ms) for the model's next ``horizon`` windows, or ``None`` while it cannot forecast
    yet. ``values[i]`` is the window ending ``(i + 1)`` windows after ``origin_ts``; the band
    is ``[max(0, value - band), value + band]``, as :meth:`DeviceForecaster.forecast` gives."""
    snap = model.snapshot(horizon)
    if snap["status"] != "ready":
        return None
    acc = snap["accuracy"]
    return {
        "forecast_id": f"{device_id}|{channel}|{snap['origin_ts']}",
        "device_id": device_id,
        "channel": channel,
        "origin_ts": snap["origin_ts"],
        "window_minutes": snap["window_minutes"],
        "model": snap["model"],
        "member": snap["member"],
        "learned_windows": snap["learned_windows"],
        "accuracy": {"scored": acc["scored"], **{k: acc.get(k) for k in _ACCURACY_FIELDS}},
        "band": round(model.err_q90, PUBLISHED_DECIMALS),
        "values": [round(p.value, PUBLISHED_DECIMALS) for p in snap["points"]],
    }
