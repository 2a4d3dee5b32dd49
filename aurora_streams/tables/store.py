"""The worker's RocksDB stores, under one memory budget (``AURORA_STATE_MEMORY_MB``).

Faust opens every table partition's database with its own RocksDB defaults: a 2 GiB block
cache and three 64 MiB memtables each. A worker holds one database per table and partition
(4 tables x ``AURORA_PARTITIONS``, standbys included), and every changelog-heavy table fills
its memtables before it flushes, so a worker's RSS grew to about 1 GB for 200 meters and
its ceiling grew with partitions, not with meters.

Here every database of the process shares one LRU block cache of the budget, and one write
buffer manager charges all memtables to that same cache, as Kafka Streams' bounded-memory
``RocksDBConfigSetter`` does: the block cache, index and filter blocks and memtables of all
tables and partitions together stay within the budget (RocksDB flushes the largest memtable
when the memtables reach half of it). What it trades: a smaller budget means earlier
flushes (more, smaller SST files and compactions) and more block reads from the OS page
cache for device states not in the worker's decoded-state cache.
"""

from __future__ import annotations

from typing import Any

import rocksdict
from faust.stores import STORES
from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as _FaustRocksDBStore

__all__ = ["SCHEME", "BoundedRocksDBStore", "SharedMemory", "shared_memory"]

SCHEME = "aurora-rocksdb"
"""The store URL scheme of :class:`BoundedRocksDBStore` (``store=f"{SCHEME}://"``)."""

_MEMTABLE_BYTES = 8 * 1024 * 1024
"""One memtable's size: small, as most writes are a few KB per device per checkpoint."""


class SharedMemory:
    """One block cache and one write buffer manager for every database of the process."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.cache = rocksdict.Cache(budget_bytes)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            budget_bytes // 2, False, self.cache
        )

    def usage_bytes(self) -> int:
        """Bytes held in the cache now, memtables included."""
        return int(self.cache.get_usage())


_shared: dict[int, SharedMemory] = {}


def shared_memory_usage() -> tuple[int, int] | None:
    """Bytes held now and the budget of the process's shared RocksDB memory (``None``
    before a table opened it)."""
    if not _shared:
        return None
    return sum(m.usage_bytes() for m in _shared.values()), sum(m.budget_bytes for m in _shared.values())


def shared_memory(budget_bytes: int) -> SharedMemory:
    """The process's :class:`SharedMemory` for ``budget_bytes`` (made on first use)."""
    memory = _shared.get(budget_bytes)
    if memory is None:
        memory = _shared[budget_bytes] = SharedMemory(budget_bytes)
    return memory


class _BoundedOptions(RocksDBOptions):  # type: ignore[misc]
    """Faust's RocksDB options (rocksdict driver), with the shared cache and write buffers."""

    def __init__(self, memory: SharedMemory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.memory = memory

    def as_options(self) -> Any:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(self.max_open_files if self.max_open_files is not None else -1)
        options.set_write_buffer_size(min(_MEMTABLE_BYTES, self.memory.budget_bytes // 8))
        options.set_max_write_buffer_number(2)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_write_buffer_manager(self.memory.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(self.memory.cache)
        # Index and filter blocks count against the budget too (otherwise they sit outside
        # the cache, per open file); pinned for L0 so the newest files stay fast.
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class BoundedRocksDBStore(_FaustRocksDBStore):  # type: ignore[misc]
    """Faust's RocksDB store, opening its databases within the worker's state memory budget
    (``AURORA_STATE_MEMORY_MB`` of the app's settings)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, driver="rocksdict", **kwargs)
        budget = self.app.aurora_settings.state_memory_mb * 1024 * 1024  # type: ignore[attr-defined]
        self.rocksdb_options = _BoundedOptions(shared_memory(budget), **dict(self.options or {}))

    def estimated_keys(self) -> int:
        """Keys in the partitions this worker serves, as RocksDB estimates them (exact for a
        store that was never compacted with deletions; Faust's offset key included). Counting
        by iteration read every key of every table each time, and held tens of MB while it ran."""
        return sum(db.property_int_value("rocksdb.estimate-num-keys") or 0 for db in self._dbs_for_actives())


STORES.aliases[SCHEME] = f"{__name__}:BoundedRocksDBStore"
