from __future__ import annotations

import logging

import orjson

from aurora_streams.logs import JsonFormatter, logging_config


def test_json_lines_with_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["level"] == "error" and doc["msg"] == "failed here" and "ValueError: boom" in doc["exc"]


def test_text_format_available() -> None:
    assert "format" in logging_config("info", "text")["formatters"]["default"]


TOKEN = "tok-" + "x" * 20


def test_a_token_in_a_library_message_is_redacted() -> None:
    # aiohttp logs the raw header line of a malformed request.
    import sys

    from aurora_streams.logs import RedactSecrets

    line = f"Invalid header value char: b'Authorization: Bearer {TOKEN}\\x00'"
    try:
        raise ValueError(line)
    except ValueError:
        record = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "bad request: %s", (line,), sys.exc_info()
        )
    assert RedactSecrets().filter(record)
    for out in (JsonFormatter().format(record), logging.Formatter().format(record)):
        assert TOKEN not in out and "[redacted]" in out


def test_the_filter_is_on_the_handler_of_every_format() -> None:
    for fmt in ("json", "text"):
        assert logging_config("info", fmt)["handlers"]["stderr"]["filters"] == ["secrets"]
