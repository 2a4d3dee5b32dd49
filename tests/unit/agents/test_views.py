"""The views' forecaster cache across epochs (agents.views.WindowCloser), and the expiry of
day records past the retention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from rocksdict import Options, Rdict

from aurora_streams.agents import views
from aurora_streams.agents.delivery import TableWriter
from aurora_streams.agents.views import WindowCloser
from aurora_streams.codecs import decode_forecast_entry
from aurora_streams.domain import forecast_blocks
from aurora_streams.domain.aggregates import DayRecord, day_key, day_key_prefix
from aurora_streams.domain.forecast import DeviceForecaster
from aurora_streams.settings import Settings
from aurora_streams.tables.device_state import StateCache
from aurora_streams.tables.views import items_with_prefix, keys_with_prefix

WINDOW = 900_000
T0 = 1_735_653_600_000  # 2025-01-01T00:00+10:00, a window boundary
KEY = "d1|E1"


class _Unreadable(dict[str, bytes]):
    def get(self, key: str, default: Any = None) -> Any:
        raise AssertionError(f"the table was read for {key!r}")


def _stored(table: dict[str, bytes], key: str = KEY) -> tuple[int | None, bytes]:
    """The open window's end and the whole (version 3) state stored for ``key``: its head
    joined with its blocks."""
    open_end, head = decode_forecast_entry(table[key])
    assert forecast_blocks.is_head(head)
    return open_end, forecast_blocks.join(head, lambda name: dict.get(table, f"{key}|{name}"))


def _epoch(table: dict[str, bytes], models: StateCache[Any], *ends: int) -> WindowCloser:
    """One epoch of the closer: observe readings ending at ``ends``, then write."""
    closer = WindowCloser(WINDOW, table, models)
    days: dict[str, bytes] = {}
    day_cache: dict[str, DayRecord] = {}
    for end in ends:
        closer.observe("d1", "E1", end, days, day_cache)
    closer.write(TableWriter(None, 0))
    return closer


def test_a_written_forecaster_is_reused_by_the_next_epoch_without_a_table_read() -> None:
    table: dict[str, bytes] = {}
    models = StateCache[Any](10)
    first = _epoch(table, models, T0 + WINDOW, T0 + 2 * WINDOW)  # the first window closes
    model = first.cache[KEY]["model"]
    assert isinstance(model, DeviceForecaster) and model.learned == 1
    # The cache keeps the encoded state, as the table does (a decoded one is ~5x larger).
    assert models.get(KEY) == (*_stored(table), forecast_blocks.mark_of(model.to_bytes()))
    assert _stored(table) == (T0 + 2 * WINDOW, model.to_bytes())

    unreadable = _Unreadable(table)
    second = _epoch(unreadable, models, T0 + 3 * WINDOW)
    resumed = second.cache[KEY]["model"]
    assert resumed is not model and resumed.learned == 2
    model.learn(T0 + 2 * WINDOW, 0.0)  # what the uninterrupted model learns: the window closed
    assert resumed.to_bytes() == model.to_bytes()
    assert _stored(unreadable) == (T0 + 3 * WINDOW, model.to_bytes())


def test_a_forecaster_stored_as_json_before_version_3_is_read_and_rewritten_binary() -> None:
    old = DeviceForecaster(WINDOW)
    old.learn(T0 + WINDOW, 0.0)
    table = {KEY: b"%d\n" % (T0 + 2 * WINDOW) + orjson.dumps(old.to_dict())}
    closer = _epoch(table, StateCache[Any](10), T0 + 3 * WINDOW)
    assert closer.cache[KEY]["model"].learned == 2
    assert _stored(table) == (T0 + 3 * WINDOW, closer.cache[KEY]["model"].to_bytes())


def test_a_forecaster_stored_whole_is_read_and_stored_again_in_blocks() -> None:
    """A state stored whole (version 3, before the head and blocks) is stored again as a
    head and all its blocks at its next write."""
    old = DeviceForecaster(WINDOW)
    for i in range(1, 40):
        old.learn(T0 + i * WINDOW, 0.1 * i)
    table = {KEY: b"%d\n" % (T0 + 40 * WINDOW) + old.to_bytes()}
    closer = _epoch(table, StateCache[Any](10), T0 + 41 * WINDOW)
    assert closer.cache[KEY]["model"].learned == 40
    assert _stored(table) == (T0 + 41 * WINDOW, closer.cache[KEY]["model"].to_bytes())
    table = {KEY: b"%d\n" % (T0 + 40 * WINDOW) + old.to_bytes()}
    _epoch(table, StateCache[Any](10), T0 + 40 * WINDOW - 1, T0 + 41 * WINDOW + 1)  # no window closes...
    assert _stored(table)[1] == DeviceForecaster.from_bytes(_stored(table)[1]).to_bytes()


def test_after_a_clear_the_table_is_read_and_an_older_epoch_puts_nothing() -> None:
    table: dict[str, bytes] = {}
    models = StateCache[Any](10)
    _epoch(table, models, T0 + WINDOW, T0 + 2 * WINDOW)
    stored = table[KEY]
    models.clear()  # a rebalance

    third = _epoch(table, models, T0 + 2 * WINDOW)  # inside the open window: read, not written
    assert third.cache[KEY].get("model") is None and third.cache[KEY]["open"] == T0 + 2 * WINDOW
    assert table[KEY] == stored

    begun_before = WindowCloser(WINDOW, table, models)
    models.clear()
    begun_before.observe("d1", "E1", T0 + 3 * WINDOW, {}, {})
    begun_before.write(TableWriter(None, 0))
    assert decode_forecast_entry(table[KEY])[0] == T0 + 3 * WINDOW
    assert models.get(KEY) is None


def test_keys_with_prefix_finds_one_channels_days_only(tmp_path: Path) -> None:
    db = Rdict(str(tmp_path / "days"), options=Options(raw_mode=True))
    try:
        for key in (
            "d1|E1|20000",
            "d1|E1|20005",
            "d1|E10|20001",
            "d10|E1|20002",
            "d1|B1|19999",
            "d2|E1|20000",
        ):
            db[key.encode()] = b"{}"
        assert keys_with_prefix(db, day_key_prefix("d1", "E1")) == ["d1|E1|20000", "d1|E1|20005"]
        assert keys_with_prefix(db, day_key_prefix("d3", "E1")) == []
        assert items_with_prefix(db, "d1|E1") == [  # bytewise: "0" sorts before "|"
            ("d1|E10|20001", b"{}"), ("d1|E1|20000", b"{}"), ("d1|E1|20005", b"{}"),
        ]  # fmt: skip
    finally:
        db.close()


def test_a_new_day_expires_the_channels_days_past_the_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Rdict(str(tmp_path / "days"), options=Options(raw_mode=True))
    monkeypatch.setattr(views, "partition_store", lambda _table: db)
    try:
        for day in (19_900, 19_960, 19_964, 19_965, 19_999):  # one far older than 30 days past it
            db[day_key("d1", "E1", day).encode()] = b"{}"
        db[day_key("d1", "E2", 19_900).encode()] = b"{}"  # another channel's
        settings = Settings(aggregate_retention_days=35)
        assert views._expired(settings, None, "d1", "E1", 20_000) == {
            day_key("d1", "E1", day) for day in (19_900, 19_960, 19_964, 19_965)
        }
    finally:
        db.close()


def test_forecasts_are_published_once_per_period_of_event_time() -> None:
    hour = 4 * WINDOW  # T0 is on an hour boundary
    closer = WindowCloser(WINDOW, {}, None, publish_every_ms=hour)
    published = []
    for i in range(1, 18):  # one reading per window: each closes the window before it
        closer.observe("d1", "E1", T0 + i * WINDOW, {}, {})
        if KEY in closer.learned:
            published.append(i)
        closer.learned.clear()
    # The windows ending on the hour (T0 + 4k windows) close at readings 5, 9, 13 and 17.
    assert published == [5, 9, 13, 17]
    # A reading after a gap learns every window in it: one record, if the gap holds an hour's end.
    closer.observe("d1", "E1", T0 + 30 * WINDOW, {}, {})
    assert list(closer.learned) == [KEY]
    closer.learned.clear()
    closer.observe("d1", "E1", T0 + 31 * WINDOW, {}, {})  # closes T0 + 30 windows: not on the hour
    assert not closer.learned


def test_every_learned_window_is_published_without_a_period() -> None:
    closer = WindowCloser(WINDOW, {}, None)
    for i in range(1, 4):
        closer.observe("d1", "E1", T0 + i * WINDOW, {}, {})
        assert (KEY in closer.learned) == (i > 1)
        closer.learned.clear()


def _tables_are_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the views read plain dicts as their tables (prefix scans over sorted keys)."""
    monkeypatch.setattr(views, "partition_store", lambda table: table)
    monkeypatch.setattr(
        views, "keys_with_prefix", lambda db, prefix: sorted(k for k in db if k.startswith(prefix))
    )
    monkeypatch.setattr(
        views,
        "items_with_prefix",
        lambda db, prefix: sorted((k, v) for k, v in db.items() if k.startswith(prefix)),
    )


