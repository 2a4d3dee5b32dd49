"""Stream-table stores for in-process tests of the read API: real RocksDB databases
(rocksdict, as Faust's stores use), one per table and partition, filled from readings run
through the worker's pure core (:class:`aurora_streams.processing.Processor`).

The views are written the way the worker's view updater writes them (a day record per
device, channel and day; fleet summaries under the NUL key), but from the whole run at once:
what the stores hold after the run's checkpoints. The updater's incremental path is the
worker's own, tested in ``tests/unit/agents``; here the question is what the API makes of
what is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Rdict

from aurora_streams.codecs import anomaly_fields
from aurora_streams.domain.aggregates import DayRecord, day_key, day_of
from aurora_streams.domain.device import DeviceState
from aurora_streams.domain.fleet import (
    SUMMARY_KEY,
    DayTotals,
    DeviceCounts,
    OpenAnomalies,
    RecentAnomalies,
    contribution_change,
    day_contributions,
    open_types,
    totals_key,
)
from aurora_streams.domain.model import AnomalyEvent, NormalizedReading
from aurora_streams.processing import build_processor, new_state
from aurora_streams.settings import Settings
from aurora_streams.web.queries import Table

TABLES: tuple[Table, ...] = ("device_state", "days", "recent", "forecasts")


class RdictStores:
    """``partitions`` RocksDB databases per table under ``root``; a key lives in the
    partition ``owner(key)`` says (tests choose which partitions are "active")."""

    def __init__(self, root: Path, partitions: int = 2) -> None:
        self.partitions = partitions
        self.dbs = {t: [Rdict(str(root / f"{t}-{p}")) for p in range(partitions)] for t in TABLES}
        self.active_partitions = list(range(partitions))
        self.owner: dict[str, int] = {}
        """device id -> partition (anything unlisted: partition 0)."""

    def _partition(self, key: str) -> int:
        return self.owner.get(key.split("|", 1)[0], 0)

    def get(self, table: Table, key: str) -> bytes | None:
        value: bytes | None = self.dbs[table][self._partition(key)].get(key.encode())
        return value

    def active(self, table: Table) -> list[Any]:
        return [self.dbs[table][p] for p in self.active_partitions]

    def put(self, table: Table, partition: int, key: str, value: bytes) -> None:
        self.dbs[table][partition][key.encode()] = value

    def close(self) -> None:
        for dbs in self.dbs.values():
            for db in dbs:
                db.close()


def fill(stores: RdictStores, messages: Iterable[tuple[str, dict[str, Any], int]], broker_ts_ms: int) -> None:
    """Run raw ``messages`` (device id, reading, partition) through the processor and store
    what a worker's checkpoints would have stored for them."""
    settings = Settings()
    processor = build_processor(settings)
    states: dict[str, DeviceState] = {}
    emitted: list[NormalizedReading | AnomalyEvent] = []
    offsets = dict.fromkeys(range(stores.partitions), 0)
    for device, reading, partition in messages:
        stores.owner[device] = partition
        offset = offsets[partition]
        key, value = device.encode(), orjson.dumps(reading)
        processor.process(key, value, partition=partition, offset=offset, timestamp_ms=broker_ts_ms,
                          states=states, load=new_state, emitted=emitted)  # fmt: skip
        offsets[partition] += 1
    days: dict[str, DayRecord] = {}
    recent: dict[str, RecentAnomalies] = {}
    for item in emitted:
        if isinstance(item, NormalizedReading):
            key = day_key(item.device_id, item.channel, day_of(item.ts_end))
            record = days.setdefault(key, DayRecord())
            record.apply_reading(item)
        else:
            recent.setdefault(item.device_id, RecentAnomalies()).apply(
                item.device_id, anomaly_fields(item), settings.recent_anomalies_per_device
            )
    counts = [DeviceCounts() for _ in range(stores.partitions)]
    for device, state in states.items():
        p = stores.owner[device]
        stores.put("device_state", p, device, state.to_bytes())
        counts[p].replace(None, (len(state.channels), state.latest_ts()))
    totals: dict[tuple[int, str], DayTotals] = {}
    for key, record in days.items():
        device, channel, day = key.split("|")
        p = stores.owner[device]
        stores.put("days", p, key, record.to_bytes())
        change = contribution_change({}, day_contributions(record, channel))
        totals.setdefault((p, totals_key("", int(day))), DayTotals()).add(change)
    for (p, key), day_totals in totals.items():
        stores.put("days", p, key, day_totals.to_bytes())
    opened = [OpenAnomalies() for _ in range(stores.partitions)]
    for device, events in recent.items():
        p = stores.owner[device]
        for key, value in events.changes().items():
            assert value is not None
            stores.put("recent", p, key, value)
        opened[p].replace(open_types([]), open_types(events.events.values()))
    for p in range(stores.partitions):
        stores.put("device_state", p, SUMMARY_KEY, counts[p].to_bytes())
        stores.put("recent", p, SUMMARY_KEY, opened[p].to_bytes())
