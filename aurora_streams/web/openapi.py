"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

import faust
import orjson
from aiohttp import web

from aurora_streams import __version__

__all__ = ["attach_openapi", "openapi"]


_READINESS: dict[str, Any] = {
    "type": "object",
    "required": ["status", "recovered", "rebalancing", "stalled"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "recovered": {"type": "boolean"},
        "rebalancing": {"type": "boolean"},
        "stalled": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["partition", "lag", "idle_s"],
                "properties": {
                    "partition": {"type": "integer"},
                    "lag": {"type": "integer"},
                    "idle_s": {"type": "number"},
                },
            },
        },
        "reason": {"type": "string"},
    },
}


def _error() -> dict[str, Any]:
    return {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {status: {"description": "ok", "content": {"application/json": {"schema": schema}}}}


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_DEVICE = {
    "name": "device_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:\\-]{0,63}$"},
}
_LIMIT = _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size")
_CURSOR = _q("cursor", {"type": "string"}, "next_cursor of the previous page")
_WINDOW_CURSOR = _q(
    "cursor",
    {"type": "string", "pattern": "^([0-9]{1,15})?$"},
    "next_cursor of the previous page (empty: the first)",
)
_ANOMALY_CURSOR = _q(
    "cursor",
    {"type": "string", "pattern": "^([0-9]{1,15}:.+)?$"},
    "next_cursor of the previous page (empty: the first)",
)
_CHANNEL = {"type": "string", "pattern": "^[A-Za-z0-9]{0,8}$"}
_TIME = {
    "description": "ISO-8601 with offset, or epoch milliseconds",
    "anyOf": [
        {"type": "integer", "minimum": 946684800000, "maximum": 4102444799999},
        {"type": "string", "format": "date-time", "pattern": "^20[0-9]{2}-"},
    ],
}
_ERRORS = {
    "400": _error(),
    "401": _error(),
    "403": _error(),
    "404": _error(),
    "503": {"description": "the owning worker is not available (rebalancing)"},
}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


_READING_PROPS: dict[str, Any] = {
    "device_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:\\-]{0,63}$"},
    "channel": {"type": "string", "pattern": "^[A-Za-z0-9]{1,8}$"},
    "ts": {
        "oneOf": [
            {"type": "integer", "minimum": 946684800000, "maximum": 4102444799999},
            {"type": "string", "format": "date-time"},
        ]
    },
    "kind": {"type": "string", "enum": ["register", "interval"]},
    "value": {
        "type": "number",
        "minimum": -1e15,
        "maximum": 1e15,
        "description": "in its unit; at most 1e12 in magnitude once converted to kWh, kvarh or kVAh",
    },
    "unit": {"type": "string", "enum": ["Wh", "kWh", "MWh", "varh", "kvarh", "Mvarh", "VAh", "kVAh", "MVAh"]},
    "interval_s": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": 31622400,
        "description": "the interval's length; required for interval readings",
    },
    "quality": {"type": "string", "enum": ["A", "E", "F", "S", "N", "V"]},
    "method": {
        "type": ["string", "integer", "null"],
        "description": "the source's method flag (NEM12: 11-19 actual, 51-59 substituted, 71-79 estimated); "
        "kept as given, its first 8 characters",
    },
    "reason_code": {"type": ["integer", "null"], "minimum": 0, "maximum": 999},
    "source": {"type": ["string", "null"], "maxLength": 128},
    "direction": {"type": ["string", "null"], "enum": ["consumption", "generation", None]},
}
_READING_REQUIRED = ["ts", "kind", "value", "unit"]
_READING = {
    "type": "object",
    "required": ["device_id", *_READING_REQUIRED],
    "properties": _READING_PROPS,
    "description": "other fields are ignored, as the worker ignores them on the raw topic",
}
_BATCH = {
    "type": "object",
    "required": ["device_id", "readings"],
    "properties": {
        "device_id": _READING_PROPS["device_id"],
        "source": _READING_PROPS["source"],
        "readings": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "required": _READING_REQUIRED,
                "properties": {k: v for k, v in _READING_PROPS.items() if k != "device_id"},
            },
        },
    },
}


