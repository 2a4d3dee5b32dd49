"""The device state machine: ``apply(state, reading) -> outputs``, a pure function.

Per device and channel the state keeps a short, time-ordered window of recent readings
(bounded by ``DeviceRules.reorder_horizon_s`` and ``max_window``). Every normalized record
is a pure function of a reading and its predecessor in time order (:func:`_derive`), so:

* **Ordering.** A reading older than the channel's latest but inside the window is placed
  in order (flag ``out_of_order``); the records after it are re-derived and each one whose
  content changed is re-emitted with ``revision + 1``. After any arrival order within the
  horizon, the latest revision of every record equals what in-order arrival gives, apart
  from the arrival flags (``out_of_order``, ``revised``).
* **Idempotence.** A reading identical to one in the window is a duplicate: no output, no
  state change. A newer version (``updated_at``) or a better quality at the same version
  replaces the stored one (flag ``revised``). An older or equal version with other content
  is stale and ignored. So re-delivering any subsequence, in any order, changes nothing.
* **Horizon.** A reading older than the window cannot be placed: it is emitted on its own,
  flagged ``late_beyond_horizon``, and the window does not change. The channel remembers
  its last ``max_window`` late readings, so the same one again emits nothing and a newer
  version of it is the next revision, as in the window.

The state is mutated in place (the hot path allocates little); callers that need the old
state keep its bytes (:meth:`DeviceState.to_bytes`).
"""

from __future__ import annotations

import operator
import sys
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from aurora_streams.domain.flags import ANOMALY_FLAGS, QUALITY_FLAGS, QUALITY_RANK, Flag
from aurora_streams.domain.jsonbytes import dumps
from aurora_streams.domain.model import (
    AnomalyEvent,
    DeviceRules,
    Kind,
    NormalizedReading,
    Reading,
    anomaly_id,
    channel_direction,
    event_id,
)
from aurora_streams.domain.scoring import Profile, score_and_learn
from aurora_streams.errors import CorruptState, DomainRejection

__all__ = ["STATE_VERSION", "ApplyResult", "ChannelState", "DeviceState", "Entry", "apply"]

#: Version of the state encoding in :meth:`DeviceState.to_bytes`; bump on any change and
#: keep a decoder for the old one.
STATE_VERSION: Final = 1

_FLAG_RANK: Final = {f.value: i for i, f in enumerate(Flag)}
_FLAG_VALUE: Final[dict[str, str]] = {f.value: f.value for f in Flag}
"""A flag (member or its string) -> its plain string: records carry ``str``, not members."""
_EPS: Final = 1e-9
_NO_INT: Final = -(2**61)
"""An unboxed int field's "none" (no instant or step is that far before 1970)."""
_NAN: Final = float("nan")
_HOUR_MS: Final = 3_600_000.0


