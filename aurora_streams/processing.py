"""One raw message in, output records out: validate, normalize, route. No Faust, no Kafka.

The worker's agent, the benchmark and the tests' reference all call
:meth:`Processor.process`, so what the worker emits is, by construction, what the reference
computes from the same input. The agent only adds Kafka I/O around it.

Ordering: outputs are returned in the order they must be produced (a reading's own record,
its anomalies, then re-derived neighbours). All outputs are keyed by device id, so they land
on the device's partition in every output topic, in that order.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from aurora_streams.codecs import (
    Encoding,
    decode_raw,
    encode_anomaly,
    encode_dead_letter,
    encode_normalized,
)
from aurora_streams.domain.device import DeviceState, apply
from aurora_streams.domain.model import AnomalyEvent, DeviceRules, NormalizedReading
from aurora_streams.domain.validate import ValidationPolicy, validate_message
from aurora_streams.errors import InvalidReading, LogReset

if TYPE_CHECKING:  # settings imports TopicNames from here
    from aurora_streams.settings import Settings

__all__ = [
    "LOG_EPOCH_BITS",
    "LogRebase",
    "OutRecord",
    "Processor",
    "TopicNames",
    "build_processor",
    "log_epoch",
    "log_offset",
    "new_state",
]

LOG_EPOCH_BITS = 48
"""A device state's ``last_offset`` is ``(log epoch << 48) + source offset``. A partition
starts in epoch 0; each reset of its log found (see :class:`Processor`) moves it to a new
epoch, above every state built from the old log, so the replay fence never compares
offsets of two different logs. Kafka offsets stay far below 2**48 (281 trillion)."""


def log_epoch(fence_offset: int) -> int:
    """The log epoch of a ``last_offset``."""
    return fence_offset >> LOG_EPOCH_BITS if fence_offset >= 0 else 0


def log_offset(fence_offset: int) -> int:
    """The source offset of a ``last_offset`` within its log epoch (-1: none yet)."""
    return fence_offset & ((1 << LOG_EPOCH_BITS) - 1) if fence_offset >= 0 else fence_offset


class LogRebase(NamedTuple):
    """A partition moved to a new log epoch: what the worker logs and stores."""

    partition: int
    offset: int
    """The message whose device state revealed the reset."""
    state_offset: int
    """That state's ``last_offset`` (source offset in its epoch)."""
    log_end: int
    base: int
    """The partition's new base: ``epoch << LOG_EPOCH_BITS``."""


@dataclass(frozen=True, slots=True)
class TopicNames:
    raw: str = "meter.readings.raw"
    normalized: str = "meter.readings.normalized"
    anomalies: str = "meter.anomalies"
    dlq: str = "meter.readings.dlq"


log = logging.getLogger(__name__)


