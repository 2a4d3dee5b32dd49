"""Prometheus rules and the Grafana dashboard: every expression parses as PromQL (no
promtool here: the promql-parser package), and every metric they use is one the worker
exports, so a renamed metric cannot silently blind an alert."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

from aurora_streams import metrics, observability  # noqa: F401  (they register the metrics)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b(aurora_[a-z0-9_]+)\b")
# Exported at scrape time by the worker's collector (observability.py), not in REGISTRY here.
COLLECTED = {
    "aurora_consumer_lag",
    "aurora_last_commit_timestamp_seconds",
    "aurora_table_keys",
    "aurora_state_dir_bytes",
    "aurora_state_memory_bytes",
    "aurora_state_memory_budget_bytes",
    "aurora_malloc_in_use_bytes",
    "aurora_malloc_free_bytes",
    "aurora_python_allocated_blocks",
    "aurora_recovery_in_progress",
}


def exported() -> set[str]:
    names = set(COLLECTED)
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    # Histograms export _bucket/_sum/_count, counters _total: families are named without them.
    return names | {n + suffix for n in names for suffix in ("_bucket", "_sum", "_count", "_total")}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("rule", rules(), ids=[r["alert"] for r in rules()])
def test_alert_rule_is_complete_and_uses_exported_metrics(rule: dict[str, Any]) -> None:
    promql_parser.parse(rule["expr"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and re.fullmatch(r"\d+[smh]", rule["for"])
    used = set(METRIC.findall(rule["expr"]))
    assert used and used <= exported(), used - exported()


def test_the_issue_asks_for_these_alerts() -> None:
    names = {r["alert"] for r in rules()}
    assert names >= {
        "AuroraConsumerLagGrowing",
        "AuroraOffsetsNotCommitting",
        "AuroraDeadLettersHigh",
        "AuroraSinkRetrying",
        "AuroraAnomalyRateSurge",
        "AuroraRecoveryTooLong",
    }


def test_a_broken_expression_is_caught() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(aurora_dlq_records_total[5m])")


def test_dashboard_panels_query_exported_metrics_and_provisioned_sources() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "aurora-streams.json").read_text())
    provisioning = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    sources = yaml.safe_load(provisioning.read_text())
    uids = {d["uid"] for d in sources["datasources"]}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("readings processed", "latency", "lag", "dead letters", "anomal", "sink", "device"):
        assert topic in titles
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids
        for target in panel["targets"]:
            if "expr" in target:
                promql_parser.parse(target["expr"])
                used = set(METRIC.findall(target["expr"]))
                assert used and used <= exported(), used - exported()
            else:  # the drill-down: our own HTTP API
                assert target["url"].startswith("/v1/devices/$device/")


def test_scrape_configs_point_at_metrics() -> None:
    for name in ("prometheus.yml", "prometheus-compose.yml"):
        doc = yaml.safe_load((DEPLOY / "prometheus" / name).read_text())
        (job,) = doc["scrape_configs"]
        assert job["metrics_path"] == "/metrics" and doc["rule_files"]
