"""The ingest service's job memory: finished jobs are forgotten, oldest first, once too many
are kept or their summaries hold too many problems; spool files no job owns are removed."""

from __future__ import annotations

from pathlib import Path

from aurora_streams.settings import Settings
from aurora_streams.web import ingest
from aurora_streams.web.ingest import IngestService, Job


def _service(tmp_path: Path) -> IngestService:
    return IngestService(None, Settings(datadir=str(tmp_path)))  # type: ignore[arg-type]


def _finished(i: int, problems: int) -> Job:
    job = Job(f"job{i}", "lenient", "f.csv", 1)
    job.summary = {"problems": [{"line": n} for n in range(problems)]}
    job.finished_at = float(i)
    job.status = "done"
    return job


def test_jobs_are_forgotten_by_count_and_by_problems_kept(tmp_path: Path) -> None:
    service = _service(tmp_path)
    running = Job("running", "strict", "r.csv", 1)
    service.jobs["running"] = running  # oldest, but its caller is still polling it
    for i in range(80):
        service.jobs[f"job{i}"] = _finished(i, 1_000)
    service._evict()
    kept = [j for j in service.jobs.values() if j.summary]
    assert sum(len(j.summary["problems"]) for j in kept if j.summary) <= ingest._MAX_KEPT_PROBLEMS
    assert "running" in service.jobs and "job79" in service.jobs and "job0" not in service.jobs
    assert list(service.jobs)[1:] == [f"job{i}" for i in range(30, 80)]  # the newest, in order
    for i in range(80, 80 + ingest._MAX_JOBS + 5):
        service.jobs[f"job{i}"] = _finished(i, 0)
    service._evict()
    assert len(service.jobs) == ingest._MAX_JOBS and "running" in service.jobs


def test_spool_files_no_job_owns_are_removed(tmp_path: Path) -> None:
    service = _service(tmp_path)
    service.uploads.mkdir(parents=True)
    (service.uploads / "lost.nem12").write_bytes(b"x")
    (service.uploads / "live.nem12").write_bytes(b"x")
    (service.uploads / "notes.txt").write_bytes(b"x")
    service.jobs["live"] = Job("live", "strict", "f.csv", 1)
    assert service.remove_leftover_spool() == 1
    assert sorted(p.name for p in service.uploads.iterdir()) == ["live.nem12", "notes.txt"]
