"""The NEM12 reader on small synthetic files: timing, quality resolution, versions, units."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import pytest

from aurora_streams.domain.timeutil import parse_timestamp
from aurora_streams.ingest.nem12 import Nem12Error, Nem12Reader


def nem(*records: str, crlf: bool = False) -> str:
    sep = "\r\n" if crlf else "\n"
    return sep.join(["100,NEM12,202401010000,MDP,RETAILER", *records, "900"]) + sep


def day(
    date: str, values: list[float], quality: str = "A", reason: str = "", update: str = "20240102030405"
) -> str:
    return ",".join(["300", date, *(f"{v:g}" for v in values), quality, reason, "", update, ""])


def read(text: str, mode: str = "strict") -> tuple[list, Nem12Reader]:  # type: ignore[type-arg]
    r = Nem12Reader.from_bytes(text.encode(), "test.csv", mode)  # type: ignore[arg-type]
    return list(r), r


HEADER_30 = "200,NMI0000001,E1B1,1,E1,N1,SER1,kWh,30,"


def test_intervals_are_period_ending_in_fixed_utc_plus_10() -> None:
    [d], _ = read(nem(HEADER_30, day("20240101", [1.0] * 48)))
    assert d.interval_end_ms(0) == parse_timestamp("2024-01-01T00:30:00+10:00")
    assert d.interval_end_ms(47) == parse_timestamp("2024-01-02T00:00:00+10:00")
    batch = d.to_gateway_batch(source="file.csv")
    assert batch["device_id"] == "NMI0000001" and batch["source"] == "file.csv"
    first = batch["readings"][0]  # type: ignore[index]
    assert first == {
        "channel": "E1",
        "ts": d.interval_end_ms(0),
        "kind": "interval",
        "value": 1.0,
        "unit": "kWh",
        "interval_s": 1800,
        "quality": "A",
        "updated_at": parse_timestamp("2024-01-02T03:04:05+10:00"),
    }


def test_winter_and_summer_days_have_the_same_length() -> None:
    # NEM time has no daylight saving: every day has 48 half hours.
    days, _ = read(nem(HEADER_30, day("20240407", [1.0] * 48), day("20241006", [1.0] * 48)))
    for d in days:
        assert d.interval_end_ms(47) - d.day_start_ms == 24 * 3600 * 1000


@pytest.mark.parametrize("minutes", [1, 5, 10, 15, 30])
def test_every_interval_length(minutes: int) -> None:
    n = 1440 // minutes
    [d], _ = read(nem(f"200,NMI0000001,E1,1,E1,N1,SER1,Wh,{minutes},", day("20240101", [500.0] * n)))
    assert len(d.values) == n and d.energy_kwh() == pytest.approx(0.5 * n)
    assert d.to_gateway_batch()["readings"][0]["interval_s"] == minutes * 60  # type: ignore[index]


def test_v_day_resolved_by_400_records() -> None:
    text = nem(HEADER_30, day("20240101", [1.0] * 48, quality="V"),
               "400,1,10,A,,", "400,11,20,S14,32,", "400,21,48,E52,,")  # fmt: skip
    [d], r = read(text)
    assert d.qualities[0] == "A" and d.qualities[10] == "S" and d.methods[10] == "14" and d.reasons[10] == 32
    assert d.qualities[47] == "E" and d.methods[47] == "52" and not r.problems
    readings = d.to_gateway_batch()["readings"]
    assert readings[15]["quality"] == "S" and readings[15]["reason_code"] == 32  # type: ignore[index]


@pytest.mark.parametrize(("records", "rule"), [
    (["400,1,10,A,,", "400,11,40,A,,"], "400_coverage"),
    (["400,1,10,A,,", "400,12,48,A,,"], "400_coverage"),
    (["400,1,50,A,,"], "400_range"),
    (["400,1,48,V,,"], "400_v"),
    ([], "v_without_400"),
])  # fmt: skip
def test_400_rules(records: list[str], rule: str) -> None:
    text = nem(HEADER_30, day("20240101", [1.0] * 48, quality="V"), *records)
    with pytest.raises(Nem12Error) as info:
        read(text)
    assert info.value.problem.rule == rule
    days, r = read(text, "lenient")
    assert rule in {p.rule for p in r.problems}
    # What no valid 400 record resolved goes out as V, never as Actual, and the worker
    # flags it quality_unresolved and books none of it as validated.
    import orjson

    from aurora_streams.processing import build_processor, new_state
    from aurora_streams.settings import Settings

    [batch] = [d.to_gateway_batch() for d in days]
    unresolved = [x for x in batch["readings"] if x["quality"] == "V"]  # type: ignore[attr-defined,index]
    assert unresolved
    out = build_processor(Settings()).process(
        b"NMI0000001", orjson.dumps(batch), partition=0, offset=0, timestamp_ms=1_800_000_000_000,
        states={}, load=new_state,
    )  # fmt: skip
    records = [orjson.loads(o.value) for o in out if o.topic == "meter.readings.normalized"]
    flagged = [x for x in records if "quality_unresolved" in x["flags"]]
    assert len(flagged) == len(unresolved) and all(x["quality"] == "V" for x in flagged)


@pytest.mark.parametrize(("quality", "reason", "rule"), [
    ("S14", "", "reason_required"), ("F", "24", "method_required"), ("A52", "", "method_forbidden"),
    ("X", "", "quality_invalid"), ("A", "abc", "reason_invalid"),
])  # fmt: skip
def test_quality_and_reason_rules(quality: str, reason: str, rule: str) -> None:
    with pytest.raises(Nem12Error) as info:
        read(nem(HEADER_30, day("20240101", [1.0] * 48, quality=quality, reason=reason)))
    assert info.value.problem.rule == rule and info.value.problem.line == 3


def test_obsolete_reason_codes_are_accepted() -> None:
    [d], r = read(nem(HEADER_30, day("20240101", [1.0] * 48, quality="F52", reason="94")))
    assert d.reasons[0] == 94 and not r.problems


def test_update_datetime_is_the_version_stamp_and_a_resend_is_flagged() -> None:
    text = nem(HEADER_30, day("20240101", [1.0] * 48, quality="E52", update="20240102000000"),
               day("20240101", [1.2] * 48, update="20240105000000"))  # fmt: skip
    days, r = read(text, "lenient")
    assert days[1].update_ms > days[0].update_ms  # type: ignore[operator]
    assert [p.rule for p in r.problems] == ["date_order", "duplicate_day"] or "duplicate_day" in {
        p.rule for p in r.problems
    }


def test_units_reactive_kept_apart_and_non_energy_not_converted() -> None:
    text = nem("200,NMI0000001,E1Q1V1,1,Q1,N1,SER1,kVArh,30,", day("20240101", [2.0] * 48),
               "200,NMI0000001,E1Q1V1,1,V1,N1,SER1,V,30,", day("20240101", [240.0] * 48))  # fmt: skip
    q, v = read(text)[0]
    assert q.unit == "kvarh" and q.energy_kwh() == 96.0
    assert v.unit is None and v.energy_kwh() == 0.0


def test_sum_check_compares_register_reads_with_intervals() -> None:
    ok = nem(HEADER_30, day("20240101", [1.0] * 48), "500,N,,20240102000000,1000",
             day("20240102", [1.0] * 48), "500,N,,20240103000000,1048")  # fmt: skip
    assert not read(ok)[1].problems
    off = ok.replace(",1048", ",1060")
    _, r = read(off)  # a warning, never a rejection, even in strict mode
    assert [(p.rule, p.severity) for p in r.problems] == [("sum_check", "warning")]
    assert len(r.index_reads) == 2 and r.index_reads[1].index == 1060.0


def test_crlf_lf_and_zip_give_the_same_days() -> None:
    text = nem(HEADER_30, day("20240101", [0.5] * 48))
    lf = read(text)[0]
    crlf = read(nem(HEADER_30, day("20240101", [0.5] * 48), crlf=True))[0]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("inner.csv", text)
    zipped = list(Nem12Reader.from_bytes(buf.getvalue(), "x.zip"))
    assert [d.values for d in lf] == [d.values for d in crlf] == [d.values for d in zipped]


def test_values_with_exponent_or_negative_are_breaches() -> None:
    bad = day("20240101", [1.0] * 48).replace(",1,1,", ",1e3,-2,", 1)
    with pytest.raises(Nem12Error, match="value_format"):
        read(nem(HEADER_30, bad))


def test_memory_stays_flat_for_large_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("100,NEM12,202401010000,MDP,RETAILER\n")
        for nmi in range(40):
            f.write(f"200,NMI{nmi:07d},E1,1,E1,N1,S,kWh,5,\n")
            for d in range(30):
                f.write(
                    ",".join(
                        ["300", f"202401{d + 1:02d}", *["0.123"] * 288, "A", "", "", "20240201000000", ""]
                    )
                    + "\n"
                )
        f.write("900\n")
    tracemalloc.start()
    days = 0
    for _ in Nem12Reader.from_path(path):
        days += 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert days == 1200 and path.stat().st_size > 2_000_000
    assert peak < path.stat().st_size / 4  # never holds the file


NEM13 = (
    "100,NEM13,200401101030,MDA1,Ret1\n"
    "250,VABC005890,11,1,11,11,METSER123,E,006342.8,20031005093055,A,,,007654.9,20040107100333,A,,,"
    "1312.1,kWh,20040407,20040108100333,20040108091133\n"
    "550,N,,N,\n"
    "900\n"
)


def test_nem13_quantity_is_booked_over_its_read_period() -> None:
    import orjson

    from aurora_streams.ingest.nem12 import AccumulationRead
    from aurora_streams.processing import build_processor, new_state
    from aurora_streams.settings import Settings

    [read] = list(Nem12Reader.from_bytes(NEM13.encode(), "nem13.csv"))
    assert isinstance(read, AccumulationRead) and read.quantity == 1312.1 and read.suffix == "11"
    batch = read.to_gateway_batch(source="nem13.csv")
    [reading] = batch["readings"]  # type: ignore[misc]
    assert reading["kind"] == "interval" and reading["value"] == 1312.1  # type: ignore[index]
    assert reading["ts"] == read.current_ms  # type: ignore[index]
    assert reading["interval_s"] == (read.current_ms - read.previous_ms) // 1000  # type: ignore[index,operator]
    p = build_processor(Settings())
    states: dict = {}  # type: ignore[type-arg]
    out = p.process(b"VABC005890", orjson.dumps(batch), partition=0, offset=0, timestamp_ms=1_800_000_000_000,
                    states=states, load=new_state)  # fmt: skip
    records = [orjson.loads(o.value) for o in out if o.topic == "meter.readings.normalized"]
    assert records[-1]["delta_kwh"] == pytest.approx(1312.1)
    assert records[-1]["ts_start"] == "2003-10-04T23:30:55.000Z"  # the previous read, NEM time +10:00


@pytest.mark.parametrize(
    ("previous", "current", "quantity"),
    [
        ("999999999999.00", "000000000009.00", "10.000"),  # a 12-digit register wrapped: booked 0 before
        ("00105.4", "99110.5", "994.900"),  # reads differ by 99,005.1: booked that before
        ("000888", "009953", "65"),  # a multiplier or a forward estimate: 9,065 booked before
        ("081908.00", "081848.00", "-10"),  # the register fell: 99,990 booked as a wrap before
    ],
)
def test_nem13_books_the_quantity_not_the_register_difference(
    previous: str, current: str, quantity: str
) -> None:
    import orjson

    from aurora_streams.processing import build_processor, new_state
    from aurora_streams.settings import Settings

    text = (
        NEM13.replace("006342.8", previous).replace("007654.9", current).replace(",1312.1,", f",{quantity},")
    )
    days, _ = read(text)
    [batch] = [d.to_gateway_batch() for d in days]
    p = build_processor(Settings())
    out = p.process(b"VABC005890", orjson.dumps(batch), partition=0, offset=0, timestamp_ms=1_800_000_000_000,
                    states={}, load=new_state)  # fmt: skip
    [rec] = [orjson.loads(o.value) for o in out if o.topic == "meter.readings.normalized"]
    assert rec["delta_kwh"] == pytest.approx(float(quantity))


def test_nem13_quantity_that_disagrees_with_the_register_is_a_warning() -> None:
    text = NEM13.replace(",1312.1,", ",1300.0,")
    _, r = read(text)
    assert [(p.rule, p.severity) for p in r.problems] == [("sum_check", "warning")]


@pytest.mark.parametrize(("indicator", "direction"), [("E", "consumption"), ("I", "generation")])
def test_nem13_direction_indicator_reaches_the_normalized_record(indicator: str, direction: str) -> None:
    import orjson

    from aurora_streams.processing import build_processor, new_state
    from aurora_streams.settings import Settings

    days, _ = read(NEM13.replace(",METSER123,E,", f",METSER123,{indicator},"))
    [batch] = [d.to_gateway_batch() for d in days]
    assert batch["readings"][0]["direction"] == direction  # type: ignore[index]
    p = build_processor(Settings())
    out = p.process(b"VABC005890", orjson.dumps(batch), partition=0, offset=0, timestamp_ms=1_800_000_000_000,
                    states={}, load=new_state)  # fmt: skip
    [rec] = [orjson.loads(o.value) for o in out if o.topic == "meter.readings.normalized"]
    assert rec["direction"] == direction and rec["delta_kwh"] == pytest.approx(1312.1)


def test_a_line_longer_than_the_limit_is_refused_without_being_held(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aurora_streams.ingest.nem12 import MAX_LINE_CHARS

    path = tmp_path / "no-breaks.csv"
    good = nem(HEADER_30, day("20240101", [0.5] * 48)).split("\n")
    long_line = "300,20240102" + ",0.5" * (MAX_LINE_CHARS * 3)  # ~200,000 characters, one line
    path.write_text("\n".join([*good[:2], long_line, *good[2:]]))
    with pytest.raises(Nem12Error, match="line_too_long") as refused:
        list(Nem12Reader.from_path(path))
    assert refused.value.problem.line == 3
    # Lenient: the line is reported and skipped, the rest is read, and it is never held whole.
    tracemalloc.start()
    reader = Nem12Reader.from_path(path, "lenient")
    days = list(reader)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [d.date for d in days] == ["20240101"]
    assert [(p.line, p.rule) for p in reader.problems] == [(3, "line_too_long")]
    assert reader.bytes_read == path.stat().st_size
    assert peak < len(long_line) / 2


def test_a_zip_expanding_beyond_the_limit_is_refused_before_it_is_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = nem(HEADER_30, *(day(f"202401{d:02d}", [0.5] * 48) for d in range(1, 29)))
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner.csv", text)
    with pytest.raises(Nem12Error, match="zip_too_large"):
        Nem12Reader.from_path(path, max_expanded_bytes=len(text) - 1)
    with pytest.raises(Nem12Error, match="zip_too_large"):
        Nem12Reader.from_bytes(path.read_bytes(), "big.zip", max_expanded_bytes=len(text) - 1)
    assert len(list(Nem12Reader.from_path(path, max_expanded_bytes=len(text)))) == 28


def test_a_reader_closes_the_files_it_opened(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Read to the end, stopped by a strict error, or closed early: no file stays open (a
    corpus run left one per file, zip members' archives included)."""
    text = nem(HEADER_30, day("20240101", [0.5] * 48))
    plain = tmp_path / "a.csv"
    plain.write_text(text)
    packed = tmp_path / "a.zip"
    with zipfile.ZipFile(packed, "w") as z:
        z.writestr("inner.csv", text)
    for path in (plain, packed):
        reader = Nem12Reader.from_path(path)
        assert len(list(reader)) == 1 and reader.stream.closed
        with Nem12Reader.from_path(path) as early:
            next(iter(early))
        assert early.stream.closed
    if isinstance(reader.stream, io.TextIOWrapper):
        assert all(f.closed if hasattr(f, "closed") else f.fp is None for f in reader.stream.also_close)  # type: ignore[attr-defined]
    broken = tmp_path / "broken.csv"
    broken.write_text(text.replace("300,20240101", "300,2024013x"))
    strict = Nem12Reader.from_path(broken)
    with pytest.raises(Nem12Error):
        list(strict)
    assert strict.stream.closed
