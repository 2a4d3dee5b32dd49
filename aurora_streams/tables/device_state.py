"""The device state table: one value per device, RocksDB-backed, changelogged.

Key: the device id (``str``, raw UTF-8 bytes on the wire, as in the raw topic's keys).
Value: :meth:`DeviceState.to_bytes` (versioned JSON), raw bytes on the wire. Both
serializers are raw so that the changelog, the raw topic and HTTP routing agree on key bytes.
The table has as many partitions as the raw topic that feeds it.
"""

from __future__ import annotations

from typing import Any

import faust

from aurora_streams.domain.device import DeviceState
from aurora_streams.settings import Settings

__all__ = ["define_device_state", "load_state"]


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
