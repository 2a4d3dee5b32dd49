"""Requests aiohttp cannot parse get this API's JSON error, and never their own bytes back."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from aurora_streams.web.protocol import install

TOKEN = "s3cr3t-token-abcdefghijklmnop"


async def _raw(server: TestServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def test_a_malformed_header_is_a_json_400_that_does_not_echo_it() -> None:
    install()
    install()  # idempotent
    app = web.Application()

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    async with TestServer(app) as server:
        status, headers, body = await _raw(
            server, b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\x00\r\n\r\n"
        )
        assert status == 400
        assert headers["content-type"].startswith("application/json")
        assert TOKEN.encode() not in body
        error = orjson.loads(body)["error"]
        assert error["status"] == 400 and error["reason"] == "bad_http_request"
        # A request line that is not HTTP at all: the same error, nothing echoed.
        status, _, body = await _raw(server, b"GET /" + TOKEN.encode() + b" \x01BAD\r\n\r\n")
        assert 400 <= status < 500 and TOKEN.encode() not in body
        # A good request on a new connection is untouched.
        status, _, body = await _raw(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200 and body == b"ok"
