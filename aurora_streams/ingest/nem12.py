"""A streaming NEM12 and NEM13 reader (AEMO Meter Data File Format v1.x).

NEM13 (accumulation meters) files are read too: each 250 record becomes an
:class:`AccumulationRead` (previous and current register reads and the quantity between
them), published as register readings.

Reads line by line (CSV, CRLF or LF, or a zip holding one file); memory stays flat whatever
the file size: only the current 200 block and one pending day are held.

Blocking: ``100 -> (200 -> (300 -> 400* -> 500*)+)+ -> 900``. Each 300 record, with the 400
records that follow it applied, becomes one :class:`DayBlock` (one NMI, channel and day).
Times are NEM time, fixed UTC+10 with no daylight saving, and intervals are period-ending:
interval 1 ends at 00:00 + IntervalLength on IntervalDate.

Every breach of the specification is a :class:`Problem` naming the file, the line and a
stable rule code. In ``strict`` mode the first breach raises :class:`Nem12Error`; in
``lenient`` mode it is recorded and the reader ingests what it can. Some checks are data
checks rather than format rules (the register-vs-interval sum check); they are warnings and
never reject a file.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, Literal

from aurora_streams.domain.units import normalize_unit
from aurora_streams.errors import AuroraError

__all__ = [
    "AccumulationRead",
    "DayBlock",
    "IndexRead",
    "Nem12Error",
    "Nem12Reader",
    "Problem",
    "ProblemLog",
    "open_nem12",
]

Mode = Literal["strict", "lenient"]

_AEST_OFFSET_MS: Final = 10 * 3600 * 1000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_INTERVALS: Final = (1, 5, 10, 15, 30)
_QUALITY_RE: Final = re.compile(r"^([AEFNSV])(\d{2})?$")
_DATE_RE: Final = re.compile(r"^\d{8}$")
_DT12_RE: Final = re.compile(r"^\d{12}$")
_DT14_RE: Final = re.compile(r"^\d{14}$")
# Non-negative decimal without exponent; AEMO's own example files write ".02".
_NUMBER_RE: Final = re.compile(r"^(\d+(\.\d*)?|\.\d+)$")
_TRANS_CODES: Final = frozenset("ACGDENOSR")
#: UOMs the specification allows (case-insensitive).
_UOMS: Final = frozenset(
    u.lower()
    for u in (
        "MWh",
        "kWh",
        "Wh",
        "MVArh",
        "kVArh",
        "VArh",
        "MVAr",
        "kVAr",
        "VAr",
        "MW",
        "kW",
        "W",
        "MVAh",
        "kVAh",
        "VAh",
        "MVA",
        "kVA",
        "VA",
        "kV",
        "V",
        "kA",
        "A",
        "pf",
    )
)
#: A with these reasons must be followed by 400 records (power-outage and time-reset alarms).
_REASONS_NEEDING_400: Final = frozenset({79, 89})


class Nem12Error(AuroraError):
    """A NEM12 file breaks the specification (strict mode), or cannot be read at all."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    rule: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"


MAX_LINE_CHARS = 65_536
"""Longest line read (a 300 record of 288 intervals is under 4 KB): a longer one is the
rule ``line_too_long``, skipped without holding it, where a file with no line breaks was
read as one line of its whole expanded size (over 4 GB of RSS for a 1.1 GB line)."""

MAX_PROBLEMS_KEPT = 1_000
"""Problems kept in full per reader or ingest run; beyond them only counted, per rule."""


