"""Fixtures: one embedded broker (Apache Kafka, single-node KRaft, on loopback) for the
session; a fresh, isolated deployment (own app id, topics, data dirs) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from aurora_streams.devbroker import stop_process
from aurora_streams.devpostgres import LocalPostgres
from tests.integration.harness import Deployment, free_port, run_async, start_test_broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bootstrap, proc = start_test_broker(tmp_path_factory.mktemp("broker"))
    try:
        yield bootstrap
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server from Debian's packages, on loopback, for the session."""
    pg = LocalPostgres.in_tempdir(free_port(), durable=False)
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def database(postgres: LocalPostgres) -> Iterator[str]:
    """A fresh, migrated database; its URL."""
    import uuid

    from aurora_streams.sinks.migrate import migrate

    name = f"t_{uuid.uuid4().hex[:10]}"

    async def setup() -> None:
        admin = await asyncpg.connect(postgres.url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        conn = await asyncpg.connect(postgres.url.rsplit("/", 1)[0] + f"/{name}")
        await migrate(conn)
        await conn.close()

    async def teardown() -> None:
        admin = await asyncpg.connect(postgres.url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    run_async(setup())
    try:
        yield postgres.url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        if postgres.running():
            run_async(teardown())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
