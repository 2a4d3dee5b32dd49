"""HTTP ingest: NEM12 uploads (as jobs) and JSON readings, onto ``meter.readings.raw``.

* ``POST /v1/ingest/nem12[?mode=strict|lenient]`` (role ``ingest``): the file as the raw body
  (text/csv, text/plain, application/octet-stream, application/zip) or as the ``file`` part
  of multipart/form-data. Answers 202 with a job id; the file is spooled to the data dir and
  ingested in a thread (strict mode validates the whole file before publishing anything).
* ``GET /v1/ingest/jobs/{id}`` (role ``ingest`` or ``read``): status, progress and, when
  done, the summary with every problem (file, line, rule).
* ``POST /v1/ingest/readings`` (role ``ingest``): one reading or a gateway batch as JSON,
  validated with the worker's own rules. All or nothing: any bad reading answers 422 naming
  the field (and index); otherwise the message is produced, its delivery awaited, and 202.

Every error is JSON with a reason code and a request id; nothing is half-ingested without
a report.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import aiohttp.http_exceptions
import faust
import orjson
from aiohttp import web

from aurora_streams.domain.validate import validate_message
from aurora_streams.errors import DeliveryFailed, InvalidReading, UploadTooLarge
from aurora_streams.ingest.nem12 import Nem12Error
from aurora_streams.ingest.publish import ingest_reader, open_reader
from aurora_streams.ingest.summary import IngestSummary
from aurora_streams.kafka.producer import RecordProducer
from aurora_streams.settings import Role, Settings
from aurora_streams.web.auth import authenticator
from aurora_streams.web.errors import error_response, request_id

__all__ = ["attach_ingest"]

log = logging.getLogger(__name__)

_FILE_TYPES: Final = frozenset(
    {"text/csv", "text/plain", "application/octet-stream", "application/zip", "application/x-zip-compressed"}
)
_CHUNK: Final = 256 * 1024
_MAX_JOBS: Final = 1000
_MAX_KEPT_PROBLEMS: Final = 50_000
"""Problems kept over all jobs' summaries (each keeps at most ``MAX_PROBLEMS_KEPT``): a few
hundred bytes each, so the jobs' reports stay within some tens of MB."""


@dataclass
class Job:
    id: str
    mode: str
    filename: str
    bytes_total: int
    status: str = "queued"
    bytes_read: int = 0
    summary: dict[str, Any] | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "mode": self.mode,
            "filename": self.filename,
            "progress": {"bytes_read": self.bytes_read, "bytes_total": self.bytes_total},
            "summary": self.summary,
            "error": self.error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


async def _read_limited(stream: Any, limit: int, out: Any) -> int:
    size = 0
    while True:
        chunk = (
            await stream.read_chunk(_CHUNK) if hasattr(stream, "read_chunk") else await stream.read(_CHUNK)
        )
        if not chunk:
            return size
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge
        out.write(chunk)


