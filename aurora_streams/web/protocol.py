"""Error pages for requests aiohttp cannot parse (a malformed request line or header).

aiohttp answers those itself, before any view runs, with the parser's message as a
``text/plain`` body, and that message quotes the offending bytes: an ``Authorization``
header with a NUL after its token was echoed back whole in the 400. aiohttp has
no hook for these pages, so :func:`install` wraps its ``RequestHandler.handle_error`` once
per process: a 4xx becomes this API's JSON error (``bad_http_request``) that names the
problem's kind and quotes nothing; a 5xx is left to aiohttp (it quotes nothing). The log
line aiohttp writes is kept; the log filter (``aurora_streams.logs.RedactSecrets``) redacts
it.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web, web_protocol

__all__ = ["install", "malformed_request_response"]

_INSTALLED = "_aurora_safe_errors"


def malformed_request_response(status: int, exc: BaseException | None) -> web.Response:
    """The JSON error for a request aiohttp could not parse: the exception's class, never
    its message (which quotes the request's bytes)."""
    kind = type(exc).__name__ if exc is not None else "HttpProcessingError"
    body = {
        "error": {
            "status": status,
            "reason": "bad_http_request",
            "message": f"the request could not be parsed as HTTP ({kind}); its bytes are not repeated here",
            "request_id": uuid.uuid4().hex,
        }
    }
    response = web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
    response.force_close()
    return response


def install() -> None:
    """Wrap aiohttp's error pages for unparsable requests (idempotent)."""
    handler_class: Any = web_protocol.RequestHandler
    if getattr(handler_class, _INSTALLED, False):
        return
    original = handler_class.handle_error

    def handle_error(
        self: Any,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response: web.StreamResponse = original(self, request, status, exc, message)
        if 400 <= status < 500:
            return malformed_request_response(status, exc)
        return response

    handler_class.handle_error = handle_error
    setattr(handler_class, _INSTALLED, True)