class Entry:
    """One reading in a channel window: its content and what was last derived from it."""

    # Laid out for a worker that holds every cached device's window decoded (W1: 10,000
    # meters, ~31 entries each): an entry was 19 fields, 208 bytes, three quarters of a
    # decoded state. Now 12:
    # * ``ts_start``, ``delta`` and ``step`` unboxed (a sentinel for "none") behind properties
    #   of their optional types: compiled, an ``int | None`` or ``float | None`` attribute is
    #   a separate Python object (32, 24 and 28 bytes).
    # * unit, original unit, quality and cadence, the same in nearly every entry of a
    #   channel, in one tuple shared by all entries with those four (``_desc``);
    # * method, reason code, version, source and arrival flags, mostly none or empty, in one
    #   tuple, ``None`` when all are (``_extra``).
    # Both are typed ``tuple[Any, ...]``: compiled, a fixed-length tuple type is stored
    # unpacked in the object, which would undo the sharing.
    __slots__ = (
        "_delta",
        "_desc",
        "_extra",
        "_step",
        "_ts_start",
        "flags",
        "ingested_at",
        "original_value",
        "revision",
        "run",
        "ts",
        "value",
    )

    _ts_start: int
    _delta: float
    _step: int
    _desc: tuple[Any, ...]
    _extra: tuple[Any, ...] | None

    def __init__(
        self,
        ts: int,
        value: float,
        unit: str,
        original_value: float,
        original_unit: str,
        interval_s: int | None,
        quality: str,
        method: str | None,
        reason_code: int | None,
        updated_at: int | None,
        source: str | None,
        ingested_at: int,
        arrival: tuple[str, ...],
        revision: int = -1,
        ts_start: int | None = None,
        delta: float | None = None,
        flags: tuple[str, ...] = (),
        run: int = 0,
        step: int | None = None,
    ) -> None:
        self.ts = ts
        self.value = value
        self.original_value = original_value
        self._desc = _shared_desc(unit, original_unit, quality, interval_s)
        self._extra = _extra_of(method, reason_code, updated_at, source, arrival)
        self.ingested_at = ingested_at
        self.revision = revision
        self._ts_start = _NO_INT if ts_start is None else ts_start
        self._delta = _NAN if delta is None else delta
        self.flags = flags
        self.run = run
        self._step = _NO_INT if step is None else step

    @property
    def ts_start(self) -> int | None:
        value = self._ts_start
        return None if value == _NO_INT else value

    @ts_start.setter
    def ts_start(self, value: int | None) -> None:
        self._ts_start = _NO_INT if value is None else value

    @property
    def delta(self) -> float | None:
        value = self._delta
        return None if value != value else value  # NaN: none (JSON has no NaN to store)

    @delta.setter
    def delta(self, value: float | None) -> None:
        self._delta = _NAN if value is None else value

    @property
    def step(self) -> int | None:
        value = self._step
        return None if value == _NO_INT else value

    @step.setter
    def step(self, value: int | None) -> None:
        self._step = _NO_INT if value is None else value

    @property
    def unit(self) -> str:
        unit: str = self._desc[0]
        return unit

    @property
    def original_unit(self) -> str:
        unit: str = self._desc[1]
        return unit

    @property
    def quality(self) -> str:
        quality: str = self._desc[2]
        return quality

    @property
    def interval_s(self) -> int | None:
        interval: int | None = self._desc[3]
        return interval

    @property
    def method(self) -> str | None:
        extra = self._extra
        return None if extra is None else extra[0]

    @property
    def reason_code(self) -> int | None:
        extra = self._extra
        return None if extra is None else extra[1]

    @property
    def updated_at(self) -> int | None:
        extra = self._extra
        return None if extra is None else extra[2]

    @property
    def source(self) -> str | None:
        extra = self._extra
        return None if extra is None else extra[3]

    @property
    def arrival(self) -> tuple[str, ...]:
        extra = self._extra
        return () if extra is None else extra[4]

    def replace_content(self, r: Reading, arrival: tuple[str, ...]) -> None:
        """Take ``r``'s content (a newer version of the reading at this entry's time)."""
        self.value = r.value
        self.original_value = r.original_value
        self._desc = _shared_desc(r.unit, r.original_unit, r.quality, r.interval_s)
        self._extra = _extra_of(r.method, r.reason_code, r.updated_at_ms, r.source, arrival)
        self.ingested_at = r.ingested_at_ms

    @classmethod
    def from_reading(cls, r: Reading, arrival: tuple[str, ...]) -> Entry:
        return cls(
            r.ts_ms,
            r.value,
            r.unit,
            r.original_value,
            r.original_unit,
            r.interval_s,
            r.quality,
            r.method,
            r.reason_code,
            r.updated_at_ms,
            r.source,
            r.ingested_at_ms,
            arrival,
        )

    def content(self) -> tuple[Any, ...]:
        """What identifies this version of the reading (for duplicate detection)."""
        return (
            self.value,
            self.unit,
            self.interval_s,
            self.quality,
            self.method,
            self.reason_code,
            self.updated_at,
        )

    def to_list(self) -> list[Any]:
        return list(_entry_values(self))

    @classmethod
    def from_list(cls, items: list[Any]) -> Entry:
        # Positional construction: the field order of ``_ENTRY_FIELDS`` is ``__init__``'s
        # (decoding entries was a fifth of a busy worker's time with a per-field setattr).
        if len(items) != len(_ENTRY_FIELDS):
            raise CorruptState(f"an entry has {len(_ENTRY_FIELDS)} fields, got {len(items)}")
        items = list(items)
        items[_ARRIVAL] = tuple(items[_ARRIVAL])  # JSON arrays
        flags = items[_FLAGS]
        # The decoder makes a new str per occurrence: the flags' own strings are shared.
        items[_FLAGS] = tuple([_FLAG_VALUE.get(f, f) for f in flags]) if flags else ()
        return cls(*items)


