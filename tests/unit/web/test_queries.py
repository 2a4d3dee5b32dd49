"""Merging workers' local answers: each counts its own partitions, the merge adds them up,
and a page over several workers equals the page over all their items together."""

from __future__ import annotations

from typing import Any

import pytest

from aurora_streams.errors import InvalidQuery
from aurora_streams.web import queries

from .stores import RdictStores


def _local_fleet(devices: int, latest: int | None, anomalies: dict[str, int]) -> dict[str, Any]:
    return {"devices": devices, "channels": 2 * devices, "latest_reading_ms": latest,
            "open_anomalies_by_type": anomalies, "workers": 1}  # fmt: skip


def test_fleet_answers_add_up_and_keep_the_newest_reading() -> None:
    merged = queries.merge_fleet(
        _local_fleet(3, 1_735_689_600_000, {"spike": 1}),
        [_local_fleet(2, None, {"gap": 2}), _local_fleet(1, 1_735_776_000_000, {"spike": 4})],
    )
    assert (merged["devices"], merged["channels"], merged["workers"]) == (6, 12, 3)
    assert merged["open_anomalies_by_type"] == {"spike": 5, "gap": 2}
    assert merged["latest_reading"] == "2025-01-02T00:00:00.000Z" and "latest_reading_ms" not in merged


def test_consumption_totals_add_per_window() -> None:
    merged = queries.merge_consumption(
        {"0": [1.0, 0.5, 2.0, 0.0]}, [{"0": [2.0, 0.0, 1.0, 0.25], "3600000": [1.0, 0.0, 1.0, 0.0]}]
    )
    assert merged == {"0": [3.0, 0.5, 3.0, 0.25], "3600000": [1.0, 0.0, 1.0, 0.0]}
    body = queries.consumption_body(None, "1h", 0, 7_200_000, merged)
    assert [(i["start"], i["import_kwh"], i["channel_windows"]) for i in body["items"]] == [
        ("1970-01-01T00:00:00.000Z", 3.0, 3), ("1970-01-01T01:00:00.000Z", 1.0, 1),
    ]  # fmt: skip


def test_a_devices_page_over_workers_is_the_page_over_all_ids() -> None:
    # Each worker answers its first limit + 1 ids after the cursor.
    worker_a, worker_b = ["a", "c", "e"], ["b", "d", "f"]
    page = queries.devices_page(worker_a + worker_b, limit=2)
    assert page == {"items": [{"device_id": "a"}, {"device_id": "b"}], "next_cursor": "b"}
    assert queries.devices_page(["x"], limit=2)["next_cursor"] is None


def _event(ts: int, aid: str) -> dict[str, Any]:
    return {"ts_end": ts, "detected_at": ts, "anomaly_id": aid, "type": "spike"}


def test_an_anomalies_page_over_workers_is_newest_first_with_a_cursor() -> None:
    page = queries.anomalies_page(
        [_event(1, "a"), _event(3, "b"), _event(2, "c"), _event(3, "d")],
        limit=2,  # two workers' answers
    )
    assert [e["anomaly_id"] for e in page["items"]] == ["d", "b"]
    assert page["next_cursor"] == "3:b"


def test_consumption_refuses_a_range_it_cannot_answer_exactly(tmp_path: Any) -> None:
    stores = RdictStores(tmp_path)
    try:
        q = queries.Queries(stores)
        with pytest.raises(InvalidQuery) as info:
            q.consumption(None, "1h", 60_000, 3_600_000)
        assert info.value.reason == "unaligned_range"
        with pytest.raises(InvalidQuery) as info:
            q.consumption(None, "1h", 0, 32 * 86_400_000)
        assert info.value.reason == "invalid_range"
        assert q.consumption(None, "1h", 0, 3_600_000) == {}
        assert q.device("nobody") is None and q.aggregates("nobody", "E1", "1h", None, None, None, 10) is None
    finally:
        stores.close()
