"""HTTP ingest on a real worker: NEM12 upload jobs, JSON readings, auth and bad input."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aurora_streams.codecs import decode_output
from tests.integration.harness import REPO, Deployment, Worker, end_offsets

DATA = REPO.parent / "shared" / "data" / "nem12"
INGEST, READ = "i" * 24, "r" * 24


@pytest.fixture(scope="module")
def shared(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, Worker]]:
    """One deployment and worker for the module (starting a worker costs seconds)."""
    dep = Deployment(broker, tmp_path_factory.mktemp("http"))
    dep.create_topics()
    dep.extra_env["AURORA_API_TOKENS"] = json.dumps(
        {"loader": {"token": INGEST, "roles": ["ingest"]}, "viewer": {"token": READ, "roles": ["read"]}}
    )
    dep.extra_env["AURORA_MAX_UPLOAD_BYTES"] = str(2 * 1024 * 1024)
    dep.extra_env["AURORA_MAX_JSON_BYTES"] = "4096"
    w = dep.start_worker("http")
    w.wait_ready()
    try:
        yield dep, w
    finally:
        dep.stop_all()


@pytest.fixture
def deployment(shared: tuple[Deployment, Worker]) -> Deployment:
    return shared[0]


@pytest.fixture
def worker(shared: tuple[Deployment, Worker]) -> Worker:
    return shared[1]


def raw_count(dep: Deployment) -> int:
    return sum(end_offsets(dep, dep.settings.topic_raw).values())


def call(
    w: Worker,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    token: str | None = INGEST,
    ctype: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{w.port}{path}", data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if ctype:
        req.add_header("Content-Type", ctype)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def wait_job(w: Worker, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, job = call(w, "GET", f"/v1/ingest/jobs/{job_id}", token=READ, ctype=None)
        assert status == 200
        if job["status"] not in ("queued", "running"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise TimeoutError(job_id)


def reading(**kw: Any) -> dict[str, Any]:
    return {"device_id": "m1", "ts": "2025-01-01T00:30:00+10:00", "kind": "interval", "value": 0.5,
            "unit": "kWh", "interval_s": 1800, **kw}  # fmt: skip


@pytest.mark.skipif(not DATA.exists(), reason="the shared NEM12 corpus is missing")
def test_nem12_upload_job_publishes_and_reports(deployment: Deployment, worker: Worker) -> None:
    path = DATA / "nem-reader" / "unzipped" / "Example_NEM12_multiple_meters.csv"
    status, body = call(worker, "POST", "/v1/ingest/nem12?mode=lenient", path.read_bytes(), ctype="text/csv",
                        headers={"X-Filename": path.name})  # fmt: skip
    assert status == 202 and body["status_url"].endswith(body["job_id"])
    job = wait_job(worker, body["job_id"])
    assert job["status"] == "done", job
    summary = job["summary"]
    assert summary["nmis"] == ["NCDE001111", "NDDD001888"] and summary["messages"] > 0
    assert job["progress"]["bytes_read"] == job["progress"]["bytes_total"] == path.stat().st_size
    raw = deployment.read(deployment.settings.topic_raw, until=lambda r: len(r) >= summary["messages"])
    assert {b"NCDE001111", b"NDDD001888"} <= {r.key for r in raw}


@pytest.mark.skipif(not DATA.exists(), reason="the shared NEM12 corpus is missing")
def test_multipart_upload_and_strict_rejection_publishes_nothing(
    deployment: Deployment, worker: Worker
) -> None:
    bad = (DATA / "nem-reader" / "invalid" / "Example_NEM12_30min_200_15min_300.csv").read_bytes()
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="bad.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    )
    body = head.encode() + bad + f"\r\n--{boundary}--\r\n".encode()
    before = raw_count(deployment)
    ctype = f"multipart/form-data; boundary={boundary}"
    status, accepted = call(worker, "POST", "/v1/ingest/nem12", body, ctype=ctype)
    assert status == 202
    job = wait_job(worker, accepted["job_id"])
    assert job["status"] == "rejected" and job["filename"] == "bad.csv"
    assert job["error"].startswith("bad.csv:3: value_count:")
    assert job["summary"]["messages"] == 0
    assert raw_count(deployment) == before


def test_json_readings_are_validated_and_published(deployment: Deployment, worker: Worker) -> None:
    status, body = call(worker, "POST", "/v1/ingest/readings", orjson.dumps(reading()))
    assert status == 202 and body == {"accepted": 1, "device_id": "m1"}
    batch = {"device_id": "m2", "readings": [reading(device_id=None, ts="2025-01-01T01:00:00+10:00")]}
    batch["readings"][0].pop("device_id")
    assert call(worker, "POST", "/v1/ingest/readings", orjson.dumps(batch))[0] == 202
    s = deployment.settings
    wanted = {"m1", "m2"}

    def arrived(records: list[Any]) -> bool:
        return wanted <= {decode_output(r.value)["device_id"] for r in records if r.value}

    deployment.read(s.topic_normalized, until=arrived)


@pytest.mark.parametrize(("body", "ctype", "status", "reason", "field"), [
    (b"{}", "text/plain", 415, "unsupported_media_type", None),
    (b'{"device_id": ', "application/json", 400, "invalid_json", None),
    (orjson.dumps({"device_id": "m1", "kind": "interval"}), "application/json", 422, "missing_field", "ts"),
    (orjson.dumps(reading(value="lots")), "application/json", 422, "invalid_type", "value"),
    (orjson.dumps(reading(unit="furlong")), "application/json", 422, "unknown_unit", "unit"),
    (orjson.dumps({"device_id": "m1", "readings": [reading(), reading(device_id="m9")]}), "application/json",
     422, "device_mismatch", "device_id"),
    (orjson.dumps(reading(source="x" * 5000)), "application/json", 413, "too_large", None),
])  # fmt: skip
def test_bad_json_input_gets_a_4xx_with_a_reason(
    deployment: Deployment,
    worker: Worker,
    body: bytes,
    ctype: str,
    status: int,
    reason: str,
    field: str | None,
) -> None:
    before = raw_count(deployment)
    got_status, got = call(worker, "POST", "/v1/ingest/readings", body, ctype=ctype)
    assert got_status == status
    error = got["error"]
    assert error["reason"] == reason and error["request_id"] and error["message"]
    assert error.get("field") == field
    # Nothing half-ingested.
    assert raw_count(deployment) == before


def test_bad_uploads(worker: Worker) -> None:
    assert call(worker, "POST", "/v1/ingest/nem12", b"x" * (3 * 1024 * 1024), ctype="text/csv")[0] == 413
    assert (
        call(worker, "POST", "/v1/ingest/nem12", b"", ctype="text/csv")[1]["error"]["reason"] == "empty_body"
    )
    assert call(worker, "POST", "/v1/ingest/nem12", b"{}", ctype="application/json")[0] == 415
    assert call(worker, "POST", "/v1/ingest/nem12?mode=sloppy", b"100", ctype="text/csv")[0] == 400
    assert call(worker, "GET", "/v1/ingest/jobs/nope", ctype=None)[0] == 404
    other = b"--b\r\nContent-Disposition: form-data; name=other\r\n\r\nx\r\n--b--\r\n"
    status, err = call(worker, "POST", "/v1/ingest/nem12", other, ctype="multipart/form-data; boundary=b")
    assert status == 400 and err["error"]["reason"] == "unexpected_part"
    status, err = call(
        worker, "POST", "/v1/ingest/nem12", b"--b--\r\n", ctype="multipart/form-data; boundary=b"
    )
    assert status == 400 and err["error"]["reason"] == "missing_file"
    # No refused upload leaves its spool file behind (the 415 and missing_file paths did).
    spool = Path(worker.env["AURORA_DATADIR"]) / "uploads"
    assert not list(spool.glob("*.nem12"))


def test_a_restarted_worker_removes_the_spool_files_of_jobs_it_lost(broker: str, tmp_path: Path) -> None:
    dep = Deployment(broker, tmp_path)  # its own group: the module's worker sees no rebalance
    dep.create_topics()
    datadir = tmp_path / "data-spool"
    spool = datadir / "uploads"
    spool.mkdir(parents=True)
    (spool / f"{uuid.uuid4().hex}.nem12").write_bytes(b"100,NEM12,")  # a killed job's upload
    w = dep.start_worker("spool", datadir=datadir)
    try:
        w.wait_ready()
        deadline = time.monotonic() + 10
        while list(spool.glob("*.nem12")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not list(spool.glob("*.nem12"))
    finally:
        dep.stop_all()


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/ingest/nem12"), ("POST", "/v1/ingest/readings"), ("GET", "/v1/ingest/jobs/x"),
])  # fmt: skip
def test_auth_missing_bad_and_wrong_role(worker: Worker, method: str, path: str) -> None:
    body = None if method == "GET" else b"{}"
    status, err = call(worker, method, path, body, token=None)
    assert status == 401 and err["error"]["reason"] == "missing_token"
    assert call(worker, method, path, body, token="not-a-valid-token-at-all")[0] == 401
    if method == "POST":  # readers cannot ingest
        status, err = call(worker, method, path, body, token=READ)
        assert status == 403 and err["error"]["reason"] == "forbidden"
    assert INGEST not in Path(worker.log_path).read_text() and READ not in Path(worker.log_path).read_text()