class IngestService:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.auth = authenticator(settings)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.uploads = Path(settings.datadir) / "uploads"

    # -- helpers --------------------------------------------------------------------------

    def remove_leftover_spool(self) -> int:
        """Delete spool files no job owns: jobs live in memory, so after a restart every
        file in the spool dir is a killed job's or a killed upload's. Returns how many."""
        removed = 0
        if self.uploads.is_dir():
            for path in self.uploads.glob("*.nem12"):
                if path.stem not in self.jobs:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def _evict(self) -> None:
        """Forget the oldest finished jobs while more than ``_MAX_JOBS`` are kept or their
        summaries hold more than ``_MAX_KEPT_PROBLEMS`` problems; a job still queued or
        running is never forgotten (its caller is polling it)."""

        def kept(job: Job) -> int:
            return len(job.summary.get("problems", ())) if job.summary else 0

        total = sum(kept(j) for j in self.jobs.values())
        for job_id in list(self.jobs):
            if len(self.jobs) <= _MAX_JOBS and total <= _MAX_KEPT_PROBLEMS:
                break
            job = self.jobs[job_id]
            if job.finished_at is None:
                continue
            total -= kept(job)
            del self.jobs[job_id]

    def _deny(self, request: web.Request, *roles: Role) -> web.Response | None:
        header = request.headers.get("Authorization")
        results = [self.auth.authorize(header, role) for role in roles]
        if any(r.ok for r in results):
            return None
        worst = results[0]
        return error_response(request, worst.status, worst.reason, worst.message)

    # -- NEM12 uploads --------------------------------------------------------------------

    async def upload_nem12(self, request: web.Request) -> web.Response:
        denied = self._deny(request, "ingest")
        if denied:
            return denied
        mode = request.query.get("mode", "strict")
        if mode not in ("strict", "lenient"):
            return error_response(
                request, 400, "invalid_mode", "mode must be 'strict' or 'lenient'", field="mode"
            )
        limit = self.settings.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            return error_response(request, 413, "too_large", f"upload exceeds {limit} bytes")
        ctype = request.content_type
        job_id = uuid.uuid4().hex
        self.uploads.mkdir(parents=True, exist_ok=True)
        path = self.uploads / f"{job_id}.nem12"
        filename = "upload.csv"
        spooled = False  # the spool file is removed on every path but a job's start
        try:
            with open(path, "wb") as out:
                if ctype == "multipart/form-data":
                    reader = await request.multipart()
                    part = await reader.next()
                    size = -1
                    while part is not None:
                        name = getattr(part, "name", None)
                        if name != "file" or size >= 0:
                            # One 'file' part and nothing else: a part we would ignore is
                            # more likely the caller's mistake than something to drop.
                            return error_response(
                                request, 400, "unexpected_part",
                                "a multipart upload holds one 'file' part and no other", field="file",
                            )  # fmt: skip
                        filename = getattr(part, "filename", None) or filename
                        size = await _read_limited(part, limit, out)
                        part = await reader.next()
                    if size < 0:
                        return error_response(
                            request, 400, "missing_file", "multipart body has no 'file' part", field="file"
                        )
                elif ctype in _FILE_TYPES:
                    filename = request.headers.get("X-Filename", filename)
                    size = await _read_limited(request.content, limit, out)
                else:
                    return error_response(
                        request,
                        415,
                        "unsupported_media_type",
                        f"content type {ctype!r}; send text/csv, application/zip or multipart/form-data",
                    )
            if size == 0:
                return error_response(request, 400, "empty_body", "the upload is empty")
            job = Job(job_id, mode, Path(filename).name[:200], size)
            self.jobs[job_id] = job
            self._evict()
            asyncio.get_running_loop().run_in_executor(None, self._run_job, job, path)
            spooled = True
        except UploadTooLarge:
            return error_response(request, 413, "too_large", f"upload exceeds {limit} bytes")
        except (ValueError, aiohttp.ClientPayloadError, aiohttp.http_exceptions.HttpProcessingError) as exc:
            # Malformed multipart framing or part headers: the caller's fault, not ours.
            return error_response(request, 400, "invalid_multipart", f"cannot read the upload: {exc}"[:300])
        finally:
            if not spooled:
                path.unlink(missing_ok=True)
        rid = request_id(request)
        body = {"job_id": job_id, "status": job.status, "status_url": f"/v1/ingest/jobs/{job_id}"}
        return web.json_response(body, status=202, headers={"X-Request-Id": rid})

    def _run_job(self, job: Job, path: Path) -> None:
        job.status = "running"
        summary = IngestSummary()
        # A producer of its own: its failures are this job's alone.
        producer = RecordProducer(self.settings.bootstrap_servers, linger_ms=20)

        def send(key: bytes, value: bytes) -> None:
            producer.produce(self.settings.topic_raw, key, value)
            producer.poll(0)

        def progress(n: int) -> None:
            job.bytes_read += n

        status, error = "failed", None
        try:
            ingest_reader(
                functools.partial(open_reader, path, max_expanded_bytes=self.settings.max_expanded_bytes),
                job.filename,
                mode=job.mode,  # type: ignore[arg-type]
                sink=send,
                summary=summary,
                progress=progress,
            )
            producer.flush(60)
            status = "done"
        except DeliveryFailed as exc:
            error = str(exc)
        except Nem12Error as exc:
            status, error = "rejected", str(exc).replace(path.name, job.filename)
            summary.problems.append(exc.problem)
        except Exception as exc:  # never lose the report of a failed job
            log.exception("ingest job %s failed", job.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            # This runs in a thread while the job is polled: the final status is set last,
            # so a caller who sees it also sees the summary (a test once read a rejected
            # job without one), and set even if what comes before it fails.
            try:
                job.summary = summary.to_dict()
                job.finished_at = time.time()
                path.unlink(missing_ok=True)
            finally:
                job.error = error
                job.status = status

    async def get_job(self, request: web.Request, job_id: str) -> web.Response:
        denied = self._deny(request, "ingest", "read")
        if denied:
            return denied
        job = self.jobs.get(job_id)
        if job is None:
            return error_response(request, 404, "unknown_job", f"no job {job_id[:64]!r}")
        return web.json_response(job.to_dict())

    # -- JSON readings --------------------------------------------------------------------

    async def post_readings(self, request: web.Request) -> web.Response:
        denied = self._deny(request, "ingest")
        if denied:
            return denied
        if request.content_type != "application/json":
            return error_response(
                request,
                415,
                "unsupported_media_type",
                f"content type {request.content_type!r}; send application/json",
            )
        limit = self.settings.max_json_bytes
        if request.content_length is not None and request.content_length > limit:
            return error_response(request, 413, "too_large", f"body exceeds {limit} bytes")
        buf = bytearray()
        try:
            while chunk := await request.content.read(_CHUNK):
                buf += chunk
                if len(buf) > limit:
                    raise UploadTooLarge
        except UploadTooLarge:
            return error_response(request, 413, "too_large", f"body exceeds {limit} bytes")
        try:
            payload = orjson.loads(buf)
        except orjson.JSONDecodeError as exc:
            return error_response(request, 400, "invalid_json", f"not valid JSON: {exc}"[:300])
        now = int(time.time() * 1000)
        try:
            items = validate_message(payload, key=None, broker_ts_ms=now, policy=self.settings.policy)
        except InvalidReading as exc:
            return error_response(request, 422, exc.reason, exc.message, field=exc.field, index=exc.index)
        bad = [i for i in items if isinstance(i, InvalidReading)]
        if bad:
            first = bad[0]
            return error_response(
                request,
                422,
                first.reason,
                first.message,
                field=first.field,
                index=first.index,
                errors=len(bad),
            )
        assert isinstance(payload, dict)
        device = str(payload["device_id"]).encode()
        fut = await self.app.producer.send(self.settings.topic_raw, device, bytes(buf), None, None, None)
        try:
            await asyncio.wait_for(fut, 30)
        except Exception as exc:
            return error_response(
                request, 503, "not_delivered", f"the broker did not take the message: {exc}"
            )
        return web.json_response(
            {"accepted": len(items), "device_id": payload["device_id"]},
            status=202,
            headers={"X-Request-Id": request_id(request)},
        )


def attach_ingest(app: faust.App, settings: Settings) -> IngestService:
    service = IngestService(app, settings)

    @app.task  # type: ignore[untyped-decorator]
    async def _remove_leftover_spool() -> None:
        # At the worker's start only: another command on this data dir must not remove a
        # running worker's spooled uploads.
        removed = service.remove_leftover_spool()
        if removed:
            log.info("removed %d spooled uploads of jobs that did not survive a restart", removed)

    @app.page("/v1/ingest/nem12")
    class Nem12Upload(faust.web.View):  # type: ignore[misc]
        async def post(self, request: web.Request) -> web.Response:
            return await service.upload_nem12(request)

    @app.page("/v1/ingest/jobs/{job_id}")
    class IngestJob(faust.web.View):  # type: ignore[misc]
        async def get(self, request: web.Request, job_id: str) -> web.Response:
            return await service.get_job(request, job_id)

    @app.page("/v1/ingest/readings")
    class Readings(faust.web.View):  # type: ignore[misc]
        async def post(self, request: web.Request) -> web.Response:
            return await service.post_readings(request)

    return service
