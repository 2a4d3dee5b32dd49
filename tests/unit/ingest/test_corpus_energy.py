"""What the worker books from every real file of the shared corpus equals the file's own
energy: the files published as ``aurora-streams ingest`` publishes them, through the
worker's processor (``processing.Processor``, which the normalize agent runs per message).

The expectation is computed here from the parsed file alone: per NMI, channel and interval
end, the version with the newest UpdateDateTime, then the better quality, then the first in
the file (the revision rule), summed; for NEM13, the 250 records' Quantity. Before this
test, 8 NEM13 files differed (``#011`` booked 172 kWh for a Quantity of 31, ``SCENARIO13``
99,005.1 for 994.9, ``Scenario18`` 310,060 for 260, a 12-digit wrap 0 for 10) and 7 with a
negative Quantity were rejected by the reader.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from pathlib import Path

import pytest

from aurora_streams.domain.flags import QUALITY_RANK
from aurora_streams.domain.model import AnomalyEvent, NormalizedReading
from aurora_streams.ingest.nem12 import AccumulationRead, Nem12Error, Nem12Reader
from aurora_streams.ingest.publish import ingest_reader, open_reader
from aurora_streams.ingest.summary import IngestSummary
from aurora_streams.processing import build_processor, new_state
from aurora_streams.settings import Settings
from tests.unit.ingest.test_nem12_corpus import DATA, corpus

pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"the shared NEM12 corpus is not at {DATA}")
BROKER_TS = 1_800_000_000_000  # 2027: every file's readings are in the past


def accepted() -> list[Path]:
    out = []
    for path in corpus():
        try:
            for _ in Nem12Reader.from_path(path, "strict"):
                pass
        except Nem12Error:
            continue
        out.append(path)
    return out


def suffix_direction(suffix: str) -> str | None:
    """NEM12's convention, written out here rather than taken from the code under test."""
    return {"E": "consumption", "B": "generation"}.get(suffix[:1].upper())


def expected_energy(path: Path) -> dict[tuple[str, str, str | None], float]:
    """Per NMI, suffix and direction: NEM13's DirectionIndicator E (export from the market)
    is the customer's consumption, I its generation."""
    best: dict[tuple[str, str, int], tuple[tuple[int, int], float]] = {}
    out: dict[tuple[str, str, str | None], float] = defaultdict(float)
    for day in Nem12Reader.from_path(path, "strict"):
        if day.unit is None:
            continue
        if isinstance(day, AccumulationRead):
            direction = "consumption" if day.direction == "E" else "generation"
            out[(day.nmi, day.suffix, direction)] += (day.quantity or 0.0) * day.factor
            continue
        for i, v in enumerate(day.values):
            if v is None:
                continue
            key = (day.nmi, day.suffix, day.interval_end_ms(i))
            version = (day.update_ms if day.update_ms is not None else -1, QUALITY_RANK[day.qualities[i]])
            if key not in best or version > best[key][0]:
                best[key] = (version, v * day.factor)
    for (nmi, suffix, _ts), (_v, kwh) in best.items():
        out[(nmi, suffix, suffix_direction(suffix))] += kwh
    return dict(out)


def booked_energy(path: Path) -> tuple[dict[tuple[str, str, str | None], float], int]:
    processor = build_processor(Settings())
    states: dict = {}  # type: ignore[type-arg]
    latest: dict[str, NormalizedReading] = {}
    dead = 0
    offset = 0

    def send(key: bytes, value: bytes) -> None:
        nonlocal dead, offset
        emitted: list[NormalizedReading | AnomalyEvent] = []
        out = processor.process(
            key, value, partition=0, offset=offset, timestamp_ms=BROKER_TS, states=states, load=new_state,
            emitted=emitted,
        )  # fmt: skip
        offset += 1
        dead += sum(1 for o in out if o.topic == processor.topics.dlq)
        for rec in emitted:
            if isinstance(rec, NormalizedReading) and (
                rec.event_id not in latest or rec.revision >= latest[rec.event_id].revision
            ):
                latest[rec.event_id] = rec

    ingest_reader(
        functools.partial(open_reader, path), path.name, mode="strict", sink=send, summary=IngestSummary()
    )
    energy: dict[tuple[str, str, str | None], float] = defaultdict(float)
    for rec in latest.values():
        energy[(rec.device_id, rec.channel, rec.direction)] += rec.delta_kwh or 0.0
    return dict(energy), dead


ACCEPTED = accepted()


def test_the_reader_accepts_most_of_the_corpus() -> None:
    assert len(ACCEPTED) >= 258


@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: str(p.relative_to(DATA)))
def test_booked_energy_equals_the_files(path: Path) -> None:
    want = expected_energy(path)
    got, dead = booked_energy(path)
    assert dead == 0
    assert set(got) <= set(want)
    for key, kwh in want.items():
        assert got.get(key, 0.0) == pytest.approx(kwh, rel=1e-9, abs=1e-6), key
