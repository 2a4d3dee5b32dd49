from __future__ import annotations

from aurora_streams.tables.device_state import (
    encode_log_record,
    is_device_key,
    load_log_record,
    log_base_key,
)


def test_a_partition_record_round_trips_and_is_never_a_device() -> None:
    table: dict[str, bytes] = {}
    assert load_log_record(table, 2) == (0, -1)  # before the partition's first checkpoint
    table[log_base_key(2)] = encode_log_record(1 << 48, (1 << 48) + 99)
    assert load_log_record(table, 2) == (1 << 48, (1 << 48) + 99)
    assert load_log_record(table, 3) == (0, -1)
    assert not is_device_key(log_base_key(2)) and is_device_key("NMI0001")
