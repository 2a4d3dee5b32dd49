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