class _Source(NamedTuple):
    """Where a raw message came from: what a DLQ record must carry back."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp_ms: int


_DLQ_PREFIX_BYTES = 4096
"""Bytes of an oversized original kept in its dead letter."""
_DLQ_KEY_BYTES = 1024
_DLQ_MESSAGE_CHARS = 2048


class OutRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes


StateLoader = Callable[[str], DeviceState]


class Processor:
    """Turns raw messages into normalized, anomaly and DLQ records.

    Replay fencing: each device state remembers the offset of the last raw message applied
    to it. The raw topic is partitioned by device and its partition count is fixed, so a
    message at or below that offset is an at-least-once re-delivery and produces nothing,
    even for readings that have since left the reorder window. (Recreating the raw topic
    therefore requires deleting the device state with it.)

    ``states`` passed to :meth:`process` caches device states for one batch: a device not in
    it is loaded with ``load`` and added, and the caller writes every state in it back after
    the batch's outputs are delivered (DESIGN.md, State and replay).

    Log resets: a re-delivery replays offsets below the log's end, so a partition whose
    input reached an offset at or past the log's end (``log_marks``, the highest position
    applied, which the caller stores and restores with the states) or a device state there
    was built from another log: the broker's data wiped or the raw topic recreated while
    the states were kept. Fenced as replays, the new log's input was dropped silently (99.3%
    of it in the issue that found this). The caller sets ``log_ends`` per partition (the
    consumer's high watermark) before each batch. With ``on_log_reset="rebase"`` the
    partition then moves to a new log epoch (``log_bases``; each move is recorded in
    ``rebases`` for the caller to log) and its input is applied on top of the device states,
    whose rules flag what repeats them; with ``"refuse"``
    :class:`~aurora_streams.errors.LogReset` is raised before anything of the message is
    applied. Without a known log end nothing is detected (the reference, the benchmark).
    """

    def __init__(
        self,
        *,
        rules: DeviceRules,
        policy: ValidationPolicy,
        topics: TopicNames,
        encoding: Encoding = "json",
        max_message_bytes: int = 262_144,
        on_log_reset: str = "rebase",
    ) -> None:
        if on_log_reset not in ("rebase", "refuse"):
            raise ValueError(f"on_log_reset must be rebase or refuse, not {on_log_reset!r}")
        self.on_log_reset = on_log_reset
        self.log_bases: dict[int, int] = {}
        """Per partition: its log epoch's base (``epoch << LOG_EPOCH_BITS``); absent: 0."""
        self.log_ends: dict[int, int] = {}
        """Per partition: the log's end (high watermark) as last fetched; absent: unknown."""
        self.log_marks: dict[int, int] = {}
        """Per partition: the highest position (base + offset) applied; absent: none."""
        self.rebases: list[LogRebase] = []
        """Partitions moved to a new epoch, in order, until the caller takes them."""
        self.rules = rules
        self.policy = policy
        self.topics = topics
        self.encoding: Encoding = encoding
        self.max_message_bytes = max_message_bytes
        self.stats: Counter[str] = Counter()
        """Readings by outcome (new, duplicate, ..., dlq) since construction."""

    def process(
        self,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int,
        offset: int,
        timestamp_ms: int,
        states: MutableMapping[str, DeviceState],
        load: StateLoader,
        emitted: list[NormalizedReading | AnomalyEvent] | None = None,
    ) -> list[OutRecord]:
        """Process one raw message. Never raises for bad input: it becomes DLQ records.
        When ``emitted`` is given, the normalized readings and anomaly events behind the
        output records are appended to it too, in the same order (for in-process views)."""
        out: list[OutRecord] = []
        src = _Source(key, value, partition, offset, timestamp_ms)
        if key is None:
            # Processed on whatever partition it landed, a keyless reading advanced its
            # device's state there, and the replay fence then dropped the device's keyed
            # readings on its own partition as replays: silent loss (3 of 7 normalized).
            self._dead(
                out,
                src,
                InvalidReading(
                    "missing_key",
                    "raw message has no key: key it by device id (the raw topic is partitioned by it)",
                ),
            )
            return out
        try:
            key_str = key.decode("utf-8")
        except UnicodeDecodeError:
            self._dead(out, src, InvalidReading("invalid_key", "message key is not UTF-8"))
            return out
        try:
            payload = decode_raw(value, max_bytes=self.max_message_bytes)
            items = validate_message(payload, key=key_str, broker_ts_ms=timestamp_ms, policy=self.policy)
        except InvalidReading as exc:
            self._dead(out, src, exc)
            return out
        except Exception as bug:  # a bug, not bad input: never let one message stop the worker
            self._internal_error(out, src, bug)
            return out
        enc = self.encoding
        fenced: set[str] = set()
        base = self.log_bases.get(partition, 0)
        mark = self.log_marks.get(partition, -1)
        if mark >= base + offset:
            end = self.log_ends.get(partition)
            if end is not None and mark >= base + end:
                base = self._reset(partition, offset, log_offset(mark), end, log_epoch(mark))
        position = base + offset
        for item in items:
            if isinstance(item, InvalidReading):
                self._dead(out, src, item)
                continue
            state = states.get(item.device_id)
            if state is None:
                state = states[item.device_id] = load(item.device_id)
            if item.device_id not in fenced:
                if state.last_offset >= position:
                    position = self._check_log(partition, offset, state.last_offset)
                if state.last_offset >= position:
                    # Re-delivery of a message whose effects are already in the state (and
                    # whose outputs were delivered before the state was written).
                    self.stats["replayed"] += len(items)
                    return []
                fenced.add(item.device_id)
            try:
                result = apply(state, item, self.rules)
            except InvalidReading as exc:
                self._dead(out, src, exc)
                continue
            except Exception as bug:
                self._internal_error(out, src, bug)
                continue
            self.stats[result.status] += 1
            dkey = item.device_id.encode()
            normalized = self.topics.normalized
            anomalies = self.topics.anomalies
            for rec in result.records:
                out.append(OutRecord(normalized, dkey, encode_normalized(rec, enc)))
            for event in result.anomalies:
                out.append(OutRecord(anomalies, dkey, encode_anomaly(event, enc)))
            if emitted is not None:
                emitted.extend(result.records)
                emitted.extend(result.anomalies)
        for device_id in fenced:
            states[device_id].last_offset = position
        if position > mark:
            self.log_marks[partition] = position
        return out

    def _check_log(self, partition: int, offset: int, last: int) -> int:
        """A state at or past ``offset`` in this partition's epoch: is it a re-delivery, or
        a state from another log? Returns the message's position to fence with (moved to a
        new epoch on a reset) or raises :class:`LogReset` (``refuse``)."""
        base = self.log_bases.get(partition, 0)
        state_base = log_epoch(last) << LOG_EPOCH_BITS
        if state_base > base:
            # The state was written after a rebase whose partition record was not stored
            # (a crash between the two): its epoch is the partition's.
            base = self.log_bases[partition] = state_base
        end = self.log_ends.get(partition)
        if end is None or last < base + end:
            return base + offset  # a re-delivery: offsets below the log's end
        return self._reset(partition, offset, log_offset(last), end, log_epoch(last)) + offset

    def _reset(self, partition: int, offset: int, reached: int, end: int, epoch: int) -> int:
        """The partition's log ends at ``end`` but its input reached ``reached`` in log
        epoch ``epoch``: raise (refuse) or move the partition past that epoch; its new base."""
        if self.on_log_reset == "refuse":
            raise LogReset(partition, offset, reached, end)
        base = self.log_bases[partition] = (epoch + 1) << LOG_EPOCH_BITS
        self.log_marks.pop(partition, None)
        self.rebases.append(LogRebase(partition, offset, reached, end, base))
        return base

    def process_all(
        self,
        messages: Iterable[Any],
        *,
        states: MutableMapping[str, DeviceState],
        load: StateLoader,
        emitted: list[NormalizedReading | AnomalyEvent] | None = None,
    ) -> list[OutRecord]:
        """:meth:`process` each of ``messages`` in order (objects with ``key``, ``value``,
        ``partition``, ``offset`` and ``timestamp`` in seconds, as Faust's and aiokafka's
        messages have); their outputs, in order. One call per batch: compiled
        (aurora_streams.native), the loop calls :meth:`process` directly instead of through
        Python's keyword-argument call."""
        out: list[OutRecord] = []
        for m in messages:
            out.extend(
                self.process(
                    m.key,
                    m.value,
                    partition=m.partition,
                    offset=m.offset,
                    timestamp_ms=round(m.timestamp * 1000),
                    states=states,
                    load=load,
                    emitted=emitted,
                )
            )
        return out

    def _internal_error(self, out: list[OutRecord], src: _Source, exc: Exception) -> None:
        log.exception(
            "internal error on %s[%d]@%d; sent to the DLQ", self.topics.raw, src.partition, src.offset
        )
        error = InvalidReading("internal_error", f"{type(exc).__name__}: {exc}"[:500])
        self._dead(out, src, error, error_class=type(exc).__name__)

    def _dead(
        self, out: list[OutRecord], src: _Source, exc: InvalidReading, *, error_class: str | None = None
    ) -> None:
        self.stats["dlq"] += 1
        self.stats[f"dlq:{exc.reason}"] += 1
        value, key = src.value, src.key
        truncated = (value is not None and len(value) > self.max_message_bytes) or (
            key is not None and len(key) > _DLQ_KEY_BYTES
        )
        letter = {
            "source_topic": self.topics.raw,
            "source_partition": src.partition,
            "source_offset": src.offset,
            "source_timestamp": src.timestamp_ms,
            # A dead letter must fit the broker's record limit whatever came in: a 0.9 MB raw
            # message embedded whole (base64 in JSON) made a letter the producer refused, and
            # the worker stopped on it at every restart. Beyond the raw message limit only a
            # prefix is kept, with the size and digest of the whole.
            "original_key": key if key is None or len(key) <= _DLQ_KEY_BYTES else key[:_DLQ_KEY_BYTES],
            "original_value": (
                value if value is None or len(value) <= self.max_message_bytes else value[:_DLQ_PREFIX_BYTES]
            ),
            "reading_index": exc.index,
            "error_class": error_class or type(exc).__name__,
            "error_reason": exc.reason,
            "error_message": exc.message[:_DLQ_MESSAGE_CHARS],
            "original_size": None if value is None else len(value),
            "original_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
            "original_truncated": truncated,
        }
        out.append(OutRecord(self.topics.dlq, src.key, encode_dead_letter(letter, self.encoding)))


def build_processor(settings: Settings) -> Processor:
    """The processor a worker with ``settings`` runs (also the tests' reference and the
    benchmark's)."""
    return Processor(
        rules=settings.rules,
        policy=settings.policy,
        topics=settings.topics,
        encoding=settings.output_encoding,
        max_message_bytes=settings.max_message_bytes,
        on_log_reset=settings.on_log_reset,
    )


def new_state(_device_id: str) -> DeviceState:
    """Loader for a store that has no state yet (the reference, the benchmark)."""
    return DeviceState()
