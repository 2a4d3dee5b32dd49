"""Fixtures: one embedded broker (Tansu, on loopback) for the session; a fresh, isolated
deployment (own app id, topics, data dirs) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aurora_streams.devbroker import start_broker, stop_process
from tests.integration.harness import Deployment, free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with open(log_path, "ab") as log:
        proc = start_broker("127.0.0.1", port, log=log)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture
def deployment(broker: str, tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment(broker, tmp_path)
    dep.create_topics()
    try:
        yield dep
    finally:
        dep.stop_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
