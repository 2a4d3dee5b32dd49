"""Writes deploy/grafana/dashboards/aurora-streams.json (the Grafana dashboard) from the
panel list below, so the JSON stays consistent (ids, grid positions, datasources).

    .venv/bin/python deploy/tools/make_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "grafana" / "dashboards" / "aurora-streams.json"
PROM = {"type": "prometheus", "uid": "prometheus"}
API = {"type": "yesoreyeram-infinity-datasource", "uid": "aurora-api"}

# (title, unit, [(legend, PromQL)])
TIMESERIES: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Readings processed / s",
        "reqps",
        [("{{outcome}}", "sum by (outcome) (rate(aurora_readings_processed_total[1m]))")],
    ),
    (
        "Records produced / s",
        "reqps",
        [("{{topic}}", "sum by (topic) (rate(aurora_records_produced_total[1m]))")],
    ),
    (
        "End-to-end latency (raw broker timestamp to outputs delivered)",
        "s",
        [
            (
                "p50",
                "histogram_quantile(0.5, sum by (le) (rate(aurora_record_e2e_latency_seconds_bucket[5m])))",
            ),
            (
                "p99",
                "histogram_quantile(0.99, sum by (le) (rate(aurora_record_e2e_latency_seconds_bucket[5m])))",
            ),
        ],
    ),
    ("Consumer lag (messages)", "short", [("{{topic}}", "sum by (topic) (aurora_consumer_lag)")]),
    (
        "Seconds since last offset commit",
        "s",
        [("{{topic}}[{{partition}}]", "time() - aurora_last_commit_timestamp_seconds")],
    ),
    (
        "Dead letters / s by reason",
        "reqps",
        [("{{reason}}", "sum by (reason) (rate(aurora_dlq_records_total[5m]))")],
    ),
    (
        "Anomaly events / s",
        "reqps",
        [("anomalies", 'sum(rate(aurora_records_produced_total{topic=~".*anomalies"}[5m]))')],
    ),
    (
        "Sink rows / s by table",
        "reqps",
        [("{{table}}", "sum by (table) (rate(aurora_sink_rows_written_total[1m]))")],
    ),
    (
        "Sink retries and rejected rows",
        "short",
        [
            ("retries", "sum(increase(aurora_sink_retries_total[5m]))"),
            ("rejected", "sum(increase(aurora_sink_rejected_total[5m]))"),
        ],
    ),
    ("Sink lag", "s", [("{{instance}}", "aurora_sink_lag_seconds")]),
    (
        "Batch duration p99",
        "s",
        [("p99", "histogram_quantile(0.99, sum by (le) (rate(aurora_batch_duration_seconds_bucket[5m])))")],
    ),
    (
        "Checkpoints: stored p99, sealed p99 (the agent's pause)",
        "s",
        [
            (
                "stored p99",
                "histogram_quantile(0.99, sum by (le) (rate(aurora_checkpoint_duration_seconds_bucket[5m])))",
            ),
            (
                "sealed p99",
                "histogram_quantile(0.99, sum by (le) "
                "(rate(aurora_checkpoint_seal_duration_seconds_bucket[5m])))",
            ),
        ],
    ),
    ("State: table keys and data dir", "short", [("{{table}}", "sum by (table) (aurora_table_keys)")]),
    ("Data dir bytes", "bytes", [("{{instance}}", "aurora_state_dir_bytes")]),
    (
        "Rebalances and recovery",
        "short",
        [
            ("rebalances", "sum(increase(aurora_rebalances_total[15m]))"),
            ("recovering workers", "sum(aurora_recovery_in_progress)"),
        ],
    ),
]


def timeseries(i: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": PROM,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(65 + j), "datasource": PROM, "expr": expr, "legendFormat": legend}
            for j, (legend, expr) in enumerate(targets)
        ],
    }


def drill_down(i: int) -> dict[str, Any]:
    y = 8 * ((len(TIMESERIES) + 1) // 2)
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": "Device $device: 15-minute energy (from the aurora-streams HTTP API)",
        "datasource": API,
        "gridPos": {"h": 9, "w": 24, "x": 0, "y": y},
        "fieldConfig": {"defaults": {"unit": "kwatth"}, "overrides": []},
        "targets": [
            {
                "refId": "A",
                "datasource": API,
                "type": "json",
                "source": "url",
                "format": "timeseries",
                "url": "/v1/devices/$device/aggregates",
                "url_options": {
                    "method": "GET",
                    "params": [
                        {"key": "size", "value": "15m"},
                        {"key": "from", "value": "${__from:date:iso}"},
                        {"key": "to", "value": "${__to:date:iso}"},
                    ],
                },
                "root_selector": "items",
                "columns": [
                    {"selector": "start", "text": "time", "type": "timestamp"},
                    {"selector": "sum", "text": "kWh", "type": "number"},
                ],
            }
        ],
    }


def main() -> None:
    panels = [timeseries(i, *spec) for i, spec in enumerate(TIMESERIES)]
    panels.append(drill_down(len(panels)))
    dashboard = {
        "uid": "aurora-streams",
        "title": "aurora-streams",
        "tags": ["aurora-streams", "kafka", "meters"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "device",
                    "label": "Device",
                    "type": "textbox",
                    "query": "meter-000001",
                    "current": {"text": "meter-000001", "value": "meter-000001"},
                }
            ]
        },
        "panels": panels,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dashboard, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
