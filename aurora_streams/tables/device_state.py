"""The device state table: one value per device, RocksDB-backed, changelogged.

Key: the device id (``str``, raw UTF-8 bytes on the wire, as in the raw topic's keys).
Value: :meth:`DeviceState.to_bytes` (versioned JSON), raw bytes on the wire. Both
serializers are raw so that the changelog, the raw topic and HTTP routing agree on key bytes.
The table has as many partitions as the raw topic that feeds it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, TypeVar

import faust
import orjson

from aurora_streams.domain.device import DeviceState
from aurora_streams.settings import Settings

__all__ = [
    "LOG_BASE_PREFIX",
    "StateCache",
    "define_device_state",
    "encode_log_record",
    "is_device_key",
    "load_log_record",
    "load_state",
    "log_base_key",
]

LOG_BASE_PREFIX = "\x00log-base:"
"""Keys of the table's partition records: ``<prefix><partition>`` holds that raw partition's
log epoch base and the highest position applied on it (``processing.Processor`` on log
resets), JSON ``{"base": int, "mark": int}``, stored with the device states of every
checkpoint. A device id never starts with a control character (the id rules), so these
never collide with devices; readers of the table skip them."""

V = TypeVar("V")


def define_device_state(app: faust.App, settings: Settings) -> Any:
    # Faust derives serializers from key_type/value_type and falls back to JSON; ours are
    # raw bytes, so the changelog topic is declared here with raw serializers and the
    # table's own attributes (used by the store and by changelog sends) are set to match.
    # A mismatch makes recovery fail on every record (reliability notes, section 3).
    changelog = app.topic(
        settings.changelog_topic,
        key_type=str,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        compacting=True,
        deleting=False,
        acks=False,
        internal=True,
    )
    table = app.Table(
        "device_state",
        key_type=str,
        value_type=bytes,
        partitions=settings.partitions,
        changelog_topic=changelog,
        help="Per-device window of recent readings (see domain.device).",
    )
    table.key_serializer = "raw"  # type: ignore[attr-defined]
    table.value_serializer = "raw"  # type: ignore[attr-defined]
    return table


def load_state(table: Any, device_id: str) -> DeviceState:
    """The device's state, or a fresh one. Must run with an event of the device's partition
    current (the RocksDB store reads that partition's database)."""
    data = table.get(device_id)
    return DeviceState() if data is None else DeviceState.from_bytes(data)


def log_base_key(partition: int) -> str:
    return f"{LOG_BASE_PREFIX}{partition}"


def is_device_key(key: str) -> bool:
    """Whether ``key`` is a device's: every other key of the table (a partition's log record,
    its fleet counts, Faust's ``__faust\\x00offset__`` in the store) holds a NUL, which no
    device id can."""
    return "\x00" not in key


def encode_log_record(base: int, mark: int) -> bytes:
    return orjson.dumps({"base": base, "mark": mark})


def load_log_record(table: Any, partition: int) -> tuple[int, int]:
    """The partition's stored ``(base, mark)``: ``(0, -1)`` before its first checkpoint.
    Must run with an event of the partition current, as :func:`load_state`."""
    data = table.get(log_base_key(partition))
    if data is None:
        return 0, -1
    doc = orjson.loads(data)
    return int(doc["base"]), int(doc["mark"])


class StateCache(Generic[V]):
    """Decoded device states (or other decoded table values: the views keep their
    forecasters in one, see ``agents.views``) as this worker last wrote them, most recently
    used last.

    Decoding a device's window from the table was the largest cost of a busy worker (a
    third of its time with 48-reading windows). Only the normalize agent writes the
    device table, and it puts every state it wrote here, so a cached state equals the
    stored one, with two exceptions that :meth:`clear` covers: a rebalance (another worker
    may have advanced a partition that comes back; the app clears on every rebalance start)
    and a failed batch (its states were changed in memory but not stored). A batch that
    began before a clear does not repopulate the cache (``generation``).
    """

    def __init__(self, max_devices: int) -> None:
        self.max_devices = max_devices
        self.generation = 0
        self._states: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        self._states.clear()
        self.generation += 1

    def get(self, device_id: str) -> V | None:
        state = self._states.get(device_id)
        if state is not None:
            self._states.move_to_end(device_id)
        return state

    def put(self, device_id: str, state: V, generation: int) -> None:
        if generation != self.generation or self.max_devices <= 0:
            return
        self._states[device_id] = state
        self._states.move_to_end(device_id)
        while len(self._states) > self.max_devices:
            self._states.popitem(last=False)

    def discard(self, device_id: str) -> None:
        self._states.pop(device_id, None)
