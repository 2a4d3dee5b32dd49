"""Publishing NEM12 files: what the worker would refuse is refused here, where the file and
line can be named, and never published."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from click.testing import CliRunner

from aurora_streams.cli import main
from aurora_streams.ingest.nem12 import Nem12Error, Nem12Reader
from aurora_streams.ingest.publish import ingest_reader
from aurora_streams.ingest.summary import IngestSummary

DAY = (
    "100,NEM12,200506081149,UNITEDDP,NEMMCO\n"
    "200,{nmi},E1,E1,E1,N1,01009,kWh,30,20050610\n"
    "300,20050301," + ",".join(["0.5"] * 48) + ",A,,,20050310121004,20050310182204\n"
    "900\n"
)


def publish(text: str, mode: str) -> tuple[list[tuple[bytes, bytes]], IngestSummary]:
    sent: list[tuple[bytes, bytes]] = []
    summary = IngestSummary()
    make = functools.partial(lambda m: Nem12Reader.from_bytes(text.encode(), "f.csv", m))
    ingest_reader(make, "f.csv", mode=mode, sink=lambda k, v: sent.append((k, v)), summary=summary)  # type: ignore[arg-type]
    return sent, summary


def test_an_id_the_worker_refuses_is_not_published_in_lenient_mode() -> None:
    # Before: a real file with NMI "(redacted)" was published whole (61,056 readings, exit
    # 0) and the worker dead-lettered all 212 batches.
    sent, summary = publish(DAY.format(nmi="(redacted)"), "lenient")
    assert sent == [] and summary.published_readings == 0 and summary.skipped_readings == 48
    [problem] = [p for p in summary.problems if p.rule == "id_refused"]
    assert problem.line == 3 and "(redacted)" in problem.message  # its first day


def test_an_id_the_worker_refuses_rejects_the_file_in_strict_mode() -> None:
    with pytest.raises(Nem12Error) as info:
        publish(DAY.format(nmi="(redacted)"), "strict")
    assert info.value.problem.rule == "id_refused" and info.value.problem.line == 3


def test_a_good_id_is_published() -> None:
    sent, summary = publish(DAY.format(nmi="NEM1201009"), "strict")
    assert len(sent) == 1 and summary.published_readings == 48


def test_the_cli_exits_non_zero_when_it_refused_channels(tmp_path: Path) -> None:
    f = tmp_path / "day.csv"
    f.write_text(DAY.format(nmi="(redacted)"))
    result = CliRunner().invoke(main, ["ingest", "nem12", "--lenient", "--dry-run", "--no-progress", str(f)])
    assert result.exit_code == 1 and "refused" in result.output


def test_a_lenient_file_with_endless_problems_keeps_the_first_thousand_and_counts_all() -> None:
    """Issue 21: a 2 MB lenient file made 1,000,001 problems, all kept with its job and
    served as one 162 MB document. Now the first 1,000 are kept and every one is counted."""
    bad_days = "".join(f"300,2005{(i % 12) + 1:02d}{(i % 28) + 1:02d},oops\n" for i in range(5_000))
    text = DAY.format(nmi="NMI0000001").replace("900\n", bad_days + "900\n")
    sent, summary = publish(text, "lenient")
    doc = summary.to_dict()
    assert len(sent) == 1 and summary.published_readings == 48  # the good day still goes out
    assert len(doc["problems"]) == 1_000
    assert doc["problems_not_listed"] == summary.problems.total - 1_000 > 0
    assert sum(doc["problem_counts"].values()) == summary.problems.total >= 5_000
    assert doc["problems"][0]["line"] == 4  # the first problems, in file order


def test_the_cli_says_how_many_problems_it_did_not_list(tmp_path: Path) -> None:
    bad_days = "".join(f"300,2005{(i % 12) + 1:02d}{(i % 28) + 1:02d},oops\n" for i in range(1_500))
    path = tmp_path / "bad.csv"
    path.write_text(DAY.format(nmi="NMI0000001").replace("900\n", bad_days + "900\n"))
    out = CliRunner().invoke(main, ["ingest", "nem12", "--lenient", "--dry-run", str(path)])
    assert "more not listed; by rule:" in out.output, out.output