_ENTRY_FIELDS: Final = (
    "ts",
    "value",
    "unit",
    "original_value",
    "original_unit",
    "interval_s",
    "quality",
    "method",
    "reason_code",
    "updated_at",
    "source",
    "ingested_at",
    "arrival",
    "revision",
    "ts_start",
    "delta",
    "flags",
    "run",
    "step",
)


_entry_values: Final = operator.attrgetter(*_ENTRY_FIELDS)


def _entry_row(e: Entry) -> tuple[Any, ...]:
    """``_entry_values(e)`` written out: compiled (aurora_streams.native), reading the fields
    directly is twice as fast as ``attrgetter`` through the class's descriptors, and the
    whole window is encoded per touched device per checkpoint. The unit tests check that the
    two agree on every field."""
    return (
        e.ts, e.value, e.unit, e.original_value, e.original_unit, e.interval_s, e.quality, e.method,
        e.reason_code, e.updated_at, e.source, e.ingested_at, e.arrival, e.revision, e.ts_start,
        e.delta, e.flags, e.run, e.step,
    )  # fmt: skip


_ARRIVAL: Final = _ENTRY_FIELDS.index("arrival")
_FLAGS: Final = _ENTRY_FIELDS.index("flags")


_DESCS: Final[dict[tuple[Any, ...], tuple[Any, ...]]] = {}
_DESCS_MAX: Final = 4096
"""Distinct (unit, original unit, quality, cadence) kept shared; past it (input with many
cadences) an entry keeps its own tuple: correct, only less compact."""


def _shared_desc(unit: str, original_unit: str, quality: str, interval_s: int | None) -> tuple[Any, ...]:
    desc = (unit, original_unit, quality, interval_s)
    shared = _DESCS.get(desc)
    if shared is not None:
        return shared
    # Interned: the decoder and the reading parser make a new str per occurrence, and the
    # tuple outlives the message it came from.
    desc = (
        sys.intern(unit),
        sys.intern(original_unit),
        sys.intern(quality),
        interval_s,
    )
    if len(_DESCS) < _DESCS_MAX:
        _DESCS[desc] = desc
    return desc


def _extra_of(
    method: str | None,
    reason_code: int | None,
    updated_at: int | None,
    source: str | None,
    arrival: tuple[str, ...],
) -> tuple[Any, ...] | None:
    if method is None and reason_code is None and updated_at is None and source is None and not arrival:
        return None
    return (
        None if method is None else sys.intern(method),
        reason_code,
        updated_at,
        None if source is None else sys.intern(source),
        arrival,
    )


def _content_of(r: Reading) -> tuple[Any, ...]:
    return (r.value, r.unit, r.interval_s, r.quality, r.method, r.reason_code, r.updated_at_ms)


@dataclass(slots=True)
class ChannelState:
    """Time-ordered window of one channel. When ``anchored``, ``entries[0]`` fell out of
    the horizon: it is kept only as the predecessor of ``entries[1]`` and never re-derived."""

    kind: Kind
    anchored: bool = False
    entries: list[Entry] = field(default_factory=list)
    late: list[list[Any]] = field(default_factory=list)
    """The last ``max_window`` readings published unplaced (``late``: too old to place, or
    ``future``-stamped), oldest first: ``[ts, revision, updated_at, quality, value, unit, interval_s, method,
    reason_code]``. Only what tells a re-delivery (identical: nothing emitted) and a version
    (newer: the next revision; older or equal: stale) from a new one, and what revision the
    true reading at a future one's stamp supersedes it with."""
    direction: str | None = None
    """The direction the channel's readings declared (NEM13 files do), else ``None``: then
    the suffix convention applies (:func:`~aurora_streams.domain.model.channel_direction`)."""


def _channel_row(ch: ChannelState) -> list[Any]:
    """``[kind, anchored, entries]``, then the late list and the direction only when there
    are any: states without them encode exactly as before they existed."""
    row: list[Any] = [ch.kind, ch.anchored, [_entry_row(e) for e in ch.entries]]
    if ch.late or ch.direction is not None:
        row.append(ch.late)
    if ch.direction is not None:
        row.append(ch.direction)
    return row


