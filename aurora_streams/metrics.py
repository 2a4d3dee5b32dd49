"""Prometheus metrics, declared once. Base units (seconds), ``_total`` on counters, no
per-device labels (cardinality)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram, Info

from aurora_streams import __version__

__all__ = [
    "BATCH_DURATION",
    "BATCH_SIZE",
    "BUILD_INFO",
    "BYTES_PRODUCED",
    "CHECKPOINT_DURATION",
    "CHECKPOINT_READINGS",
    "CHECKPOINT_SEAL_DURATION",
    "DLQ_RECORDS",
    "E2E_LATENCY",
    "LAST_BATCH_TIMESTAMP",
    "LOG_REBASES",
    "READINGS",
    "RECORDS_PRODUCED",
    "SINK_FALLBACKS",
    "SINK_FLUSH_DURATION",
    "SINK_LAG",
    "SINK_REJECTED",
    "SINK_RETRIES",
    "SINK_ROWS",
    "STALLED_PARTITIONS",
    "STATE_WRITES",
]

READINGS: Final = Counter(
    "aurora_readings_processed_total",
    "Readings applied to device state, by outcome (new, out_of_order, revised, duplicate, stale, late).",
    ["outcome"],
)
DLQ_RECORDS: Final = Counter(
    "aurora_dlq_records_total", "Raw messages or readings sent to the DLQ, by reason.", ["reason"]
)
RECORDS_PRODUCED: Final = Counter(
    "aurora_records_produced_total", "Records produced, by output topic.", ["topic"]
)
BYTES_PRODUCED: Final = Counter(
    "aurora_produced_bytes_total",
    "Bytes of the record batches the worker's producer sent, by topic (outputs and table "
    "changelogs): compressed, with batch headers, as the broker appends them.",
    ["topic"],
)
LOG_REBASES: Final = Counter(
    "aurora_raw_log_rebases_total",
    "Raw partitions found reset (a device state past the log's end) and moved to a new log "
    "epoch (AURORA_ON_LOG_RESET=rebase).",
    ["partition"],
)
STATE_WRITES: Final = Counter(
    "aurora_state_writes_total", "Device state table writes (one per touched device per checkpoint)."
)
CHECKPOINT_DURATION: Final = Histogram(
    "aurora_checkpoint_duration_seconds",
    "Wall time to store a checkpoint: outputs and views, then device states, acknowledged.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHECKPOINT_SEAL_DURATION: Final = Histogram(
    "aurora_checkpoint_seal_duration_seconds",
    "Wall time the normalize agent stops to seal a checkpoint (views written; states are encoded "
    "copy on write).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CHECKPOINT_READINGS: Final = Histogram(
    "aurora_checkpoint_messages",
    "Raw messages acknowledged per checkpoint.",
    buckets=(1, 10, 100, 1000, 5000, 10_000, 25_000, 50_000, 100_000),
)
BATCH_DURATION: Final = Histogram(
    "aurora_batch_duration_seconds",
    "Wall time to process an agent batch and queue its outputs (stored at the next checkpoint).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BATCH_SIZE: Final = Histogram(
    "aurora_batch_messages",
    "Raw messages per agent batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 5000),
)
E2E_LATENCY: Final = Histogram(
    "aurora_record_e2e_latency_seconds",
    "From the raw message's broker timestamp to its outputs being queued to the broker.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LAST_BATCH_TIMESTAMP: Final = Gauge(
    "aurora_last_batch_timestamp_seconds", "Unix time the last batch finished (liveness)."
)
BUILD_INFO: Final = Info("aurora_build", "Version of aurora-streams.")
BUILD_INFO.info({"version": __version__})

SINK_ROWS: Final = Counter(
    "aurora_sink_rows_written_total", "Rows upserted by the sink, by table.", ["table"]
)
SINK_FLUSH_DURATION: Final = Histogram(
    "aurora_sink_flush_duration_seconds",
    "Wall time to store one sink batch (COPY + upsert, one transaction).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SINK_RETRIES: Final = Counter("aurora_sink_retries_total", "Sink batches retried after a transient failure.")
SINK_REJECTED: Final = Counter(
    "aurora_sink_rejected_total", "Rows the database refused (sent to the DLQ with its message)."
)
SINK_FALLBACKS: Final = Counter(
    "aurora_sink_fallbacks_total", "Sink batches written row by row because the database refused a row."
)
SINK_LAG: Final = Gauge(
    "aurora_sink_lag_seconds", "Now minus the broker timestamp of the newest record the sink has stored."
)

STALLED_PARTITIONS: Final = Gauge(
    "aurora_stalled_partitions",
    "Assigned raw-topic partitions with lag whose committed offset has not moved for AURORA_STALL_AFTER_S.",
)