def openapi() -> dict[str, Any]:
    bucket = {
        "type": "object",
        "required": ["start", "end", "sum", "count", "excluded_sum", "excluded_count"],
        "properties": {
            "start": {"type": "string"},
            "end": {"type": "string"},
            "sum": {"type": "number", "description": "validated energy"},
            "count": {"type": "integer"},
            "min": {"type": ["number", "null"]},
            "max": {"type": ["number", "null"]},
            "excluded_sum": {
                "type": "number",
                "description": "energy of readings not validated "
                "(suspicious_jump, future_timestamp, quality_unresolved)",
            },
            "excluded_count": {"type": "integer"},
        },
    }

    def page(item: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["items", "next_cursor"],
            "properties": {
                "items": {"type": "array", "items": item},
                "next_cursor": {"type": ["string", "null"]},
            },
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aurora-streams",
            "version": __version__,
            "description": "Real-time energy meter data: device state, aggregates, anomalies, ingest.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["status", "reason", "message", "request_id"],
                            "properties": {
                                "status": {"type": "integer"},
                                "reason": {"type": "string"},
                                "message": {"type": "string"},
                                "request_id": {"type": "string"},
                                "field": {"type": "string"},
                                "index": {"type": "integer"},
                            },
                        }
                    },
                }
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "process alive", "responses": _ok({"type": "object"})}},
            "/readyz": {
                "get": {
                    "summary": "tables recovered, partitions assigned, input progressing",
                    "responses": {
                        **_ok(_READINESS),
                        "503": {
                            "description": "not ready: recovering, rebalancing or stalled (reason says)",
                            "content": {"application/json": {"schema": _READINESS}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/v1/devices": {
                "get": {
                    "summary": "devices known to the fleet, by id",
                    "security": _SECURED,
                    "parameters": [_LIMIT, _CURSOR],
                    "responses": {
                        **_ok(
                            page(
                                {
                                    "type": "object",
                                    "required": ["device_id"],
                                    "properties": {"device_id": {"type": "string"}},
                                }
                            )
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/v1/devices/{device_id}": {
                "get": {
                    "summary": "a device's state: latest reading per channel",
                    "security": _SECURED,
                    "parameters": [_DEVICE],
                    "responses": {
                        **_ok({"type": "object", "required": ["device_id", "channels"]}),
                        **_ERRORS,
                    },
                }
            },
            "/v1/devices/{device_id}/aggregates": {
                "get": {
                    "summary": "validated consumption per window (sum, count, min, max) over event "
                    "time, with the energy left out (excluded_sum, excluded_count)",
                    "security": _SECURED,
                    "parameters": [
                        _DEVICE,
                        _q("size", {"type": "string", "enum": ["15m", "1h", "1d"]}, "window size"),
                        _q("channel", _CHANNEL, "channel, default E1"),
                        _q("from", _TIME, "start (inclusive)"),
                        _q("to", _TIME, "end (exclusive)"),
                        _LIMIT,
                        _WINDOW_CURSOR,
                    ],
                    "responses": {
                        **_ok(
                            {
                                "type": "object",
                                "required": ["items", "size", "unit"],
                                "properties": {"items": {"type": "array", "items": bucket}},
                            }
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/v1/devices/{device_id}/readings": {
                "get": {
                    "summary": "each reading's delta (latest revision) in a time range, in time order",
                    "security": _SECURED,
                    "parameters": [
                        _DEVICE,
                        _q("channel", _CHANNEL, "channel, default E1"),
                        _q("from", _TIME, "interval end after (exclusive of earlier)"),
                        _q("to", _TIME, "interval end before (exclusive)"),
                    ],
                    "responses": {
                        **_ok(
                            {
                                "type": "object",
                                "required": ["items", "unit", "from", "to"],
                                "properties": {"items": {"type": "array", "items": {"type": "object"}}},
                            }
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/v1/devices/{device_id}/forecast": {
                "get": {
                    "summary": "point forecasts with a 90% band, the model, what it learned, its accuracy",
                    "security": _SECURED,
                    "parameters": [
                        _DEVICE,
                        _q("channel", _CHANNEL, "channel"),
                        _q("horizon", {"type": "integer", "minimum": 1, "maximum": 336}, "windows ahead"),
                    ],
                    "responses": {
                        **_ok(
                            {
                                "type": "object",
                                "required": [
                                    *("status", "model", "member", "learned_windows", "points", "accuracy")
                                ],
                                "properties": {
                                    "status": {"type": "string", "enum": ["ready", "warming_up"]},
                                    "member": {"type": "string", "enum": ["holt_winters", "robust_median"]},
                                    "learned_windows": {"type": "integer", "minimum": 0},
                                    "points": {"type": "array", "items": {"type": "object"}},
                                },
                            }
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/v1/anomalies": {
                "get": {
                    "summary": "recent anomalies, newest first",
                    "security": _SECURED,
                    "parameters": [
                        _q(
                            "device",
                            {"type": "string", "pattern": "^([A-Za-z0-9][A-Za-z0-9._:\\-]{0,63})?$"},
                            "one device (empty: all)",
                        ),
                        _q("type", {"type": "string"}, "type"),
                        _q("since", _TIME, "ts_end at or after"),
                        _LIMIT,
                        _ANOMALY_CURSOR,
                    ],
                    "responses": {**_ok(page({"type": "object"})), **_ERRORS},
                }
            },
            "/v1/fleet/consumption": {
                "get": {
                    "summary": "validated energy per window over the fleet or one site (import_kwh: "
                    "consumption channels, E* or declared; export_kwh: generation, B* or declared), "
                    "with the energy left out as not validated (excluded_kwh)",
                    "security": _SECURED,
                    "parameters": [
                        _q("size", {"type": "string", "enum": ["15m", "1h", "1d"]}, "window size"),
                        {**_q("from", _TIME, "start (inclusive)"), "required": True},
                        {**_q("to", _TIME, "end (exclusive)"), "required": True},
                        _q("site", {"type": "string"}, "one site (AURORA_SITES_FILE)"),
                    ],
                    "responses": {**_ok({"type": "object", "required": ["items"]}), **_ERRORS},
                }
            },
            "/v1/sites": {
                "get": {
                    "summary": "sites and their device counts",
                    "security": _SECURED,
                    "responses": {**_ok(page({"type": "object"})), **_ERRORS},
                }
            },
            "/v1/fleet": {
                "get": {
                    "summary": "fleet summary",
                    "security": _SECURED,
                    "responses": {**_ok({"type": "object"}), **_ERRORS},
                }
            },
            "/v1/ingest/readings": {
                "post": {
                    "summary": "one reading or a gateway batch (JSON)",
                    "security": _SECURED,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"oneOf": [_READING, _BATCH]}}},
                    },
                    "responses": {
                        **_ok({"type": "object"}, "202"),
                        "413": _error(),
                        "415": _error(),
                        "422": _error(),
                        **_ERRORS,
                    },
                }
            },
            "/v1/ingest/nem12": {
                "post": {
                    "summary": "a NEM12/NEM13 file; ingested as a job",
                    "security": _SECURED,
                    "parameters": [
                        _q("mode", {"type": "string", "enum": ["strict", "lenient"]}, "strictness")
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "text/csv": {"schema": {"type": "string", "minLength": 1}},
                            "application/zip": {
                                "schema": {"type": "string", "format": "binary", "minLength": 1}
                            },
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["file"],
                                    "additionalProperties": False,
                                    "description": "the file in its 'file' part, and no other part",
                                    "properties": {
                                        "file": {"type": "string", "format": "binary", "minLength": 1}
                                    },
                                }
                            },
                        },
                    },
                    "responses": {
                        **_ok({"type": "object", "required": ["job_id"]}, "202"),
                        "413": _error(),
                        "415": _error(),
                        **_ERRORS,
                    },
                }
            },
            "/v1/ingest/jobs/{job_id}": {
                "get": {
                    "summary": "an ingest job's progress and summary",
                    "security": _SECURED,
                    "parameters": [
                        {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {**_ok({"type": "object", "required": ["id", "status"]}), **_ERRORS},
                }
            },
        },
    }


def attach_openapi(app: faust.App) -> None:
    document = orjson.dumps(openapi())

    @app.page("/openapi.json")
    class OpenApi(faust.web.View):  # type: ignore[misc]
        async def get(self, request: web.Request) -> web.Response:
            return web.Response(body=document, content_type="application/json")
