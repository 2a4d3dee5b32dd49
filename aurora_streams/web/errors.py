"""JSON error bodies, each with a request id (the caller's X-Request-Id, or a new one)."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

__all__ = ["error_response", "request_id"]


def request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given[:64] if given and given.isprintable() else uuid.uuid4().hex


def error_response(
    request: web.Request, status: int, reason: str, message: str, **extra: Any
) -> web.Response:
    rid = request_id(request)
    body: dict[str, Any] = {"status": status, "reason": reason, "message": message, "request_id": rid}
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"X-Request-Id": rid}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="aurora-streams"'
    return web.json_response({"error": body}, status=status, headers=headers)
