"""The embedded broker's configuration (no broker is started here; the integration suite
runs on one)."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from aurora_streams.devbroker import BrokerConfig, _cluster_id, check_java, kafka_cache_dir
from aurora_streams.errors import BrokerError
from aurora_streams.settings import load_settings


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_server_properties_are_a_single_kraft_node_with_bounded_retention(tmp_path: Path) -> None:
    cfg = BrokerConfig("127.0.0.1", 19092, tmp_path, retention_hours=24, retention_bytes=64 << 20)
    props = _props(cfg.server_properties(controller_port=19093))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str((tmp_path / "kraft-logs").resolve())
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.retention.hours"] == "24"
    assert props["log.retention.bytes"] == str(64 << 20)
    assert int(props["log.segment.bytes"]) <= int(props["log.retention.bytes"])


def test_settings_place_the_broker_at_the_broker_url_with_data_under_the_data_dir(tmp_path: Path) -> None:
    s = load_settings(broker_url="kafka://127.0.0.1:29092", datadir=tmp_path, broker_heap_mb=768)
    cfg = BrokerConfig.from_settings(s)
    assert (cfg.host, cfg.port, cfg.heap_mb) == ("127.0.0.1", 29092, 768)
    assert cfg.datadir == tmp_path / "broker"


def test_cluster_ids_are_kafka_uuids() -> None:
    for _ in range(200):
        cid = _cluster_id()
        assert len(cid) == 22 and "=" not in cid
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_the_jar_cache_is_keyed_by_the_pinned_dependency_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AURORA_KAFKA_CACHE", str(tmp_path))
    d = kafka_cache_dir()
    assert d.parent == tmp_path and d.name.startswith("kafka-3.9.1-")


def _fake_java(tmp_path: Path, version_line: str) -> Path:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return home


def test_an_old_java_is_refused_with_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15')))
    with pytest.raises(BrokerError, match=r"Java 11; .* needs 17\+: install .*openjdk-17-jre-headless"):
        check_java()


def test_java_17_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, 'openjdk version "17.0.15" 2025-04-15')))
    java, major = check_java()
    assert major == 17 and java.endswith("/jdk/bin/java")


def test_no_java_at_all_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(BrokerError, match="no Java runtime found: install"):
        check_java()
