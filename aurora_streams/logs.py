"""Structured logs: one JSON object per line on stderr (``AURORA_LOG_FORMAT=json``, the
default) or classic text. Messages never carry secrets or raw payloads."""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["JsonFormatter", "RedactSecrets", "logging_config", "redact", "setup_logging"]

_SECRETS = re.compile(r"(?i)(bearer\s+|authorization:\s*(?!bearer))[^\s'\"\\]+")


def redact(text: str) -> str:
    """``text`` with bearer tokens and Authorization header values replaced."""
    return _SECRETS.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    """Redacts bearer tokens from every record, its arguments and its traceback. Our own
    messages never carry one, but a library's can: on a malformed header aiohttp logged the
    raw header line, and a token followed by a NUL reached the log in full 306 times."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "earer" in message or "uthorization" in message:
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": os.getpid(),
        }
        if record.exc_text:
            doc["exc"] = record.exc_text
        elif record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` document (also handed to the Faust worker)."""
    formatter: dict[str, Any] = (
        {"()": "aurora_streams.logs.JsonFormatter"}
        if fmt == "json"
        else {"format": "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"secrets": {"()": "aurora_streams.logs.RedactSecrets"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
                "filters": ["secrets"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
    }


def setup_logging(level: str, fmt: str) -> None:
    import logging.config

    logging.config.dictConfig(logging_config(level, fmt))