class ProblemLog:
    """The problems of one reader or ingest run, in order: the first ``keep`` in full, and a
    count per rule of all of them. A lenient 2 MB file once made a million problems, held in
    memory with the job and served as one 162 MB document."""

    __slots__ = ("counts", "keep", "kept")

    def __init__(self, keep: int = MAX_PROBLEMS_KEPT) -> None:
        self.keep = keep
        self.kept: list[Problem] = []
        self.counts: Counter[str] = Counter()

    def append(self, problem: Problem) -> None:
        self.counts[problem.rule] += 1
        if len(self.kept) < self.keep:
            self.kept.append(problem)

    def merge(self, other: ProblemLog) -> None:
        """Add another log's problems after these (its counts in full, its kept ones while
        there is room)."""
        self.counts.update(other.counts)
        self.kept.extend(other.kept[: max(0, self.keep - len(self.kept))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def dropped(self) -> int:
        """Problems counted but not kept."""
        return self.total - len(self.kept)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.kept)

    def __len__(self) -> int:
        return len(self.kept)

    def __bool__(self) -> bool:
        return bool(self.kept)


@dataclass(slots=True)
class DayBlock:
    """One 300 record with its 400 records applied: a day of one NMI channel."""

    nmi: str
    suffix: str
    uom: str
    """As written in the 200 record (case preserved)."""
    unit: str | None
    """Normalized unit (kWh, kvarh, kVAh) for energy UOMs, None for other quantities."""
    factor: float
    interval_min: int
    date: str
    day_start_ms: int
    """00:00 NEM time of IntervalDate, as UTC epoch ms."""
    values: list[float | None]
    """Per interval, in the file's UOM; None where the file has no value."""
    qualities: list[str]
    methods: list[str | None]
    reasons: list[int | None]
    update_ms: int | None
    msats_ms: int | None
    line: int
    meter_serial: str
    register_id: str
    flags: list[str] = field(default_factory=list)
    """Problem rule codes raised on this day (lenient mode)."""

    def interval_end_ms(self, i: int) -> int:
        return self.day_start_ms + (i + 1) * self.interval_min * 60_000

    def energy_kwh(self) -> float:
        """Sum in the normalized unit (0 for non-energy channels)."""
        if self.unit is None:
            return 0.0
        return sum(v for v in self.values if v is not None) * self.factor

    def to_gateway_batch(self, source: str | None = None) -> dict[str, object]:
        """The day as a gateway batch for ``meter.readings.raw`` (values in the file's UOM;
        the worker normalizes units). Intervals without a value are left out."""
        readings: list[dict[str, object]] = []
        step = self.interval_min * 60
        for i, value in enumerate(self.values):
            if value is None:
                continue
            r: dict[str, object] = {
                "channel": self.suffix,
                "ts": self.interval_end_ms(i),
                "kind": "interval",
                "value": value,
                "unit": self.uom,
                "interval_s": step,
                "quality": self.qualities[i],
            }
            readings.append(_with_version(r, self.methods[i], self.reasons[i], self.update_ms))
        return _gateway_batch(self.nmi, readings, source)


@dataclass(frozen=True, slots=True)
class IndexRead:
    """A 500 record: the register (index) read at ``read_ms``, for the sum check."""

    nmi: str
    suffix: str
    trans_code: str
    read_ms: int | None
    index: float | None
    line: int


@dataclass(slots=True)
class AccumulationRead:
    """A NEM13 250 record: the register of one NMI suffix read twice, and the quantity."""

    nmi: str
    suffix: str
    uom: str
    unit: str | None
    factor: float
    register_id: str
    meter_serial: str
    direction: str
    previous: float | None
    previous_ms: int | None
    previous_quality: tuple[str, str | None, int | None]
    current: float | None
    current_ms: int | None
    current_quality: tuple[str, str | None, int | None]
    quantity: float | None
    update_ms: int | None
    line: int
    flags: list[str] = field(default_factory=list)

    def energy_kwh(self) -> float:
        return (self.quantity or 0.0) * self.factor if self.unit is not None else 0.0

    def to_gateway_batch(self, source: str | None = None) -> dict[str, object]:
        """The record's Quantity as one interval reading over its read period (previous read
        to current read), in the file's UOM, with the current read's quality: the Quantity
        is the energy the provider settles, and it is not the register difference when the
        register wrapped, was replaced, runs backwards or has a multiplier (the AEMO test
        files book -10, 994.9 or 65 where the reads differ by 99,990, 99,005.1 or 9,065). A
        record without a Quantity or both read times has nothing to book and is left out.
        The DirectionIndicator is named from the market's side: ``E`` (export from the
        market) is the customer's ``consumption``, ``I`` its ``generation``."""
        readings: list[dict[str, object]] = []
        prev, cur = self.previous_ms, self.current_ms
        if self.quantity is not None and prev is not None and cur is not None and cur > prev:
            quality, method, reason = self.current_quality
            r: dict[str, object] = {
                "channel": self.suffix, "ts": cur, "kind": "interval", "value": self.quantity,
                "unit": self.uom, "interval_s": (cur - prev) // 1000, "quality": quality,
                "direction": "consumption" if self.direction == "E" else "generation",
            }  # fmt: skip
            readings.append(_with_version(r, method, reason, self.update_ms))
        return _gateway_batch(self.nmi, readings, source)


def _with_version(
    reading: dict[str, object], method: str | None, reason: int | None, update_ms: int | None
) -> dict[str, object]:
    """Add the optional quality method, reason code and version stamp to a raw reading."""
    if method is not None:
        reading["method"] = method
    if reason is not None:
        reading["reason_code"] = reason
    if update_ms is not None:
        reading["updated_at"] = update_ms
    return reading


def _gateway_batch(nmi: str, readings: list[dict[str, object]], source: str | None) -> dict[str, object]:
    batch: dict[str, object] = {"device_id": nmi, "readings": readings}
    if source:
        batch["source"] = source
    return batch


def _single_member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The one file a NEM12 zip must hold."""
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) != 1:
        raise Nem12Error(Problem(name, 0, "zip_members", f"zip holds {len(members)} files, expected 1"))
    return members[0]


def _nem_datetime(text: str) -> int:
    """CCYYMMDD[hhmm[ss]] in NEM time -> UTC epoch ms."""
    dt = datetime(
        int(text[0:4]), int(text[4:6]), int(text[6:8]),
        int(text[8:10] or 0), int(text[10:12] or 0), int(text[12:14] or 0), tzinfo=UTC,
    )  # fmt: skip
    return (dt - _EPOCH) // timedelta(milliseconds=1) - _AEST_OFFSET_MS


def _check_expanded(member: zipfile.ZipInfo, name: str, max_expanded_bytes: int | None) -> None:
    # zipfile stops reading a member at its declared size, so the declared size bounds it.
    if max_expanded_bytes is not None and member.file_size > max_expanded_bytes:
        raise Nem12Error(
            Problem(
                name, 0, "zip_too_large",
                f"{member.filename} expands to {member.file_size} bytes, over {max_expanded_bytes}",
            )
        )  # fmt: skip


def open_nem12(path: str | Path, max_expanded_bytes: int | None = None) -> tuple[IO[str], str]:
    """Open a NEM12 file (or a zip holding one) as text lines; returns (stream, name). A zip
    whose file expands beyond ``max_expanded_bytes`` is rejected before anything is read."""
    path = Path(path)
    raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned to the caller
    head = raw.read(4)
    raw.seek(0)
    if head == b"PK\x03\x04":
        archive = zipfile.ZipFile(raw)
        member = _single_member(archive, path.name)
        try:
            _check_expanded(member, path.name, max_expanded_bytes)
        except Nem12Error:
            raw.close()
            raise
        inner = archive.open(member)
        text = _Text(inner, encoding="utf-8", errors="replace", newline="")
        text.also_close = [archive, raw]  # the member's stream does not close its archive's file
        return text, f"{path.name}!{member.filename}"
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=""), path.name


class _Text(io.TextIOWrapper):
    """Text over a zip member that closes the archive and its file with itself."""

    also_close: list[Any]

    def close(self) -> None:
        try:
            super().close()
        finally:
            for f in getattr(self, "also_close", ()):
                f.close()


class Nem12Reader:
    """Iterate :class:`DayBlock` s (and collect :class:`IndexRead` s and problems)."""

    def __init__(
        self, stream: IO[str], name: str, mode: Mode = "strict", *, owns_stream: bool = False
    ) -> None:
        self.stream = stream
        self.owns_stream = owns_stream
        """Close ``stream`` when the lines run out or the reader is closed (``from_path``,
        ``from_bytes``); a caller's own stream is left open."""
        self.name = name
        self.mode = mode
        self.problems = ProblemLog()
        self.index_reads: list[IndexRead] = []
        self.lines = 0
        self.bytes_read = 0
        self.version = "NEM12"
        self._seen_days: set[tuple[str, str, str]] = set()
        # Running interval energy per channel, to compare with register (500) reads.
        self._cumulative: dict[tuple[str, str], float] = {}
        self._last_index: dict[tuple[str, str], tuple[float, float, int]] = {}

    @classmethod
    def from_path(
        cls, path: str | Path, mode: Mode = "strict", max_expanded_bytes: int | None = None
    ) -> Nem12Reader:
        stream, name = open_nem12(path, max_expanded_bytes)
        return cls(stream, name, mode, owns_stream=True)

    def close(self) -> None:
        """Close the stream if the reader opened it (iterating to the end does too)."""
        if self.owns_stream:
            self.stream.close()

    def __enter__(self) -> Nem12Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_bytes(
        cls, data: bytes, name: str, mode: Mode = "strict", max_expanded_bytes: int | None = None
    ) -> Nem12Reader:
        if data[:4] == b"PK\x03\x04":
            archive = zipfile.ZipFile(io.BytesIO(data))
            member = _single_member(archive, name)
            _check_expanded(member, name, max_expanded_bytes)
            data = archive.read(member)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return cls(io.StringIO(decoder.decode(data, final=True), newline=""), name, mode, owns_stream=True)

    # -- problems -----------------------------------------------------------------------

    def _problem(self, line: int, rule: str, message: str, *, severity: str = "error") -> Problem:
        p = Problem(self.name, line, rule, message, "warning" if severity == "warning" else "error")
        if p.severity == "error" and self.mode == "strict":
            raise Nem12Error(p)
        self.problems.append(p)
        return p

    # -- reading ------------------------------------------------------------------------

    def _lines(self) -> Iterator[str | None]:
        """The stream's lines, each at most ``MAX_LINE_CHARS``; ``None`` for a longer one,
        which is read past in pieces, never held whole."""
        readline = self.stream.readline
        try:
            while line := readline(MAX_LINE_CHARS + 1):
                if len(line) <= MAX_LINE_CHARS or line.endswith(("\n", "\r")):
                    yield line
                    continue
                self.bytes_read += len(line)
                while (rest := readline(MAX_LINE_CHARS)) and not rest.endswith(("\n", "\r")):
                    self.bytes_read += len(rest)
                self.bytes_read += len(rest)
                yield None
        finally:  # at the end, on a strict reader's error, or when the iteration is dropped
            self.close()

    def __iter__(self) -> Iterator[DayBlock | AccumulationRead]:
        header_seen = False
        ended_at: int | None = None
        block: dict[str, object] | None = None
        block_rejected = day_rejected = False
        blocks_in_set = 0
        pending: DayBlock | None = None
        pending_400: list[tuple[int, int, str, str | None, int | None]] = []
        last_date: str | None = None
        last_type: str | None = None
        lineno = 0
        for raw_line in self._lines():
            lineno += 1
            if raw_line is None:
                self._problem(lineno, "line_too_long", f"line longer than {MAX_LINE_CHARS} characters")
                continue
            self.bytes_read += len(raw_line)
            line = raw_line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(",")
            rec = fields[0].strip()
            if ended_at is not None and rec != "100":
                self._problem(
                    lineno, "record_after_900", f"record {rec} after the 900 record on line {ended_at}"
                )
            if rec != "400":
                day_rejected = False
            if rec == "100":
                if pending is not None:
                    yield self._finish(pending, pending_400)
                    pending, pending_400 = None, []
                if header_seen and ended_at is None:
                    self._problem(
                        lineno, "missing_900", "a new 100 record before the 900 record of the last set"
                    )
                if lineno != 1 and not header_seen:
                    self._problem(lineno, "missing_header", "the 100 record must be the first record")
                self._header(fields, lineno)
                header_seen, ended_at, block, block_rejected, last_date = True, None, None, False, None
                blocks_in_set = 0
            elif rec in ("200", "300", "400", "500") and self.version != "NEM12":
                self._problem(lineno, "bad_record_type", f"record {rec} is not part of {self.version}")
            elif rec == "200":
                if pending is not None:
                    yield self._finish(pending, pending_400)
                    pending, pending_400 = None, []
                if not header_seen:
                    self._problem(lineno, "missing_header", "no 100 record before the first 200 record")
                    header_seen = True
                block = self._nmi_block(fields, lineno)
                block_rejected = block is None
                blocks_in_set += 1
                last_date = None
            elif rec == "300":
                if pending is not None:
                    yield self._finish(pending, pending_400)
                    pending, pending_400 = None, []
                if block is None:
                    if not block_rejected:  # else its 200 record was already reported
                        self._problem(
                            lineno, "record_out_of_order", "300 record without a 200 record before it"
                        )
                    continue
                day = self._day(fields, lineno, block)
                day_rejected = day is None
                if day is None:
                    continue
                if last_date is not None and day.date < last_date:
                    self._problem(
                        lineno, "date_order", f"300 records out of date order: {day.date} after {last_date}"
                    )
                last_date = day.date
                pending = day
            elif rec == "400":
                if day_rejected:
                    continue  # its 300 record was reported; its 400s cannot be placed
                if last_type not in ("300", "400") or pending is None:
                    self._problem(lineno, "record_out_of_order", "400 record not after a 300 or 400 record")
                    continue
                parsed = self._interval_event(fields, lineno, pending)
                if parsed is not None:
                    pending_400.append(parsed)
            elif rec == "500":
                if pending is not None:
                    yield self._finish(pending, pending_400)
                    pending, pending_400 = None, []
                if block is None or last_type not in ("300", "400", "500"):
                    self._problem(
                        lineno, "record_out_of_order", "500 record not after a 300, 400 or 500 record"
                    )
                    continue
                self._index_read(fields, lineno, block)
            elif rec == "900":
                if pending is not None:
                    yield self._finish(pending, pending_400)
                    pending, pending_400 = None, []
                if not header_seen:
                    self._problem(lineno, "missing_header", "900 record without a 100 record")
                if not blocks_in_set:
                    self._problem(lineno, "empty_set", "a 100-900 set holds no 200 record")
                ended_at = lineno
                block = None
            elif rec == "250" and self.version == "NEM13":
                if not header_seen:
                    self._problem(lineno, "missing_header", "no 100 record before the first 250 record")
                    header_seen = True
                blocks_in_set += 1
                read = self._accumulation(fields, lineno)
                if read is not None:
                    yield read  # type: ignore[misc]
            elif rec == "550" and self.version == "NEM13":
                if last_type != "250":
                    self._problem(lineno, "record_out_of_order", "550 record not after a 250 record")
                elif len(fields) < 5:
                    self._problem(
                        lineno, "missing_fields", f"550 record has {len(fields)} fields, expected 5"
                    )
            else:
                self._problem(lineno, "bad_record_type", f"record {rec[:10]!r} is not part of {self.version}")
            last_type = rec
        self.lines = lineno
        if pending is not None:
            yield self._finish(pending, pending_400)
        if lineno == 0 or (not header_seen and not self._seen_days):
            self._problem(max(lineno, 1), "file_empty", "no NEM12 records in the file")
        elif ended_at is None:
            self._problem(lineno, "missing_900", "the file ends without a 900 record")

    def _header(self, f: list[str], lineno: int) -> None:
        if len(f) < 5:
            self._problem(lineno, "missing_fields", f"100 record has {len(f)} fields, expected 5")
        version = f[1].strip().upper() if len(f) > 1 else ""
        if version not in ("NEM12", "NEM13"):
            message = f"version header {version!r}: NEM12 or NEM13 expected"
            raise Nem12Error(Problem(self.name, lineno, "unsupported_version", message))
        self.version = version
        created = f[2].strip() if len(f) > 2 else ""
        if not _DT12_RE.match(created) or not _valid_datetime(created):
            self._problem(lineno, "header_datetime", f"file creation DateTime(12) is {created!r}")

    def _nmi_block(self, f: list[str], lineno: int) -> dict[str, object] | None:
        if len(f) < 10:
            self._problem(lineno, "missing_fields", f"200 record has {len(f)} fields, expected at least 10")
            f = f + [""] * (10 - len(f))
        nmi, config, register_id, suffix, _stream, serial, uom, length = (x.strip() for x in f[1:9])
        if not nmi or len(nmi) > 10:
            self._problem(lineno, "nmi_invalid", f"NMI {nmi!r} must be 1-10 characters")
        suffixes = [config[i : i + 2].upper() for i in range(0, len(config), 2)]
        if not config:
            self._problem(lineno, "nmi_config", "NMIConfiguration is empty")
        elif suffix.upper() not in suffixes:
            self._problem(lineno, "nmi_config", f"NMISuffix {suffix!r} is not in NMIConfiguration {config!r}")
        if not re.match(r"^[A-Za-z0-9]{2}$", suffix):
            self._problem(lineno, "nmi_suffix", f"NMISuffix {suffix!r} must be 2 letters or digits")
        if uom.lower() not in _UOMS:
            self._problem(lineno, "uom_unknown", f"UOM {uom!r} is not in the specification's list")
        try:
            minutes = int(length)
        except ValueError:
            minutes = 0
        if minutes not in _INTERVALS:
            self._problem(lineno, "interval_length", f"IntervalLength {length!r} must be 1, 5, 10, 15 or 30")
            return None
        norm = normalize_unit(uom) if uom else None
        return {
            "nmi": nmi, "suffix": suffix, "uom": uom, "unit": norm.unit if norm else None,
            "factor": norm.factor if norm else 1.0, "minutes": minutes, "serial": serial,
            "register": register_id, "line": lineno,
        }  # fmt: skip

    def _day(self, f: list[str], lineno: int, block: dict[str, object]) -> DayBlock | None:
        minutes = int(block["minutes"])  # type: ignore[call-overload]
        n = 1440 // minutes
        date = f[1].strip() if len(f) > 1 else ""
        if not _DATE_RE.match(date) or not _valid_datetime(date):
            self._problem(lineno, "interval_date", f"IntervalDate {date!r} is not a CCYYMMDD date")
            return None
        # Fields after the values: QualityMethod, ReasonCode, ReasonDescription,
        # UpdateDateTime, MSATSLoadDateTime (the last optional).
        tail = len(f) - 2 - n
        if tail < 4:
            actual = _count_values(f)
            self._problem(
                lineno, "value_count",
                f"{actual} interval values for IntervalLength {minutes} (expected {n})"
                if actual != n else f"300 record has too few fields after its {n} values",
            )  # fmt: skip
            return None
        if tail > 5 and any(x.strip() for x in f[2 + n + 5 :]):
            actual = _count_values(f)
            self._problem(
                lineno, "value_count", f"{actual} interval values for IntervalLength {minutes} (expected {n})"
            )
            return None
        flags: list[str] = []
        values: list[float | None] = []
        bad_format = missing = 0
        for text in f[2 : 2 + n]:
            text = text.strip()
            if _NUMBER_RE.match(text):
                values.append(float(text))
            elif not text:
                values.append(None)
                missing += 1
            else:
                try:
                    number = float(text)
                except ValueError:
                    number = None
                values.append(number if number is not None and number >= 0 else None)
                bad_format += 1
        if bad_format:
            flags.append(self._problem(
                lineno, "value_format", f"{bad_format} values are not non-negative decimals without exponent",
            ).rule)  # fmt: skip
        if missing:
            flags.append(self._problem(lineno, "value_missing", f"{missing} interval values are empty").rule)
        qm, reason_text, _desc, update, msats = (x.strip() for x in ([*f[2 + n : 2 + n + 5], ""])[:5])
        quality, method = self._quality(qm, lineno)
        reason = self._reason(reason_text, quality, lineno, where="300")
        update_ms = None
        if update:
            if _DT14_RE.match(update) and _valid_datetime(update):
                update_ms = _nem_datetime(update)
            else:
                flags.append(
                    self._problem(
                        lineno, "update_datetime", f"UpdateDateTime {update!r} is not DateTime(14)"
                    ).rule
                )
        elif quality != "N":
            flags.append(self._problem(lineno, "update_datetime", "UpdateDateTime is missing").rule)
        msats_ms = (
            _nem_datetime(msats) if msats and _DT14_RE.match(msats) and _valid_datetime(msats) else None
        )
        nmi, suffix = str(block["nmi"]), str(block["suffix"])
        key = (nmi, suffix.upper(), date)
        if key in self._seen_days:
            flags.append(
                self._problem(
                    lineno, "duplicate_day", f"{nmi} {suffix} {date} is delivered twice in the file"
                ).rule
            )
        self._seen_days.add(key)
        return DayBlock(
            nmi=nmi, suffix=suffix, uom=str(block["uom"]),
            unit=block["unit"] if isinstance(block["unit"], str) else None,
            factor=float(block["factor"]),  # type: ignore[arg-type]
            interval_min=minutes, date=date, day_start_ms=_nem_datetime(date), values=values,
            qualities=[quality] * n, methods=[method] * n, reasons=[reason] * n,
            update_ms=update_ms, msats_ms=msats_ms, line=lineno, meter_serial=str(block["serial"]),
            register_id=str(block["register"]), flags=flags,
        )  # fmt: skip

    def _quality(self, text: str, lineno: int) -> tuple[str, str | None]:
        match = _QUALITY_RE.match(text.upper())
        if match is None:
            self._problem(
                lineno, "quality_invalid", f"QualityMethod {text!r} is not a quality flag with a method"
            )
            return "V", None
        quality, method = match[1], match[2]
        if quality in ("E", "F", "S") and method is None:
            self._problem(
                lineno, "method_required", f"QualityMethod {text!r}: quality {quality} needs a method"
            )
        if quality in ("A", "N", "V") and method is not None:
            self._problem(
                lineno, "method_forbidden", f"QualityMethod {text!r}: quality {quality} takes no method"
            )
        return quality, method

    def _reason(self, text: str, quality: str, lineno: int, *, where: str) -> int | None:
        if not text:
            if quality in ("S", "F"):
                self._problem(lineno, "reason_required", f"{where}: quality {quality} needs a ReasonCode")
            return None
        if quality == "V":
            self._problem(lineno, "reason_forbidden", f"{where}: ReasonCode must be empty with quality V")
        if not text.isdigit() or not 0 <= int(text) <= 99:
            self._problem(lineno, "reason_invalid", f"{where}: ReasonCode {text!r} is not a code 0-99")
            return None
        return int(text)

    def _interval_event(
        self, f: list[str], lineno: int, day: DayBlock
    ) -> tuple[int, int, str, str | None, int | None] | None:
        if len(f) < 6:
            self._problem(lineno, "missing_fields", f"400 record has {len(f)} fields, expected 6")
            f = f + [""] * (6 - len(f))
        start_text, end_text, qm, reason_text = (x.strip() for x in f[1:5])
        n = len(day.values)
        if not start_text.isdigit() or not end_text.isdigit():
            self._problem(
                lineno, "400_range", f"StartInterval/EndInterval {start_text!r}/{end_text!r} are not numbers"
            )
            return None
        start, end = int(start_text), int(end_text)
        if not 1 <= start <= end <= n:
            self._problem(lineno, "400_range", f"interval range {start}-{end} is outside 1-{n}")
            return None
        if qm.upper().startswith("V"):
            self._problem(lineno, "400_v", "quality V is not allowed in a 400 record")
            return (start, end, "V", None, None)
        quality, method = self._quality(qm, lineno)
        reason = self._reason(reason_text, quality, lineno, where="400")
        return (start, end, quality, method, reason)

    def _finish(self, day: DayBlock, events: list[tuple[int, int, str, str | None, int | None]]) -> DayBlock:
        n = len(day.values)
        if events:
            expected = 1
            for start, end, quality, method, reason in events:
                if start != expected:
                    day.flags.append(self._problem(
                        day.line, "400_coverage",
                        f"400 records for {day.date} must cover 1-{n} in order without gaps or overlaps "
                        f"(found {start}-{end} where {expected} was due)",
                    ).rule)  # fmt: skip
                for i in range(max(start, 1) - 1, min(end, n)):
                    day.qualities[i], day.methods[i], day.reasons[i] = quality, method, reason
                expected = end + 1
            if expected != n + 1 and "400_coverage" not in day.flags:
                day.flags.append(self._problem(
                    day.line, "400_coverage",
                    f"400 records for {day.date} end at interval {expected - 1} of {n}",
                ).rule)  # fmt: skip
        elif day.qualities and day.qualities[0] == "V":
            day.flags.append(self._problem(day.line, "v_without_400", "quality V without 400 records").rule)
        elif day.reasons and day.reasons[0] in _REASONS_NEEDING_400 and day.qualities[0] == "A":
            day.flags.append(self._problem(
                day.line, "400_required", f"quality A with reason {day.reasons[0]} needs 400 records",
            ).rule)  # fmt: skip
        if day.unit is not None:
            key = (day.nmi, day.suffix.upper())
            self._cumulative[key] = self._cumulative.get(key, 0.0) + day.energy_kwh()
        return day

    def _accumulation(self, f: list[str], lineno: int) -> AccumulationRead | None:
        if len(f) < 23:
            self._problem(lineno, "missing_fields", f"250 record has {len(f)} fields, expected 23")
            f = f + [""] * (23 - len(f))
        f = [x.strip() for x in f]
        nmi, config, register_id, suffix, _stream, serial, direction = f[1:8]
        if not nmi or len(nmi) > 10:
            self._problem(lineno, "nmi_invalid", f"NMI {nmi!r} must be 1-10 characters")
        if not config:
            self._problem(lineno, "nmi_config", "NMIConfiguration is empty")
        if direction not in ("E", "I"):
            self._problem(lineno, "direction", f"DirectionIndicator {direction!r} must be E or I")
        uom = f[19]
        if uom.lower() not in _UOMS:
            self._problem(lineno, "uom_unknown", f"UOM {uom!r} is not in the specification's list")

        def number(text: str, name: str, *, signed: bool = False) -> float | None:
            if not text:
                return None
            if signed and text.startswith("-") and _NUMBER_RE.match(text[1:]):
                return float(text)
            if not _NUMBER_RE.match(text):
                self._problem(lineno, "value_format", f"{name} {text!r} is not a non-negative decimal")
                try:
                    return float(text)
                except ValueError:
                    return None
            return float(text)

        def stamp(text: str, name: str) -> int | None:
            if not text:
                return None
            if _DT14_RE.match(text) and _valid_datetime(text):
                return _nem_datetime(text)
            self._problem(lineno, "datetime", f"{name} {text!r} is not DateTime(14)")
            return None

        def quality(qm: str, reason: str) -> tuple[str, str | None, int | None]:
            q, method = self._quality(qm, lineno)
            return q, method, self._reason(reason, q, lineno, where="250")

        previous, current = number(f[8], "PreviousRegisterRead"), number(f[13], "CurrentRegisterRead")
        # A Quantity may be negative: a correction of an earlier read (AEMO's own NEM13 test
        # files book -10 and -120); register reads may not.
        quantity = number(f[18], "Quantity", signed=True)
        norm = normalize_unit(uom) if uom else None
        read = AccumulationRead(
            nmi=nmi, suffix=suffix, uom=uom,
            unit=norm.unit if norm else None, factor=norm.factor if norm else 1.0,
            register_id=register_id, meter_serial=serial, direction=direction,
            previous=previous, previous_ms=stamp(f[9], "PreviousRegisterReadDateTime"),
            previous_quality=quality(f[10], f[11]),
            current=current, current_ms=stamp(f[14], "CurrentRegisterReadDateTime"),
            current_quality=quality(f[15], f[16]),
            quantity=quantity, update_ms=stamp(f[21], "UpdateDateTime"), line=lineno,
        )  # fmt: skip
        if previous is not None and current is not None and quantity is not None and current >= previous:
            rise = current - previous
            if abs(rise - quantity) > max(0.001, 1e-6 * quantity):
                problem = self._problem(
                    lineno,
                    "sum_check",
                    f"register rose {rise:g} but Quantity is {quantity:g}",
                    severity="warning",
                )
                read.flags.append(problem.rule)
        return read

    def _index_read(self, f: list[str], lineno: int, block: dict[str, object]) -> None:
        f = f + [""] * max(0, 6 - len(f))
        trans, _order, read_dt, index_text = (x.strip() for x in f[1:5])
        if trans and trans.upper() not in _TRANS_CODES:
            self._problem(
                lineno, "500_fields", f"TransCode {trans!r} is not one of {''.join(sorted(_TRANS_CODES))}"
            )
        read_ms = None
        if read_dt:
            if _DT14_RE.match(read_dt) and _valid_datetime(read_dt):
                read_ms = _nem_datetime(read_dt)
            else:
                self._problem(lineno, "500_fields", f"ReadDateTime {read_dt!r} is not DateTime(14)")
        index = None
        if index_text:
            try:
                index = float(index_text)
            except ValueError:
                self._problem(lineno, "500_fields", f"IndexRead {index_text!r} is not a number")
        nmi, suffix = str(block["nmi"]), str(block["suffix"])
        self.index_reads.append(IndexRead(nmi, suffix, trans, read_ms, index, lineno))
        key = (nmi, suffix.upper())
        if index is not None and block.get("unit") == "kWh":
            cumulative = self._cumulative.get(key, 0.0)
            previous = self._last_index.get(key)
            if previous is not None:
                register_rise = (index - previous[0]) * float(block["factor"])  # type: ignore[arg-type]
                interval_sum = cumulative - previous[1]
                tolerance = max(0.01, 0.005 * abs(register_rise))
                if abs(register_rise - interval_sum) > tolerance:
                    self._problem(
                        lineno, "sum_check",
                        f"register rose {register_rise:g} kWh since line {previous[2]} but intervals sum to "
                        f"{interval_sum:g} kWh", severity="warning",
                    )  # fmt: skip
            self._last_index[key] = (index, cumulative, lineno)


def _valid_datetime(text: str) -> bool:
    try:
        datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10] or 0), int(text[10:12] or 0),
                 int(text[12:14] or 0))  # fmt: skip
    except ValueError:
        return False
    return True


def _count_values(f: list[str]) -> int:
    """Number of interval values in a 300 record whose length is off: the fields between
    the date and the first QualityMethod-looking field."""
    for i in range(2, len(f)):
        if _QUALITY_RE.match(f[i].strip().upper()):
            return i - 2
    return max(0, len(f) - 7)
