"""The records that flow through the platform: named tuples (immutable, and built per
reading on the hot path: a frozen dataclass's ``__init__`` cost a microsecond more per record)
and plain dataclasses for rules.

Instants are UTC epoch milliseconds (``int``); energies are in the normalized unit
(``unit``: kWh for active energy). Field names match the topic contracts in DESIGN.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from aurora_streams.domain.scoring import ScoringRules

__all__ = [
    "DIRECTIONS",
    "AnomalyEvent",
    "DeviceRules",
    "Direction",
    "Kind",
    "NormalizedReading",
    "Reading",
    "anomaly_id",
    "channel_direction",
    "event_id",
]

Kind = Literal["register", "interval"]
Direction = Literal["consumption", "generation"]
DIRECTIONS: tuple[Direction, ...] = ("consumption", "generation")
"""Which way a channel's energy flows, from the customer's side: ``consumption`` is energy
delivered to the customer (NEM12 E channels, NEM13 direction ``E``, "export from the
market"), ``generation`` energy the customer sends out (B channels, NEM13 ``I``)."""


def channel_direction(channel: str, declared: str | None = None) -> str | None:
    """The direction of a channel: the one its readings declared, else the NEM12 suffix
    convention (``E*`` consumption, ``B*`` generation); ``None`` when neither says (a NEM13
    register suffix such as ``11`` without a declaration)."""
    if declared is not None:
        return declared
    first = channel[:1].upper()
    return "consumption" if first == "E" else "generation" if first == "B" else None


def event_id(device_id: str, channel: str, ts_end_ms: int) -> str:
    """Deterministic id of a reading: the same device, channel and interval end give the same
    id on every delivery and every revision, so downstream upserts land on one row."""
    digest = hashlib.blake2b(f"{device_id}\x1f{channel}\x1f{ts_end_ms}".encode(), digest_size=16).hexdigest()
    return digest


def anomaly_id(reading_event_id: str, anomaly_type: str) -> str:
    """Deterministic id of one anomaly type on one reading."""
    return hashlib.blake2b(f"{reading_event_id}\x1f{anomaly_type}".encode(), digest_size=16).hexdigest()


class Reading(NamedTuple):
    """A validated raw reading: units normalized, time in UTC epoch ms."""

    device_id: str
    channel: str
    kind: Kind
    ts_ms: int
    """Reading time; for an interval reading, the interval's end."""
    value: float
    """Value in ``unit`` (kWh for active energy)."""
    unit: str
    original_value: float
    original_unit: str
    interval_s: int | None
    """Interval length (interval readings); expected read cadence if given (registers)."""
    quality: str = "A"
    method: str | None = None
    reason_code: int | None = None
    updated_at_ms: int | None = None
    source: str | None = None
    ingested_at_ms: int = 0
    """Broker timestamp of the raw message: deterministic under replay, unlike wall time."""
    arrival_flags: tuple[str, ...] = ()
    """Flags known at validation time (unit_converted, future_timestamp)."""
    direction: str | None = None
    """The direction the source declared (see :data:`DIRECTIONS`), if it did."""


class NormalizedReading(NamedTuple):
    """One record of ``meter.readings.normalized``. The highest ``revision`` per ``event_id``
    is the current truth; a re-delivery carries the same id, revision and content."""

    event_id: str
    device_id: str
    channel: str
    kind: Kind
    ts_start: int | None
    ts_end: int
    value_kwh: float
    register_kwh: float | None
    delta_kwh: float | None
    unit: str
    quality: str
    method: str | None
    reason_code: int | None
    flags: tuple[str, ...]
    revision: int
    updated_at: int | None
    source: str | None
    ingested_at: int
    original_value: float
    original_unit: str
    interval_s: int | None
    direction: str | None = None
    """The channel's direction (:func:`channel_direction`): ``None`` when unknown."""


class AnomalyEvent(NamedTuple):
    """One record of ``meter.anomalies``: an anomaly-class flag raised (or, with
    ``cleared``, withdrawn by a later revision) on one revision of a reading."""

    anomaly_id: str
    event_id: str
    device_id: str
    channel: str
    ts_end: int
    type: str
    score: float
    detail: str
    revision: int
    cleared: bool
    detected_at: int


@dataclass(frozen=True, slots=True)
class DeviceRules:
    """Thresholds of the device state machine (from settings; one set per fleet, with
    per-device max power overrides)."""

    max_power_kw: float = 100.0
    """A delta above ``max_power_kw * elapsed hours`` is a suspicious jump; a register that
    fell is a rollover only if the wrapped delta stays below this rate."""
    device_max_power_kw: dict[str, float] = field(default_factory=dict)
    register_moduli_kwh: tuple[float, ...] = (10_000.0, 100_000.0, 1_000_000.0, 10_000_000.0)
    """Known register wrap points (e.g. a 5-digit kWh register wraps at 100,000)."""
    wrap_band: float = 0.1
    """A fall is a wrap at a modulus only if the register was within this fraction of the
    modulus below it and now reads within this fraction above zero: with days between reads
    almost any fall fits the power bound alone (1,000.0 -> 999.9 five days later booked
    9,999.9 kWh as a wrap at 10,000)."""
    reorder_horizon_s: int = 6 * 3600
    """Readings up to this much older than a channel's latest are placed in order; older ones
    are flagged ``late_beyond_horizon`` and not placed."""
    max_window: int = 48
    """At most this many recent readings per channel are kept for reordering and dedup."""
    gap_factor: float = 1.5
    """A step longer than ``gap_factor`` times the expected cadence is a gap."""
    run_length: int = 3
    """At least this many equal consecutive actual values make a ``zero_run`` (zeros) or
    ``frozen`` run, and the run must also last ``zero_run_min_s`` / ``frozen_min_s``."""
    zero_run_min_s: int = 86_400
    """A run of zeros is an anomaly only once it lasts this long: zeros are ordinary for
    hours (a solar export channel every night, an import channel on a sunny day)."""
    frozen_min_s: int = 21_600
    """A run of one non-zero value (or a register that does not advance) is an anomaly
    only once it lasts this long."""
    scoring: ScoringRules = field(default_factory=ScoringRules)
    """Online time-of-day scoring (spike, drop, high, low)."""

    def max_power_for(self, device_id: str) -> float:
        return self.device_max_power_kw.get(device_id, self.max_power_kw)
