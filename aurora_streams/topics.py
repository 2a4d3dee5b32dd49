"""The topics the app owns: creating them with the configured partition counts, and
refusing to run against topics that do not fit (DESIGN.md, Partitions).

Never rely on broker auto-creation: an auto-created topic gets a partition count unrelated
to the tables it feeds, and a table co-partitioned with the wrong count serves wrong state.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiokafka.partitioner import murmur2
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from aurora_streams.errors import BrokerError, TopicMismatchError
from aurora_streams.settings import TABLES, Settings

__all__ = [
    "TopicSpec",
    "check_topics",
    "ensure_topics",
    "key_partition",
    "owned_topics",
    "raw_timestamp_type",
    "warn_raw_timestamp_type",
]

log = logging.getLogger(__name__)

RAW_TIMESTAMP_TYPE = "message.timestamp.type"


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of ``key``: murmur2, as the Java client and our librdkafka producers
    (``murmur2_random``) place keyed records (DESIGN.md, Partitions)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    must_match: bool
    """The partition count is load-bearing (a table is co-partitioned with this topic)."""


def owned_topics(settings: Settings) -> list[TopicSpec]:
    n = settings.partitions
    delete = {"cleanup.policy": "delete", "retention.ms": str(settings.topic_retention_ms)}
    return [
        TopicSpec(settings.topic_raw, n, {**delete, RAW_TIMESTAMP_TYPE: settings.raw_timestamp_type}, True),
        # The view tables are fed from these, so they are co-partitioned with the raw topic.
        TopicSpec(settings.topic_normalized, n, delete, True),
        TopicSpec(settings.topic_anomalies, n, delete, True),
        # Keyed by device, but nothing is co-partitioned with it: its count is free.
        TopicSpec(settings.topic_forecasts, n, delete, False),
        TopicSpec(settings.topic_dlq, n, {"cleanup.policy": "delete", "retention.ms": "-1"}, False),
        # Changelogs are compacted and never expire by time (a Faust recovery pitfall).
        TopicSpec(settings.changelog_topic, n, {"cleanup.policy": "compact", "retention.ms": "-1"}, True),
        *(
            TopicSpec(
                f"{settings.app_id}-{table}-changelog",
                n,
                {"cleanup.policy": "compact", "retention.ms": "-1"},
                True,
            )
            for table in TABLES[1:]
        ),
    ]


def _admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.bootstrap_servers, "socket.timeout.ms": 10000})


def _existing(admin: AdminClient, timeout: float) -> dict[str, int]:
    try:
        md = admin.list_topics(timeout=timeout)
    except Exception as exc:
        raise BrokerError(f"cannot reach the broker: {exc}") from exc
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def ensure_topics(settings: Settings, *, timeout: float = 15.0) -> list[str]:
    """Create the owned topics that are missing; return the names created. Then
    :func:`check_topics`."""
    admin = _admin(settings)
    existing = _existing(admin, timeout)
    missing = [s for s in owned_topics(settings) if s.name not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, settings.replication_factor, config=s.config) for s in missing],
            operation_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result()
                created.append(name)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                    raise BrokerError(f"cannot create topic {name}: {exc}") from exc
    # CreateTopics returns before the new topics show in every metadata answer (DESIGN.md,
    # Brokers), so the check right after a creation waits for them, briefly.
    deadline = time.monotonic() + (timeout if created else 0.0)
    while True:
        try:
            check_topics(settings, admin=admin, timeout=timeout)
            return created
        except TopicMismatchError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def raw_timestamp_type(settings: Settings, admin: AdminClient, timeout: float = 15.0) -> str | None:
    """The raw topic's ``message.timestamp.type`` as the broker reports it (None: unknown)."""
    resource = ConfigResource(ResourceType.TOPIC, settings.topic_raw)
    try:
        configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
    except Exception as exc:  # an ACL may forbid DescribeConfigs: the check is advice, not a gate
        log.info("cannot read the raw topic's configuration: %s", exc)
        return None
    entry = configs.get(RAW_TIMESTAMP_TYPE)
    return None if entry is None else str(entry.value)


def warn_raw_timestamp_type(settings: Settings, admin: AdminClient, timeout: float = 15.0) -> None:
    """Log once when an existing raw topic stamps records otherwise than configured: with
    CreateTime, time retention deletes input by its producers' stamps, read or not."""
    have = raw_timestamp_type(settings, admin, timeout)
    if have is not None and have != settings.raw_timestamp_type:
        log.warning(
            "topic %s has %s=%s, configured %s; with CreateTime, retention.ms counts from the "
            "producers' stamps and deletes old-dated input whether or not it was read. To change it: "
            "kafka-configs.sh --alter --entity-type topics --entity-name %s --add-config %s=%s",
            settings.topic_raw, RAW_TIMESTAMP_TYPE, have, settings.raw_timestamp_type,
            settings.topic_raw, RAW_TIMESTAMP_TYPE, settings.raw_timestamp_type,
        )  # fmt: skip


def check_topics(settings: Settings, *, admin: AdminClient | None = None, timeout: float = 15.0) -> None:
    """Raise :class:`TopicMismatchError`, saying what to do, when a topic is missing or has a
    partition count that differs from the tables it feeds. Warn when the raw topic stamps
    records otherwise than configured (:func:`warn_raw_timestamp_type`)."""
    admin = admin or _admin(settings)
    existing = _existing(admin, timeout)
    problems: list[str] = []
    for spec in owned_topics(settings):
        have = existing.get(spec.name)
        if have is None:
            problems.append(f"topic {spec.name!r} does not exist: run `aurora-streams topics create`")
        elif have != spec.partitions and spec.must_match:
            problems.append(
                f"topic {spec.name!r} has {have} partitions but the device_state table has "
                f"{spec.partitions}: set AURORA_PARTITIONS={have} to match it, or delete and "
                f"recreate the topic (and the worker's AURORA_DATADIR) with "
                f"`aurora-streams topics create`"
            )
        elif have != spec.partitions:
            log.warning("topic %s has %d partitions (configured %d)", spec.name, have, spec.partitions)
    if problems:
        raise TopicMismatchError("; ".join(problems))
    warn_raw_timestamp_type(settings, admin, timeout)
