"""Worker-level metrics that live in Faust's state, exposed at scrape time.

* ``aurora_consumer_lag{topic,partition}``: end offset minus committed offset, from the
  monitor's view (the end offset comes from fetch responses; on the embedded broker it can
  undercount, see DESIGN.md, Brokers).
* ``aurora_last_commit_timestamp_seconds{topic,partition}``: alert when it stops moving
  while records keep arriving (a known Faust failure mode).
* ``aurora_consumer_acked_pending{topic,partition}``, ``aurora_consumer_gap_intervals``,
  ``aurora_consumer_read_ahead``: the consumer's offset bookkeeping per assigned raw
  partition; pending acknowledgements that grow while the commit stands still mean a hole
  (an offset read and never acknowledged).
* ``aurora_rebalances_total``, ``aurora_rebalance_duration_seconds``.
* ``aurora_table_keys{table}`` (local keys, standby replicas included) and
  ``aurora_state_dir_bytes``, refreshed at most every 30 s (counting keys walks RocksDB).
* ``aurora_state_memory_bytes`` and ``aurora_state_memory_budget_bytes``: what RocksDB's
  shared block cache holds now (memtables included) against ``AURORA_STATE_MEMORY_MB``.
* ``aurora_malloc_in_use_bytes`` and ``aurora_malloc_free_bytes``: glibc's heap, all arenas
  (absent under jemalloc): RSS that grows with ``in_use`` is memory held by something; RSS
  that grows with ``free`` is fragmentation. ``aurora_python_allocated_blocks``: objects
  Python's allocator holds (``sys.getallocatedblocks``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from faust.sensors.monitor import Monitor
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aurora_streams import malloc
from aurora_streams.faust_adapter import started_consumer
from aurora_streams.tables.store import shared_memory_usage

__all__ = ["AuroraMonitor", "register_collector"]

REBALANCES = Counter("aurora_rebalances_total", "Consumer group rebalances seen by this worker.")
REBALANCE_DURATION = Histogram(
    "aurora_rebalance_duration_seconds", "From rebalance start to partitions assigned and tables recovered.",
    buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)  # fmt: skip


class AuroraMonitor(Monitor):  # type: ignore[misc]
    """Faust's monitor, also remembering when each partition last committed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.commit_times: dict[Any, float] = {}

    def on_tp_commit(self, tp_offsets: Any) -> None:
        super().on_tp_commit(tp_offsets)
        now = time.time()
        for tp in tp_offsets:
            self.commit_times[tp] = now

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        state: dict[str, Any] = super().on_rebalance_start(app)
        REBALANCES.inc()
        state["aurora_started"] = time.monotonic()
        return state

    def on_rebalance_end(self, app: Any, state: dict[str, Any]) -> None:
        super().on_rebalance_end(app, state)
        started = state.get("aurora_started")
        if started is not None:
            REBALANCE_DURATION.observe(time.monotonic() - started)


def _keys(table: Any) -> int:
    estimate = getattr(table.data, "estimated_keys", None)  # tables.store.BoundedRocksDBStore
    return int(estimate()) if estimate is not None else sum(1 for _ in table)


