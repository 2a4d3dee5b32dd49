"""The platform on the parts operators run: Apache Kafka (KRaft) and TimescaleDB in
containers (testcontainers), topics created and migrations applied by our CLI, a worker,
simulated meters, and the database checked against the normalized topic.

Needs a Docker engine; none runs on this project's machines, where the test skips with
that reason. The same flow runs against the embedded broker and Debian's PostgreSQL in
test_sink_e2e (and the compose file in deploy/ is validated offline in tests/deploy).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aurora_streams.simulator import generate
from tests.integration.harness import REPO, Deployment
from tests.integration.test_pipeline import FLEET
from tests.integration.test_sink_e2e import assert_db_matches_topic, query
from tests.integration.test_sink_timescale import _docker_reason


@pytest.fixture(scope="module")
def containers() -> Iterator[tuple[str, str]]:
    reason = _docker_reason()
    if reason:
        pytest.skip(reason.replace("TimescaleDB runs", "Kafka and TimescaleDB run"))
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with (
        KafkaContainer().with_kraft() as kafka,
        PostgresContainer("timescale/timescaledb:2.17.2-pg16", driver=None) as pg,
    ):
        yield kafka.get_bootstrap_server(), pg.get_connection_url()


def test_end_to_end_on_kafka_and_timescaledb(containers: tuple[str, str], tmp_path: Path) -> None:
    bootstrap, database = containers
    dep = Deployment(bootstrap, tmp_path)
    dep.extra_env["AURORA_DATABASE_URL"] = database
    env = dep.env()
    for command in (["topics", "create"], ["db", "migrate"]):
        done = subprocess.run([sys.executable, "-m", "aurora_streams", *command], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
    try:
        sent = dep.produce(generate(FLEET, limit=3000))
        dep.start_worker("kafka").wait_ready()
        assert_db_matches_topic(dep, database, sent)
        hypertables = {
            r[0] for r in query(database, "SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
        assert "readings" in hypertables
    finally:
        dep.stop_all()
