"""The reader against the real NEM12 corpus in ../shared/data/nem12, with nemreader (a pinned
test-only dependency) as the oracle for every file it reads correctly."""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta
from pathlib import Path

import pytest

from aurora_streams.domain.units import normalize_unit
from aurora_streams.ingest.nem12 import Nem12Error, Nem12Reader
from aurora_streams.ingest.summary import IngestSummary

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "nem12"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"the shared NEM12 corpus is not at {DATA}")

INVALID_DIRS = ("invalid", "NEM12-Errors")


def corpus() -> list[Path]:
    if not DATA.exists():
        return []
    return sorted(p for p in DATA.rglob("*") if p.is_file() and p.suffix != ".md")


def is_nem13(path: Path) -> bool:
    return "nem13" in str(path.relative_to(DATA)).lower()


VALID = [p for p in corpus() if not any(d in p.parts for d in INVALID_DIRS)]
INVALID = [p for p in corpus() if any(d in p.parts for d in INVALID_DIRS)]


def summarize(path: Path, mode: str) -> tuple[IngestSummary, Nem12Reader]:
    reader = Nem12Reader.from_path(path, mode)  # type: ignore[arg-type]
    summary = IngestSummary()
    for day in reader:
        summary.add(day)
    return summary, reader


def nemreader_view(path: Path) -> dict[tuple[str, str], tuple[int, float, object, object]] | None:
    from nemreader import read_nem_file

    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = read_nem_file(str(path))
    except Exception:
        return None
    finally:
        logging.disable(logging.NOTSET)
    out = {}
    for nmi, channels in data.readings.items():
        for ch, rs in channels.items():
            total = sum(r.read_value or 0.0 for r in rs)
            out[(nmi, ch)] = (len(rs), total, rs[0].t_start if rs else None, rs[-1].t_end if rs else None)
    return out


def test_corpus_is_there() -> None:
    assert len(VALID) > 240 and len(INVALID) == 20
    assert sum(1 for p in VALID if is_nem13(p)) > 60


@pytest.mark.parametrize("path", VALID, ids=lambda p: str(p.relative_to(DATA)))
def test_same_as_nemreader(path: Path) -> None:
    theirs = nemreader_view(path)
    if theirs is None:
        pytest.skip("nemreader cannot read this file")
    ours, _ = summarize(path, "lenient")
    assert set(ours.channels) == set(theirs)
    from datetime import UTC, datetime

    for key, (count, total, first, last) in theirs.items():
        ch = ours.channels[key]
        assert ch.readings == count, key
        unit = normalize_unit(ch.uom) if ch.unit else None
        factor = unit.factor if unit else 1.0  # nemreader keeps the file's UOM
        assert ch.total == pytest.approx(total * factor, rel=1e-9, abs=1e-6), key
        to_nem = lambda ms: datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None) + timedelta(hours=10)  # noqa: E731
        assert ch.first_ms is not None and ch.last_ms is not None
        assert to_nem(ch.first_ms) == first and to_nem(ch.last_ms) == last, key


@pytest.mark.parametrize("path", VALID, ids=lambda p: str(p.relative_to(DATA)))
def test_strict_either_passes_or_names_file_line_and_rule(path: Path) -> None:
    try:
        summarize(path, "strict")
    except Nem12Error as exc:
        p = exc.problem
        assert p.file.startswith(path.name) and p.line >= 1 and p.rule and p.message
        assert str(exc).startswith(f"{p.file}:{p.line}: {p.rule}:")


CLEAN = [p for p in VALID if "CNRGYMDP" in p.name and "aemo-gem" in p.parts]


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.name)
def test_aemo_reference_files_pass_strict(path: Path) -> None:
    summary, reader = summarize(path, "strict")
    assert summary.readings > 0 and not [p for p in reader.problems if p.severity == "error"]


#: The breach each invalid file is about (lenient mode must report it; strict rejects).
EXPECTED = {
    "NEM12#000000000000021#CNRGYMDP#NEMMCO": "record_out_of_order",  # 300 before any 200
    "NEM12#000000000000022#CNRGYMDP#NEMMCO": "nmi_config",  # suffix E1 not in config E2
    "NEM12#000000000000023#CNRGYMDP#NEMMCO": "400_v",  # V inside a 400 record
    "NEM12#000000000000024#CNRGYMDP#NEMMCO": "quality_invalid",  # T is no quality flag
    "NEM12#000000000000025#CNRGYMDP#NEMMCO": "missing_900",
    "NEM12#DerpyNMIConfig#CNRGYMDP#NEMMCO.csv": "nmi_config",
    "NEM12#EmptyCells300Record#CNRGYMDP#NEMMCO.csv": "value_missing",
    "NEM12#EmptyCells400Record#CNRGYMDP#NEMMCO.csv": "400_range",
    "NEM12#InvalidIntervalDataLength#CNRGYMDP#NEMMCO.csv": "value_count",
    "Example_NEM12_15min_200_30min_300.csv": "value_count",
    "Example_NEM12_15min_200_30min_400.csv": "400_coverage",
    "Example_NEM12_30min_200_15min_300.csv": "value_count",  # 96 values under a 30-min header
    "Example_NEM12_30min_200_15min_400.csv": "value_count",
    "Example_NEM12_empty.csv": "empty_set",
    "Example_NEM12_incomplete_interval.csv": "value_count",
    "Example_NEM12_missing_header.csv": "missing_header",
    "Example_NEM12_powercor.csv": "duplicate_day",  # the same day delivered twice
    "Example_NEM12_powercor.csv.zip": "duplicate_day",
    "Example_NEM12_powercor_missing_fields.csv": "value_count",
    "Example_empty_file.csv": "file_empty",
}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_files_rejected_in_strict_and_flagged_in_lenient(path: Path) -> None:
    with pytest.raises(Nem12Error) as info:
        summarize(path, "strict")
    assert info.value.problem.line >= 1 and info.value.problem.file.startswith(path.name)
    _, reader = summarize(path, "lenient")
    rules = {p.rule for p in reader.problems}
    assert EXPECTED[path.name] in rules, rules
    for p in reader.problems:
        assert p.line >= 1 and p.message


def test_other_versions_are_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("100,NEM14,202401010000,A,B\n900\n")
    for mode in ("strict", "lenient"):
        with pytest.raises(Nem12Error, match="unsupported_version"):
            summarize(path, mode)
