"""The worker's RocksDB databases share one memory budget (tables.store)."""

from __future__ import annotations

import os
from pathlib import Path

from aurora_streams.tables.store import SharedMemory, _BoundedOptions


def test_every_database_charges_one_cache_and_keeps_small_memtables(tmp_path: Path) -> None:
    memory = SharedMemory(32 * 1024 * 1024)
    options = _BoundedOptions(memory, use_rocksdict=True)
    dbs = [options.open(tmp_path / f"db-{i}") for i in range(3)]
    try:
        before = memory.usage_bytes()
        for i, db in enumerate(dbs):
            for k in range(2_000):
                db[f"device-{k}".encode()] = os.urandom(200) + bytes([i])
        # The memtables of all three databases are charged to the one cache.
        assert memory.usage_bytes() > before + 3 * 2_000 * 200
        assert memory.usage_bytes() <= memory.budget_bytes
    finally:
        for db in dbs:
            db.close()
    text = next((tmp_path / "db-0").glob("OPTIONS-*")).read_text()
    assert "write_buffer_size=4194304" in text  # budget / 8 (under the 8 MiB cap)
    assert "cache_index_and_filter_blocks=true" in text