@dataclass(slots=True)
class DeviceState:
    """Everything the platform remembers about one device, one table value per device."""

    channels: dict[str, ChannelState] = field(default_factory=dict)
    last_offset: int = -1
    """Source offset of the last raw message applied (set by the caller, see
    ``processing``): a device lives on one partition, so a message at or below it is a
    re-delivery. The state machine itself never reads it."""
    profiles: dict[str, Profile] = field(default_factory=dict)
    """Per channel: hour-of-day power statistics for anomaly scoring (see domain.scoring)."""

    def to_bytes(self) -> bytes:
        """Versioned, deterministic encoding (the RocksDB table value and its changelog)."""
        return dumps(
            {
                "v": STATE_VERSION,
                "o": self.last_offset,
                "p": {name: p.to_list() for name, p in sorted(self.profiles.items())},
                "c": {name: _channel_row(ch) for name, ch in sorted(self.channels.items())},
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceState:
        doc = orjson.loads(data)
        if doc.get("v") != STATE_VERSION:
            raise CorruptState(f"unsupported device state version {doc.get('v')!r}")
        return cls(
            {
                name: ChannelState(
                    ch[0],
                    ch[1],
                    [Entry.from_list(e) for e in ch[2]],
                    ch[3] if len(ch) > 3 else [],
                    ch[4] if len(ch) > 4 else None,
                )
                for name, ch in doc["c"].items()
            },
            doc.get("o", -1),
            {name: Profile(stats) for name, stats in doc.get("p", {}).items()},
        )

    def latest_ts(self) -> int | None:
        """Newest reading time over all channels."""
        times = [ch.entries[-1].ts for ch in self.channels.values() if ch.entries]
        return max(times) if times else None


@dataclass(slots=True)
class ApplyResult:
    """What applying one reading produced. ``status`` is one of ``new``, ``out_of_order``,
    ``revised``, ``duplicate``, ``stale`` or ``late`` (for metrics and tests)."""

    status: str
    records: list[NormalizedReading]
    anomalies: list[AnomalyEvent]


def apply(state: DeviceState, r: Reading, rules: DeviceRules) -> ApplyResult:
    """Apply reading ``r`` to ``state`` (mutated in place) and return the outputs.

    Outputs are in emission order: the reading's own record first, then re-derived
    neighbours in time order. Raises :class:`DomainRejection` when the channel already
    holds readings of the other kind (register vs interval), or declared the other
    direction.
    """
    ch = state.channels.get(r.channel)
    if ch is None:
        ch = state.channels[r.channel] = ChannelState(r.kind, direction=r.direction)
    elif ch.kind != r.kind:
        raise DomainRejection(
            "kind_conflict",
            f"channel {r.channel!r} of device {r.device_id!r} holds {ch.kind} readings; "
            f"got a {r.kind} reading",
            field="kind",
        )
    elif r.direction is not None and ch.direction != r.direction:
        if ch.direction is not None:
            raise DomainRejection(
                "direction_conflict",
                f"channel {r.channel!r} of device {r.device_id!r} carries {ch.direction}; "
                f"got a {r.direction} reading",
                field="direction",
            )
        # Declared from now on; records already out keep the suffix convention's answer.
        ch.direction = r.direction
    entries = ch.entries
    idx = _bisect(entries, r.ts_ms)
    if idx < len(entries) and entries[idx].ts == r.ts_ms:
        e = entries[idx]
        if e.content() == _content_of(r):
            return ApplyResult("duplicate", [], [])
        if (idx == 0 and ch.anchored) or not _better(r, e):
            # An anchor is outside the horizon: a different version of it is stale for the
            # stream; the original stays as it was and the source keeps the newer one.
            return ApplyResult("stale", [], [])
        _replace(e, r)
        return _finish(ch, r, idx, rules, "revised")
    if Flag.FUTURE_TIMESTAMP.value in r.arrival_flags:
        known, revision = _remember(ch, r, rules)
        if known is not None:
            return ApplyResult(known, [], [])
        flags = (Flag.REVISED.value,) if revision else ()
        return _unplaced(r, "future", flags, None, rules, ch.direction, revision)
    latest = entries[-1].ts if entries else None
    if latest is not None and (
        (idx == 0 and ch.anchored) or r.ts_ms < latest - rules.reorder_horizon_s * 1000
    ):
        return _late(ch, r, latest, rules)
    arrival = r.arrival_flags
    status = "new"
    if idx < len(entries):
        arrival = (*arrival, Flag.OUT_OF_ORDER.value)
        status = "out_of_order"
    entry = Entry.from_reading(r, arrival)
    if ch.late:
        held = next((row for row in ch.late if row[0] == r.ts_ms), None)
        if held is not None:
            # A future-stamped reading claimed this time and was published: the true one
            # is its next revision, so it supersedes it everywhere "highest revision wins".
            ch.late.remove(held)
            entry.revision = held[1]
    entries.insert(idx, entry)
    result = _finish(ch, r, idx, rules, status)
    if status == "new" and r.quality != "N":
        _score(state, r, result, rules)
    return result


def _score(state: DeviceState, r: Reading, result: ApplyResult, rules: DeviceRules) -> None:
    """Online scoring of an in-order new reading (never of re-derived neighbours)."""
    record = result.records[0]
    profile = state.profiles.get(r.channel)
    if profile is None:
        profile = state.profiles[r.channel] = Profile()
    found = score_and_learn(profile, record.ts_start, record.ts_end, record.delta_kwh, rules.scoring)
    if found is not None:
        result.anomalies.append(
            AnomalyEvent(
                anomaly_id(record.event_id, found.type),
                record.event_id,
                r.device_id,
                r.channel,
                record.ts_end,
                found.type,
                found.score,
                found.detail,
                record.revision,
                False,
                record.ingested_at,
            )
        )


def _bisect(entries: list[Entry], ts: int) -> int:
    # Appends dominate: check the end before bisecting.
    if not entries or entries[-1].ts < ts:
        return len(entries)
    return bisect_left([e.ts for e in entries], ts)


def _better(r: Reading, e: Entry) -> bool:
    new = (r.updated_at_ms if r.updated_at_ms is not None else -1, QUALITY_RANK[r.quality])
    old = (e.updated_at if e.updated_at is not None else -1, QUALITY_RANK[e.quality])
    return new > old


def _replace(e: Entry, r: Reading) -> None:
    e.replace_content(r, (*r.arrival_flags, Flag.REVISED.value))


def _finish(ch: ChannelState, r: Reading, idx: int, rules: DeviceRules, status: str) -> ApplyResult:
    records: list[NormalizedReading] = []
    anomalies: list[AnomalyEvent] = []
    _rederive(ch, r.device_id, r.channel, idx, rules, records, anomalies)
    _trim(ch, rules)
    return ApplyResult(status, records, anomalies)


def _rederive(
    ch: ChannelState,
    device_id: str,
    channel: str,
    start: int,
    rules: DeviceRules,
    records: list[NormalizedReading],
    anomalies: list[AnomalyEvent],
) -> None:
    """Re-derive entries from ``start`` on; emit each one whose record changed. The entry
    at ``start`` is always emitted (it is new or revised). Stops at the first later entry
    whose derivation is unchanged: nothing after it can change either."""
    entries = ch.entries
    max_kw = rules.max_power_for(device_id)
    direction = channel_direction(channel, ch.direction)
    for j in range(start, len(entries)):
        e = entries[j]
        pred = entries[j - 1] if j > 0 else None
        d = _derive(ch.kind, pred, e, max_kw, rules)
        flags = _ordered(d.flags)
        changed = (d.ts_start, d.delta, flags) != (e.ts_start, e.delta, e.flags)
        if j > start and not changed and (d.run, d.step) == (e.run, e.step):
            break
        old_flags = e.flags
        e.ts_start, e.delta, e.run, e.step, e.flags = d.ts_start, d.delta, d.run, d.step, flags
        if j == start or changed:
            e.revision += 1
            _emit(device_id, channel, ch.kind, direction, e, old_flags, d.notes, records, anomalies)


class _Derived:
    """What :func:`_derive` computes for one entry. ``notes``: anomaly flag -> (score,
    human-readable detail). A plain slotted class: built once per derived entry, and a
    dataclass's default factories cost more than its fields."""

    __slots__ = ("delta", "flags", "notes", "run", "step", "ts_start")

    def __init__(self, flags: set[str]) -> None:
        self.ts_start: int | None = None
        self.delta: float | None = None
        self.run = 0
        self.step: int | None = None
        self.flags = flags
        self.notes: dict[str, tuple[float, str]] = {}

    def raise_flag(self, flag: Flag, score: float, detail: str) -> None:
        self.flags.add(flag)
        self.notes[flag] = (score, detail)


def _derive(kind: Kind, pred: Entry | None, e: Entry, max_kw: float, rules: DeviceRules) -> _Derived:
    """The record of ``e`` given its predecessor in time order (None: first of the channel)."""
    out = _Derived(set(e.arrival))
    qflag = QUALITY_FLAGS.get(e.quality)
    if qflag is not None:
        out.flags.add(qflag)
    if Flag.FUTURE_TIMESTAMP in out.flags:
        ahead = (e.ts - e.ingested_at) / 1000.0
        out.notes[Flag.FUTURE_TIMESTAMP] = (
            ahead,
            f"reading time is {ahead:.0f} s after it reached the broker",
        )
    if e.value < 0:
        out.raise_flag(Flag.NEGATIVE, -e.value, f"negative value {e.value:g} {e.unit}")
    if pred is None:
        out.flags.add(Flag.FIRST_READING)
    if kind == "interval":
        _derive_interval(pred, e, max_kw, out)
    elif pred is not None:
        _derive_register(pred, e, max_kw, rules, out)
    # Runs of equal actual values. Only actual reads count: a null (N) reading is missing
    # data, and an estimate or substitute is often a flat fill by design (NEM12 F19 is a zero
    # fill), not a stuck meter; either breaks a run.
    counts = e.quality == "A"
    contiguous = pred is not None and (kind == "register" or (out.ts_start or 0) <= pred.ts)
    if counts and contiguous and pred is not None and pred.run and e.value == pred.value:
        out.run = pred.run + 1
    else:
        out.run = 1 if counts else 0
    if out.run >= rules.run_length:
        _raise_run(kind, e, out, rules)
    return out


def _run_span_s(kind: Kind, run: int, e: Entry, step_ms: int | None) -> float:
    """How long a run of ``run`` equal readings has lasted: intervals cover their length
    each; equal register reads span the steps between them (at this reading's step)."""
    if kind == "interval":
        return run * (e.interval_s or 0)
    return (run - 1) * (step_ms or 0) / 1000.0


def _raise_run(kind: Kind, e: Entry, out: _Derived, rules: DeviceRules) -> None:
    """Raise ``zero_run`` or ``frozen`` once per run: on the reading where the run first
    reaches both ``run_length`` readings and its minimum duration. Equal half-hours are
    ordinary in real data (0.85 kWh three times in a row; a solar export channel reads zero
    all night): flagging every reading of every short run put an anomaly on 3.6% of a real
    household's intervals."""
    zero = e.value == 0
    min_s = rules.zero_run_min_s if zero else rules.frozen_min_s
    span = _run_span_s(kind, out.run, e, out.step)
    if span < min_s:
        return
    before = out.run - 1
    if before >= rules.run_length and _run_span_s(kind, before, e, out.step) >= min_s:
        return  # raised earlier in this run
    run_flag = Flag.ZERO_RUN if zero else Flag.FROZEN
    out.raise_flag(
        run_flag,
        float(out.run),
        f"{out.run} consecutive readings of {e.value:g} {e.unit} over {span / 3600:g} h",
    )


def _derive_interval(pred: Entry | None, e: Entry, max_kw: float, out: _Derived) -> None:
    assert e.interval_s is not None
    length_ms = e.interval_s * 1000
    out.ts_start = e.ts - length_ms
    out.delta = e.value
    max_delta = max_kw * e.interval_s / 3600.0
    if e.value > max_delta + _EPS:
        out.raise_flag(
            Flag.SUSPICIOUS_JUMP,
            e.value / max_delta,
            f"{e.value:g} kWh in {e.interval_s} s is above {max_delta:g} kWh at {max_kw:g} kW",
        )
    if pred is not None and out.ts_start > pred.ts:
        missing_ms = out.ts_start - pred.ts
        out.raise_flag(
            Flag.GAP,
            missing_ms / length_ms,
            f"{missing_ms / length_ms:g} missing intervals ({missing_ms / 60000:g} min) before this reading",
        )
    elif pred is not None and out.ts_start < pred.ts:
        # Two intervals claim the same time (a 23-hour day sent as 24): the energy of both is
        # booked, and the overlap said.
        overlap_ms = pred.ts - out.ts_start
        out.raise_flag(
            Flag.OVERLAP,
            overlap_ms / length_ms,
            f"starts {overlap_ms / 60000:g} min before the previous interval ends",
        )


def _derive_register(pred: Entry, e: Entry, max_kw: float, rules: DeviceRules, out: _Derived) -> None:
    out.ts_start = pred.ts
    step = out.step = e.ts - pred.ts
    rise = e.value - pred.value
    max_delta = max_kw * step / _HOUR_MS
    if rise >= 0:
        out.delta = rise
        if rise > max_delta + _EPS:
            out.raise_flag(
                Flag.SUSPICIOUS_JUMP,
                rise / max_delta if max_delta > 0 else float("inf"),
                f"register rose {rise:g} kWh in {step / 1000:g} s, above {max_delta:g} kWh at {max_kw:g} kW",
            )
    else:
        # A fall is a wrap only at a known modulus, from near it to near zero, and if the
        # wrapped delta is physically possible in the elapsed time; otherwise a reset, a
        # correction or a replacement: flagged, and nothing is booked from it.
        band = rules.wrap_band
        for modulus in rules.register_moduli_kwh:
            if pred.value < modulus and e.value < modulus:
                wrapped = e.value + modulus - pred.value
                near = pred.value >= modulus * (1.0 - band) and e.value <= modulus * band
                if near and wrapped <= max_delta + _EPS:
                    out.delta = wrapped
                    out.raise_flag(
                        Flag.ROLLOVER,
                        1.0,
                        f"register wrapped at {modulus:g} kWh: {pred.value:g} -> {e.value:g}, "
                        f"delta {wrapped:g} kWh",
                    )
                break
        if out.delta is None:
            out.raise_flag(
                Flag.COUNTER_RESET,
                pred.value - e.value,
                f"register fell from {pred.value:g} to {e.value:g} kWh; delta not booked",
            )
    expected = e.interval_s * 1000 if e.interval_s else pred.step
    if expected and step > rules.gap_factor * expected:
        missing = round(step / expected) - 1
        out.raise_flag(
            Flag.GAP,
            float(missing),
            f"{step / 1000:g} s since the previous reading, expected {expected / 1000:g} s",
        )


def _ordered(flags: Iterable[str]) -> tuple[str, ...]:
    """The distinct ``flags`` as wire strings, in declaration order of :class:`Flag`."""
    return tuple(sorted({_FLAG_VALUE[f] for f in flags}, key=_FLAG_RANK.__getitem__))


def _record(
    device_id: str, channel: str, kind: Kind, direction: str | None, e: Entry, eid: str
) -> NormalizedReading:
    # Positional, in field order: built once per output record.
    return NormalizedReading(
        eid,
        device_id,
        channel,
        kind,
        e.ts_start,
        e.ts,
        e.value,
        e.value if kind == "register" else None,
        e.delta,
        e.unit,
        e.quality,
        e.method,
        e.reason_code,
        e.flags,
        e.revision,
        e.updated_at,
        e.source,
        e.ingested_at,
        e.original_value,
        e.original_unit,
        e.interval_s,
        direction,
    )


def _emit(
    device_id: str,
    channel: str,
    kind: Kind,
    direction: str | None,
    e: Entry,
    old_flags: tuple[str, ...],
    notes: dict[str, tuple[float, str]],
    records: list[NormalizedReading],
    anomalies: list[AnomalyEvent],
) -> None:
    """Append ``e``'s record and its anomaly events: one per anomaly flag it carries, and a
    ``cleared`` one per anomaly flag its previous revision carried and this one does not."""
    eid = event_id(device_id, channel, e.ts)
    records.append(_record(device_id, channel, kind, direction, e, eid))
    if not (e.flags or old_flags):
        return
    for flag in e.flags:
        if flag in ANOMALY_FLAGS:
            score, detail = notes.get(flag, (1.0, flag))
            anomalies.append(_event(eid, device_id, channel, e, flag, score, detail, False))
    for flag in old_flags:
        if flag in ANOMALY_FLAGS and flag not in e.flags:
            detail = f"{flag} withdrawn by revision {e.revision}"
            anomalies.append(_event(eid, device_id, channel, e, flag, 0.0, detail, True))


def _event(
    eid: str, device_id: str, channel: str, e: Entry, flag: str, score: float, detail: str, cleared: bool
) -> AnomalyEvent:
    return AnomalyEvent(
        anomaly_id(eid, flag), eid, device_id, channel, e.ts, flag, score, detail, e.revision, cleared,
        e.ingested_at,
    )  # fmt: skip


def _remember(ch: ChannelState, r: Reading, rules: DeviceRules) -> tuple[str | None, int]:
    """Look ``r`` up in the channel's memory of unplaced readings (``ChannelState.late``):
    ``("duplicate" | "stale", _)`` when it emits nothing, else ``(None, revision)`` to
    publish it at, remembered. The same reading again was one more record and one more
    anomaly per re-delivery; another version at the same stamp was a second revision-0
    record with one event id and other values."""
    content = [r.updated_at_ms, r.quality, r.value, r.unit, r.interval_s, r.method, r.reason_code]
    revision = 0
    held = next((row for row in ch.late if row[0] == r.ts_ms), None)
    if held is not None:
        if held[2:] == content:
            return "duplicate", 0
        old = (held[2] if held[2] is not None else -1, QUALITY_RANK[held[3]])
        new = (r.updated_at_ms if r.updated_at_ms is not None else -1, QUALITY_RANK[r.quality])
        if new <= old:
            return "stale", 0
        revision = held[1] + 1
        ch.late.remove(held)
    ch.late.append([r.ts_ms, revision, *content])
    if len(ch.late) > rules.max_window:
        del ch.late[: len(ch.late) - rules.max_window]
    return None, revision


def _late(ch: ChannelState, r: Reading, latest: int, rules: DeviceRules) -> ApplyResult:
    """A reading too old to place (see :func:`_unplaced` and :func:`_remember`)."""
    known, revision = _remember(ch, r, rules)
    if known is not None:
        return ApplyResult(known, [], [])
    behind = (latest - r.ts_ms) / 1000.0
    note = (
        behind,
        f"{behind:g} s older than the channel's latest reading; horizon {rules.reorder_horizon_s} s",
    )
    flags: tuple[str, ...] = (Flag.OUT_OF_ORDER.value, Flag.LATE_BEYOND_HORIZON.value)
    if revision:
        flags = (*flags, Flag.REVISED.value)
    return _unplaced(r, "late", flags, (Flag.LATE_BEYOND_HORIZON, note), rules, ch.direction, revision)


def _unplaced(
    r: Reading,
    status: str,
    flags: tuple[str, ...],
    note: tuple[Flag, tuple[float, str]] | None,
    rules: DeviceRules,
    declared: str | None,
    revision: int = 0,
) -> ApplyResult:
    """A reading the channel's window does not take: too old to place (``late``), or
    stamped beyond ``max_future_s`` ahead of its broker time (``future``), which as the
    channel's latest would make every live reading after it late and drop the true one at
    its time as stale. Emitted once as it is, derived without a predecessor (registers get
    no delta, intervals book their own value), flagged; the window is unchanged, so it is
    never the reference of another reading."""
    e = Entry.from_reading(r, (*r.arrival_flags, *flags))
    d = _derive(r.kind, None, e, rules.max_power_for(r.device_id), rules)
    d.flags.discard(Flag.FIRST_READING)
    if note is not None:
        d.notes[note[0]] = note[1]
    e.revision = revision
    e.ts_start, e.delta, e.flags = d.ts_start, d.delta, _ordered(d.flags)
    result = ApplyResult(status, [], [])
    direction = channel_direction(r.channel, declared)
    _emit(r.device_id, r.channel, r.kind, direction, e, (), d.notes, result.records, result.anomalies)
    return result


def _trim(ch: ChannelState, rules: DeviceRules) -> None:
    """Drop readings older than the horizon, keeping one of them as the anchor, and keep at
    most ``max_window`` readings after the anchor."""
    entries = ch.entries
    cut = entries[-1].ts - rules.reorder_horizon_s * 1000
    if entries[0].ts >= cut and len(entries) <= rules.max_window:
        return
    k = 0
    while k < len(entries) and entries[k].ts < cut:
        k += 1
    drop = max(k - 1, len(entries) - rules.max_window - 1, 0)
    if drop:
        del entries[:drop]
        ch.anchored = True
