"""deploy/k8s: every manifest validates offline against the Kubernetes schemas (strict: no
unknown fields), and the things operators rely on are there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VERSION = "1.31.0"


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


@pytest.mark.parametrize(("name", "doc"), documents(), ids=[n for n, _ in documents()])
def test_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_an_invalid_manifest_is_caught() -> None:
    (statefulset,) = by_kind("StatefulSet")
    broken = {**statefulset, "spec": {**statefulset["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_workers_are_a_statefulset_with_a_volume_each_and_probes() -> None:
    (sts,) = by_kind("StatefulSet")
    spec = sts["spec"]
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    (container,) = spec["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == "/var/lib/aurora/data"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["AURORA_WEB_HOST"]["value"] == "$(POD_IP)"
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    refs = {next(iter(r)) + ":" + next(iter(r.values()))["name"] for r in container["envFrom"]}
    assert refs == {"configMapRef:aurora-streams-config", "secretRef:aurora-streams-secrets"}


def test_config_and_secrets_are_kept_apart() -> None:
    (config,) = by_kind("ConfigMap")
    (secret,) = by_kind("Secret")
    secret_like = ("TOKEN", "PASSWORD", "SECRET", "DATABASE_URL")
    assert not [k for k in config["data"] if any(s in k for s in secret_like)]
    assert set(secret["stringData"]) >= {"AURORA_DATABASE_URL", "AURORA_API_TOKENS"}


def test_api_service_selects_the_workers_http_port() -> None:
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    (sts,) = by_kind("StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    jobs = {j["spec"]["template"]["spec"]["containers"][0]["args"][0] for j in by_kind("Job")}
    assert jobs == {"topics", "db"}
