"""Quality flags: what was seen about a reading. Nothing is silently fixed.

Flag values are the strings on the wire (normalized records and anomaly events).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["ANOMALY_FLAGS", "QUALITY_FLAGS", "QUALITY_RANK", "UNVALIDATED_FLAGS", "Flag"]


class Flag(StrEnum):
    FIRST_READING = "first_reading"
    DUPLICATE = "duplicate"
    REVISED = "revised"
    OUT_OF_ORDER = "out_of_order"
    LATE_BEYOND_HORIZON = "late_beyond_horizon"
    GAP = "gap"
    COUNTER_RESET = "counter_reset"
    ROLLOVER = "rollover"
    SUSPICIOUS_JUMP = "suspicious_jump"
    NEGATIVE = "negative"
    ZERO_RUN = "zero_run"
    FROZEN = "frozen"
    ESTIMATED = "estimated"
    SUBSTITUTED = "substituted"
    NULL = "null"
    FUTURE_TIMESTAMP = "future_timestamp"
    UNIT_CONVERTED = "unit_converted"
    QUALITY_UNRESOLVED = "quality_unresolved"
    """NEM12 quality V reached the worker: the 400 records that resolve it were missing or
    broken, so nothing says whether the value is actual or estimated."""
    OVERLAP = "overlap"
    """An interval starts before its predecessor ends (a 23-hour local day sent as 24 hours)."""


#: Flags that describe a problem with the meter or its data, published to ``meter.anomalies``
#: as well. The others (first_reading, revised, out_of_order, estimated, ...) describe
#: provenance and stay on the normalized record only.
ANOMALY_FLAGS: Final = frozenset(
    {
        Flag.LATE_BEYOND_HORIZON,
        Flag.GAP,
        Flag.COUNTER_RESET,
        Flag.ROLLOVER,
        Flag.SUSPICIOUS_JUMP,
        Flag.NEGATIVE,
        Flag.ZERO_RUN,
        Flag.FROZEN,
        Flag.FUTURE_TIMESTAMP,
        Flag.OVERLAP,
    }
)

#: A reading with one of these is kept and published, but its energy is not validated: the
#: aggregates leave it out of their sums and report it beside them. A negative value stays
#: in (a NEM13 Quantity may be a correction); a rollover's delta is real energy.
UNVALIDATED_FLAGS: Final = frozenset(
    {Flag.SUSPICIOUS_JUMP.value, Flag.FUTURE_TIMESTAMP.value, Flag.QUALITY_UNRESOLVED.value}
)

#: NEM12 quality flag -> the flag it implies on the normalized record.
QUALITY_FLAGS: Final[dict[str, Flag]] = {
    "E": Flag.ESTIMATED,
    "S": Flag.SUBSTITUTED,
    "F": Flag.SUBSTITUTED,
    "N": Flag.NULL,
    "V": Flag.QUALITY_UNRESOLVED,
}

#: Better quality revises worse at the same version stamp: A > F > S > E > N (> V, unresolved).
QUALITY_RANK: Final[dict[str, int]] = {"A": 5, "F": 4, "S": 3, "E": 2, "N": 1, "V": 0}
