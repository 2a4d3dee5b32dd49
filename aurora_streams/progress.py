"""Stall detection: is the worker making progress on the input it owns?

Pure (no Faust, no Kafka): fed, every few seconds, each assigned raw partition's log end
offset and committed offset. A partition is **stalled** when it has lag (end > committed)
and its committed offset has not moved for ``stall_after_s``. Readiness, a metric, the ops
page and one log line per transition are built on it (``web.health``), because the worker
that stopped consuming used to answer ``/readyz`` with 200 forever.

Ordering: observations must come in time order; a partition that is no longer reported
(revoked) is forgotten, and a new one starts its clock when first seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Stall", "StallDetector"]


@dataclass(frozen=True, slots=True)
class Stall:
    partition: int
    lag: int
    """Messages between the committed offset and the log end."""
    idle_s: float
    """Seconds since the committed offset last moved (or since the partition was assigned)."""


class StallDetector:
    """Tracks, per partition, when its committed offset last changed."""

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self._since: dict[int, tuple[int | None, float]] = {}
        self.stalled: list[Stall] = []

    def observe(
        self, now: float, ends: Mapping[int, int | None], committed: Mapping[int, int | None]
    ) -> list[Stall]:
        """Record one observation; the partitions stalled now (also kept in :attr:`stalled`).

        ``committed`` is the next offset to process (Kafka's committed offset); a partition
        with none yet counts its lag from offset 0."""
        stalled: list[Stall] = []
        for p in list(self._since):
            if p not in ends:
                del self._since[p]
        for p, end in ends.items():
            position = committed.get(p)
            seen = self._since.get(p)
            if seen is None or seen[0] != position:
                self._since[p] = (position, now)
                continue
            lag = (end or 0) - (position or 0)
            if lag <= 0:
                self._since[p] = (position, now)
                continue
            idle = now - seen[1]
            if idle >= self.stall_after_s:
                stalled.append(Stall(p, lag, idle))
        self.stalled = stalled
        return stalled

    def describe(self) -> str:
        """One line for a log or a readiness body."""
        if not self.stalled:
            return "progressing"
        parts = ", ".join(f"{s.partition} (lag {s.lag}, idle {s.idle_s:.0f} s)" for s in self.stalled)
        return f"no progress on raw partitions {parts}: input waits and nothing is committed"
