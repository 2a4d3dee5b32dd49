"""What an ingest run saw: NMIs, channels, readings, energy per channel and problems."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aurora_streams.domain.timeutil import format_ms
from aurora_streams.ingest.nem12 import AccumulationRead, DayBlock, ProblemLog

__all__ = ["ChannelSummary", "IngestSummary"]


@dataclass
class ChannelSummary:
    nmi: str
    channel: str
    uom: str
    unit: str | None
    interval_min: int
    """0 for NEM13 accumulation reads."""
    readings: int = 0
    """Intervals in the file, with or without a value (NEM13: 250 records)."""
    total: float = 0.0
    """Sum in the normalized unit (kWh, kvarh, kVAh); in the file's UOM for non-energy channels."""
    first_ms: int | None = None
    last_ms: int | None = None
    qualities: Counter[str] = field(default_factory=Counter)


@dataclass
class IngestSummary:
    files: int = 0
    channels: dict[tuple[str, str], ChannelSummary] = field(default_factory=dict)
    problems: ProblemLog = field(default_factory=ProblemLog)
    """The first problems in full, and a count per rule of all (see :class:`ProblemLog`)."""
    messages: int = 0
    """Gateway batches produced to the raw topic."""
    published_readings: int = 0
    skipped_readings: int = 0
    """Readings not published (non-energy channels, empty values), each with a problem."""

    def add(self, day: DayBlock | AccumulationRead) -> None:
        if isinstance(day, AccumulationRead):
            self._add_accumulation(day)
            return
        key = (day.nmi, day.suffix)
        ch = self.channels.get(key)
        if ch is None:
            ch = self.channels[key] = ChannelSummary(day.nmi, day.suffix, day.uom, day.unit, day.interval_min)
        ch.readings += len(day.values)
        values = [v for v in day.values if v is not None]
        ch.total += sum(values) * (day.factor if day.unit else 1.0)
        first, last = day.day_start_ms, day.interval_end_ms(len(day.values) - 1)
        ch.first_ms = first if ch.first_ms is None else min(ch.first_ms, first)
        ch.last_ms = last if ch.last_ms is None else max(ch.last_ms, last)
        ch.qualities.update(day.qualities)

    def _add_accumulation(self, read: AccumulationRead) -> None:
        key = (read.nmi, read.suffix)
        ch = self.channels.get(key)
        if ch is None:
            ch = self.channels[key] = ChannelSummary(read.nmi, read.suffix, read.uom, read.unit, 0)
        ch.readings += 1
        ch.total += (read.quantity or 0.0) * (read.factor if read.unit else 1.0)
        for ms in (read.previous_ms, read.current_ms):
            if ms is not None:
                ch.first_ms = ms if ch.first_ms is None else min(ch.first_ms, ms)
                ch.last_ms = ms if ch.last_ms is None else max(ch.last_ms, ms)
        ch.qualities.update([read.current_quality[0]])

    @property
    def nmis(self) -> list[str]:
        return sorted({nmi for nmi, _ in self.channels})

    @property
    def readings(self) -> int:
        return sum(c.readings for c in self.channels.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "nmis": self.nmis,
            "readings": self.readings,
            "messages": self.messages,
            "published_readings": self.published_readings,
            "skipped_readings": self.skipped_readings,
            "channels": [
                {
                    "nmi": c.nmi,
                    "channel": c.channel,
                    "uom": c.uom,
                    "unit": c.unit or c.uom,
                    "interval_min": c.interval_min,
                    "readings": c.readings,
                    "total": round(c.total, 6),
                    "first": format_ms(c.first_ms) if c.first_ms is not None else None,
                    "last": format_ms(c.last_ms) if c.last_ms is not None else None,
                    "qualities": dict(c.qualities),
                }
                for c in sorted(self.channels.values(), key=lambda c: (c.nmi, c.channel))
            ],
            "problems": [
                {"file": p.file, "line": p.line, "rule": p.rule, "message": p.message, "severity": p.severity}
                for p in self.problems
            ],
            "problem_counts": dict(sorted(self.problems.counts.items())),
            "problems_not_listed": self.problems.dropped,
        }