class _WorkerCollector(Collector):
    def __init__(self, app: Any, tables: Mapping[str, Any], datadir: Path) -> None:
        self.app = app
        settings = getattr(app, "aurora_settings", None)
        self.inputs = {settings.topic_raw} if settings is not None else set()
        self.tables = tables
        self.datadir = datadir
        self._sizes: tuple[float, dict[str, int], int] = (0.0, {}, 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        monitor = self.app.monitor
        lag = GaugeMetricFamily(
            "aurora_consumer_lag", "End offset minus committed offset.", labels=["topic", "partition"]
        )
        for tp, end in dict(monitor.tp_end_offsets or {}).items():
            committed = (monitor.tp_committed_offsets or {}).get(tp)
            if committed is not None:
                lag.add_metric([tp.topic, str(tp.partition)], max(0, end - committed))
        yield lag
        commits = GaugeMetricFamily(
            "aurora_last_commit_timestamp_seconds",
            "Unix time of the last offset commit.",
            labels=["topic", "partition"],
        )
        for tp, when in dict(getattr(monitor, "commit_times", {})).items():
            commits.add_metric([tp.topic, str(tp.partition)], when)
        yield commits
        yield from self._offset_bookkeeping()
        checked, keys, size = self._sizes
        if time.monotonic() - checked > 30:
            keys = {name: _keys(table) for name, table in self.tables.items()}
            size = sum(f.stat().st_size for f in self.datadir.rglob("*") if f.is_file())
            self._sizes = (time.monotonic(), keys, size)
        table_keys = GaugeMetricFamily(
            "aurora_table_keys", "Keys in local table stores (RocksDB's estimate).", labels=["table"]
        )
        for name, n in keys.items():
            table_keys.add_metric([name], n)
        yield table_keys
        yield GaugeMetricFamily("aurora_state_dir_bytes", "Bytes under the worker's data dir.", value=size)
        memory = shared_memory_usage()
        if memory is not None:
            yield GaugeMetricFamily(
                "aurora_state_memory_bytes",
                "RocksDB's shared block cache, memtables included, of all tables and partitions.",
                value=memory[0],
            )
            yield GaugeMetricFamily(
                "aurora_state_memory_budget_bytes", "AURORA_STATE_MEMORY_MB in bytes.", value=memory[1]
            )
        heap = malloc.heap_usage()
        if heap is not None:
            yield GaugeMetricFamily(
                "aurora_malloc_in_use_bytes",
                "glibc heap bytes allocated and not freed, all arenas.",
                value=heap.in_use,
            )
            yield GaugeMetricFamily(
                "aurora_malloc_free_bytes", "glibc heap bytes freed and kept in its arenas.", value=heap.free
            )
        yield GaugeMetricFamily(
            "aurora_python_allocated_blocks",
            "Blocks Python's allocator holds.",
            value=sys.getallocatedblocks(),
        )
        recovery = getattr(getattr(self.app, "tables", None), "recovery", None)
        recovering = recovery is not None and not recovery.completed.is_set()
        yield GaugeMetricFamily(
            "aurora_recovery_in_progress",
            "1 while table recovery (changelog replay) has not completed, else 0.",
            value=1.0 if recovering else 0.0,
        )

    def _offset_bookkeeping(self) -> Iterator[GaugeMetricFamily]:
        """What the consumer holds per assigned input partition before it can commit: the
        offsets acknowledged above the committed one and the gap intervals counted as
        acknowledged. A partition whose pending acknowledgements grow while its committed
        offset stands still (or crawls) cannot commit past a hole."""
        consumer: Any = started_consumer(self.app)
        diagnose = getattr(consumer, "diagnose", None)
        pending = GaugeMetricFamily(
            "aurora_consumer_acked_pending",
            "Offsets acknowledged but not yet committable (above a hole, or awaiting the commit).",
            labels=["topic", "partition"],
        )
        gaps = GaugeMetricFamily(
            "aurora_consumer_gap_intervals",
            "Offset intervals the consumer skipped and counts as acknowledged.",
            labels=["topic", "partition"],
        )
        read_ahead = GaugeMetricFamily(
            "aurora_consumer_read_ahead",
            "Last offset read minus the committed offset, as the worker holds them.",
            labels=["topic", "partition"],
        )
        if diagnose is not None:
            try:
                assigned = [tp for tp in consumer.assignment() if tp.topic in self.inputs]
            except Exception:  # not started, or between assignments
                assigned = []
            for tp in assigned:
                state = diagnose(tp)
                labels = [tp.topic, str(tp.partition)]
                pending.add_metric(labels, state["acked_pending"])
                gaps.add_metric(labels, state["gaps"])
                if state["read_offset"] is not None and state["committed_offset"] is not None:
                    read_ahead.add_metric(labels, state["read_offset"] - state["committed_offset"])
        yield pending
        yield gaps
        yield read_ahead


def register_collector(app: Any, tables: Mapping[str, Any], datadir: str | os.PathLike[str]) -> None:
    """Register the scrape-time collector (once per process)."""
    REGISTRY.register(_WorkerCollector(app, tables, Path(datadir)))
