"""The adapter copies or leans on Faust's private code: this pins the Faust version and the
source of each upstream method it copies or whose behaviour it depends on, so an upgrade
fails here, loudly, until someone re-reads the adapter against the new source."""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

import pytest
from faust.tables.manager import TableManager
from faust.transport import consumer
from faust.transport.drivers import aiokafka as aiokafka_driver

# (what, upstream object, sha256 of its source, first 16 hex digits): why the adapter cares.
PINNED = [
    # Copied as ProbingConsumer._drain_messages, with the raw-topic intake.
    ("Consumer._drain_messages", consumer.Consumer._drain_messages, "44a2500309e83c63"),
    # Sets the read offsets the seek fence (ProbingConsumer._seek_again) mirrors.
    ("Consumer.perform_seek", consumer.Consumer.perform_seek, "0e8c130ff4b0afd8"),
    # Copied without its one-second sleep as FastTableManager.on_start.
    ("TableManager.on_start", TableManager.on_start, "365dd25fbc0e0684"),
    # Extended by _ConsumerThread to set the fetch wait.
    (
        "AIOKafkaConsumerThread._create_worker_consumer",
        aiokafka_driver.AIOKafkaConsumerThread._create_worker_consumer,
        "c2701bfc3e6f6cad",
    ),
    # Its acked-offset bookkeeping is what ProbingConsumer.diagnose and the metrics report.
    ("Consumer._new_offset", consumer.Consumer._new_offset, "1d2c7ea89a7ad4f1"),
]


def test_faust_is_the_version_the_adapter_was_written_against() -> None:
    assert version("faust-streaming") == "0.15.3"


@pytest.mark.parametrize(("what", "obj", "digest"), PINNED, ids=[p[0] for p in PINNED])
def test_upstream_source_is_unchanged(what: str, obj: object, digest: str) -> None:
    source = inspect.getsource(obj)  # type: ignore[arg-type]
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, (
        f"faust's {what} changed: re-read aurora_streams/faust_adapter against it, then update the pin"
    )
