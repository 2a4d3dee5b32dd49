"""NEM12 files -> gateway batches on ``meter.readings.raw``.

One 300 record (one NMI, channel and day) becomes one gateway batch keyed by the NMI, so a
day re-sent with a newer UpdateDateTime or a better quality revises the stored one.

Strict mode reads each file twice: a validation pass first, and only a file with no breach
is published in the second pass, so a rejected file is never half-ingested. Lenient mode
publishes what it can in one pass and reports every breach in the summary. Channels whose
UOM is not energy (V, A, kW, pf, ...) cannot be normalized to kWh: they are counted and
reported, not published.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from aurora_streams.domain.validate import id_problem
from aurora_streams.ingest.nem12 import AccumulationRead, DayBlock, Mode, Nem12Error, Nem12Reader, Problem
from aurora_streams.ingest.summary import IngestSummary

__all__ = ["Sink", "ingest_reader", "ingest_source", "open_reader", "text_size"]

#: Receives (key, value) of each gateway batch to produce.
Sink = Callable[[bytes, bytes], None]
Progress = Callable[[int], None]


def _publish_day(
    day: DayBlock | AccumulationRead,
    source: str,
    sink: Sink | None,
    summary: IngestSummary,
    reported: set[str],
) -> None:
    size = 1 if isinstance(day, AccumulationRead) else len(day.values)
    if day.unit is None:
        summary.skipped_readings += size
        key = f"{day.nmi}/{day.suffix}"
        if key not in reported:
            reported.add(key)
            summary.problems.append(Problem(
                source, day.line, "not_energy",
                f"channel {day.suffix} of {day.nmi} has UOM {day.uom!r}, not energy: not published",
                "warning",
            ))  # fmt: skip
        return
    refused = id_problem(day.nmi, day.suffix)
    if refused is not None:
        # The worker would dead-letter every batch of it: refuse it here, where the file and
        # line can be named (a real file, NMI "(redacted)", went entirely to the DLQ while the
        # CLI reported 61,056 readings published).
        summary.skipped_readings += size
        key = f"{day.nmi}/{day.suffix}"
        if key not in reported:
            reported.add(key)
            summary.problems.append(Problem(source, day.line, "id_refused", f"{refused}: not published"))
        return
    batch = day.to_gateway_batch(source=source)
    readings = batch["readings"]
    assert isinstance(readings, list)
    summary.skipped_readings += size - len(readings)
    if not readings:
        return
    if sink is not None:
        sink(day.nmi.encode(), orjson.dumps(batch))
    summary.messages += 1
    summary.published_readings += len(readings)


def _check_ids(day: DayBlock | AccumulationRead, source: str) -> None:
    refused = id_problem(day.nmi, day.suffix)
    if refused is not None:
        raise Nem12Error(Problem(source, day.line, "id_refused", f"{refused}: the worker would refuse it"))


def ingest_reader(
    make_reader: Callable[[Mode], Nem12Reader],
    source: str,
    *,
    mode: Mode,
    sink: Sink | None,
    summary: IngestSummary,
    progress: Progress | None = None,
) -> None:
    """Read one file (``make_reader`` opens it afresh for each pass) into ``summary``,
    publishing through ``sink`` (None: parse only). Raises :class:`Nem12Error` in strict mode,
    before anything of the file is published."""
    if mode == "strict" and sink is not None:
        for day in make_reader("strict"):  # validation pass: raises on the first breach
            _check_ids(day, source)
    reader = make_reader(mode)
    reported: set[str] = set()
    seen = 0
    for day in reader:
        if mode == "strict" and sink is None:  # with a sink, the validation pass checked
            _check_ids(day, source)
        summary.add(day)
        _publish_day(day, source, sink, summary, reported)
        if progress is not None and reader.bytes_read > seen:
            progress(reader.bytes_read - seen)
            seen = reader.bytes_read
    if progress is not None and reader.bytes_read > seen:
        progress(reader.bytes_read - seen)
    summary.problems.merge(reader.problems)
    summary.files += 1


def ingest_source(
    paths: Iterable[Path],
    *,
    mode: Mode,
    sink: Sink | None,
    summary: IngestSummary,
    progress: Progress | None = None,
) -> None:
    """:func:`ingest_reader` over files on disk."""
    for path in paths:
        ingest_reader(
            functools.partial(open_reader, path), path.name,
            mode=mode, sink=sink, summary=summary, progress=progress,
        )  # fmt: skip


def open_reader(path: Path, mode: Mode, max_expanded_bytes: int | None = None) -> Nem12Reader:
    return Nem12Reader.from_path(path, mode, max_expanded_bytes)


def text_size(path: Path) -> int:
    """Bytes of text the reader will see (uncompressed size for a zip)."""
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return sum(i.file_size for i in z.infolist() if not i.is_dir())
    return path.stat().st_size
