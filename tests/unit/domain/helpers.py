"""Builders for readings and a tiny driver around the state machine."""

from __future__ import annotations

from typing import Any

from aurora_streams.domain.device import ApplyResult, DeviceState, apply
from aurora_streams.domain.model import DeviceRules, NormalizedReading, Reading

T0 = 1_735_653_600_000  # 2025-01-01T00:00+10:00
MIN = 60_000


def reg(ts: int, value: float, **kw: Any) -> Reading:
    base = Reading(
        device_id=kw.pop("device_id", "d1"),
        channel=kw.pop("channel", "E1"),
        kind="register",
        ts_ms=ts,
        value=value,
        unit="kWh",
        original_value=value,
        original_unit="kWh",
        interval_s=kw.pop("interval_s", None),
        ingested_at_ms=kw.pop("ingested_at_ms", ts),
    )
    return base._replace(**kw)


def ivl(ts: int, value: float, interval_s: int = 1800, **kw: Any) -> Reading:
    base = Reading(
        device_id=kw.pop("device_id", "d1"),
        channel=kw.pop("channel", "E1"),
        kind="interval",
        ts_ms=ts,
        value=value,
        unit="kWh",
        original_value=value,
        original_unit="kWh",
        interval_s=interval_s,
        ingested_at_ms=kw.pop("ingested_at_ms", ts),
    )
    return base._replace(**kw)


class Driver:
    """Applies readings to one state and keeps the latest revision of every record."""

    def __init__(self, rules: DeviceRules | None = None) -> None:
        self.rules = rules or DeviceRules()
        self.state = DeviceState()
        self.latest: dict[str, NormalizedReading] = {}
        self.results: list[ApplyResult] = []

    def feed(self, *readings: Reading) -> ApplyResult:
        result = ApplyResult("none", [], [])
        for r in readings:
            result = apply(self.state, r, self.rules)
            self.results.append(result)
            for rec in result.records:
                old = self.latest.get(rec.event_id)
                if old is None or rec.revision > old.revision:
                    self.latest[rec.event_id] = rec
        return result

    def by_ts(self) -> list[NormalizedReading]:
        return sorted(self.latest.values(), key=lambda r: (r.channel, r.ts_end))
