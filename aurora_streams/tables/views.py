"""Tables behind the HTTP views, fed from the output topics (co-partitioned with
``device_state``: a device's days and anomalies live on the worker that owns the device).

* ``device_days``: key ``device|channel|utc_day`` -> :class:`DayRecord` bytes; days older
  than ``AURORA_AGGREGATE_RETENTION_DAYS`` are deleted as new days arrive.
* ``recent_anomalies``: key device -> JSON list of its latest anomaly events (highest
  revision per anomaly id), at most ``AURORA_RECENT_ANOMALIES_PER_DEVICE``.
* ``forecasts``: key ``device|channel`` -> the open window's end, then the online
  forecaster's versioned state (see ``agents.views.encode_forecast_entry`` and
  :mod:`aurora_streams.domain.forecast`).
"""

from __future__ import annotations

from typing import Any

import faust

from aurora_streams.settings import Settings

__all__ = ["define_view_tables"]


def _raw_table(app: faust.App, settings: Settings, name: str, help: str) -> Any:
    changelog = app.topic(
        f"{settings.app_id}-{name}-changelog", key_type=str, value_type=bytes, key_serializer="raw",
        value_serializer="raw", partitions=settings.partitions, compacting=True, deleting=False, acks=False,
        internal=True,
    )  # fmt: skip
    table = app.Table(name, key_type=str, value_type=bytes, partitions=settings.partitions,
                      changelog_topic=changelog, help=help)  # fmt: skip
    table.key_serializer = "raw"  # type: ignore[attr-defined]
    table.value_serializer = "raw"  # type: ignore[attr-defined]
    return table


def define_view_tables(app: faust.App, settings: Settings) -> tuple[Any, Any, Any]:
    days = _raw_table(app, settings, "device_days", "Per device, channel and UTC day: reading slots.")
    recent = _raw_table(app, settings, "recent_anomalies", "Per device: its latest anomaly events.")
    forecasts = _raw_table(app, settings, "forecasts", "Per device|channel: the online forecaster's state.")
    return days, recent, forecasts