def test_the_fleet_totals_written_with_the_days_equal_a_scan_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated meters (late, duplicate, revised and jumping readings) through the processor
    and the views in epochs of a few hundred readings, across UTC midnights: after each
    epoch the stored day totals equal the totals of the stored days computed from scratch.
    A forecaster that learns a closed window reads a day record before a late reading of
    that day changes it (the soak crashed on that order: the record's stored contribution
    was never taken)."""
    from aurora_streams.domain.aggregates import SIZES, bucket_windows
    from aurora_streams.domain.fleet import TOTALS_PREFIX, DayTotals
    from aurora_streams.processing import build_processor, new_state
    from aurora_streams.simulator import SimConfig, generate

    _tables_are_dicts(monkeypatch)
    settings = Settings(aggregate_retention_days=2, forecast_window_min=15)
    processor = build_processor(settings)
    days: dict[str, bytes] = {}
    recent: dict[str, bytes] = {}
    forecasts: dict[str, bytes] = {}
    states: dict[str, Any] = {}
    cfg = SimConfig(devices=6, seed=3, late_rate=0.05, duplicate_rate=0.02, jump_rate=0.01, start_ms=T0)
    messages = list(generate(cfg, duration_s=4 * 86_400))
    for start in range(0, len(messages), 400):
        updater = views.ViewUpdater(settings, days, recent, forecasts)
        emitted: list[Any] = []
        for offset, m in enumerate(messages[start : start + 400], start):
            processor.process(m.key, m.value, partition=0, offset=offset, timestamp_ms=m.timestamp_ms,
                              states=states, load=new_state, emitted=emitted)  # fmt: skip
        updater.apply(emitted)
        updater.write(TableWriter(None, 0))
        expected: dict[tuple[int, int], list[float]] = {}
        for key, data in days.items():
            if key.startswith("\x00"):
                continue
            record = DayRecord.from_bytes(data)
            column = 0 if key.split("|")[1].startswith("E") else 1
            for size in SIZES.values():
                for b in bucket_windows([record], size, -(2**62), 2**62):
                    row = expected.setdefault((size, b.start), [0.0, 0.0, 0.0, 0.0])
                    row[column] += b.sum
                    row[2] += 1
                    row[3] += b.excluded_sum
        got: dict[tuple[int, int], list[float]] = {}
        for key, data in days.items():
            if key.startswith(TOTALS_PREFIX + "|"):
                got.update(DayTotals.from_bytes(data).windows)
        assert got.keys() == expected.keys()
        for window, row in expected.items():
            assert got[window] == pytest.approx(row, abs=1e-9), window
    assert any(k.startswith(TOTALS_PREFIX) for k in days) and len(messages) > 4_000


def test_a_day_a_forecaster_read_then_a_late_reading_changed_is_counted_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first reading of a new UTC day closes the last window of the day before: its
    forecaster reads that day's record. A late reading of that day in the same epoch then
    changes the record, whose stored contribution must still be taken (the soak's worker
    stopped on it with a KeyError)."""
    from aurora_streams.domain.fleet import DayTotals, totals_key
    from aurora_streams.processing import build_processor, new_state

    _tables_are_dicts(monkeypatch)
    settings = Settings(forecast_window_min=15)
    processor = build_processor(settings)
    days: dict[str, bytes] = {}
    forecasts: dict[str, bytes] = {}
    states: dict[str, Any] = {}
    day0 = (T0 // 86_400_000 + 1) * 86_400_000  # a UTC midnight
    step = 900_000
    offsets = iter(range(10**6))

    def epoch(*ks: int) -> None:
        updater = views.ViewUpdater(settings, days, {}, forecasts)
        emitted: list[Any] = []
        for k in ks:
            doc = {"device_id": "d1", "channel": "E1", "ts": day0 + k * step, "kind": "interval",
                   "value": 1.0, "unit": "kWh", "interval_s": 900}  # fmt: skip
            at = day0 + k * step
            processor.process(b"d1", orjson.dumps(doc), partition=0, offset=next(offsets),
                              timestamp_ms=at, states=states, load=new_state, emitted=emitted)  # fmt: skip
        updater.apply(emitted)
        updater.write(TableWriter(None, 0))

    epoch(*(k for k in range(1, 97) if k != 50))  # day 0 but its 50th interval
    epoch(97, 50)  # day 1's first interval, then day 0's missing one
    day_totals = DayTotals.from_bytes(days[totals_key("", day0 // 86_400_000)]).windows
    assert day_totals[(86_400_000, day0)] == [96.0, 0.0, 1.0, 0.0]


def _forecasting(
    monkeypatch: pytest.MonkeyPatch, decoded_max: int
) -> tuple[list[bytes], dict[str, bytes], int]:
    """Three devices' readings, one window each, in batches of one reading per device; what
    the closer publishes and writes, and the most forecasters it held decoded."""
    monkeypatch.setattr(views, "_DECODED_MAX", decoded_max)
    settings = Settings(forecast_publish_hours=2, forecast_window_min=WINDOW // 60_000)  # type: ignore[call-arg]
    table: dict[str, bytes] = {}
    closer = WindowCloser(WINDOW, table, None)
    days: dict[str, bytes] = {}
    published, most = [], 0
    for i in range(1, 2 * 96):  # two days of windows: a forecaster publishes after its first day
        for device in ("d1", "d2", "d3"):
            end = T0 + i * WINDOW
            day_cache: dict[str, DayRecord] = {}
            record = day_cache[day_key(device, "E1", end // 86_400_000)] = DayRecord()
            record.apply(end, 0.1 * (i % 7) + len(device), 0, None, "kWh")
            closer.observe(device, "E1", end, days, day_cache)
        most = max(most, len(closer.decoded))
        published += [r.value for r in closer.forecast_records(settings)]
    closer.write(TableWriter(None, 0))
    return published, table, most


def test_forecasters_encoded_between_batches_learn_and_publish_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept, kept_table, kept_most = _forecasting(monkeypatch, 1_000)
    dropped, dropped_table, dropped_most = _forecasting(monkeypatch, 1)
    assert kept_most == 3 and dropped_most == 3  # decoded by the batch, then dropped past 1
    assert kept and dropped == kept
    assert dropped_table == kept_table and sorted(k for k in kept_table if k.count("|") == 1) == [
        "d1|E1",
        "d2|E1",
        "d3|E1",
    ]


def _views_in_batches(
    monkeypatch: pytest.MonkeyPatch, days_decoded_rows: int
) -> tuple[dict[str, bytes], int, list[bytes]]:
    """Simulated meters (late, duplicate, revised readings) through the processor and the
    views, in epochs of 600 readings applied in batches of 50 as the agent does (``apply``,
    then ``forecast_records``); the days and forecasts tables written, the most day records
    held decoded after a batch, and the forecasts published."""
    from aurora_streams.processing import build_processor, new_state
    from aurora_streams.simulator import SimConfig, generate

    monkeypatch.setattr(views, "_DAYS_DECODED_ROWS", days_decoded_rows)
    monkeypatch.setattr(views, "_DAYS_DECODED_MIN", 0)
    _tables_are_dicts(monkeypatch)
    settings = Settings(aggregate_retention_days=2, forecast_window_min=15)
    processor = build_processor(settings)
    days: dict[str, bytes] = {}
    recent: dict[str, bytes] = {}
    forecasts: dict[str, bytes] = {}
    states: dict[str, Any] = {}
    cfg = SimConfig(devices=8, seed=5, late_rate=0.05, duplicate_rate=0.02, jump_rate=0.01, start_ms=T0)
    messages = list(generate(cfg, duration_s=3 * 86_400))
    most, published = 0, []
    for start in range(0, len(messages), 600):
        updater = views.ViewUpdater(settings, days, recent, forecasts)
        for batch in range(start, min(start + 600, len(messages)), 50):
            emitted: list[Any] = []
            for offset in range(batch, min(batch + 50, len(messages))):
                m = messages[offset]
                processor.process(m.key, m.value, partition=0, offset=offset, timestamp_ms=m.timestamp_ms,
                                  states=states, load=new_state, emitted=emitted)  # fmt: skip
            updater.apply(emitted)
            published += [r.value for r in updater.forecast_records()]
            most = max(most, len(updater.day_cache))
        updater.write(TableWriter(None, 0))
        updater.release()
    assert len(messages) > 3_000
    tables = {f"{name}/{k}": v for name, t in (("days", days), ("recent", recent), ("forecasts", forecasts))
              for k, v in t.items()}  # fmt: skip
    return tables, most, published


def test_day_records_encoded_between_batches_write_the_same_views(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``_DAYS_DECODED_ROWS`` rows of decoded day records, an epoch keeps the changed
    ones encoded between batches: what it writes (days, fleet totals, forecasts, anomalies) and
    publishes is what an epoch that keeps them all decoded writes, byte for byte."""
    kept, kept_most, kept_published = _views_in_batches(monkeypatch, 10**9)
    dropped, dropped_most, dropped_published = _views_in_batches(monkeypatch, 10)
    assert kept_most > 8 and dropped_most == 0
    assert dropped_published == kept_published and kept_published
    assert dropped.keys() == kept.keys()
    assert dropped == kept
