"""Typed settings from ``AURORA_*`` environment variables, with safe defaults.

Every command (broker, topics, worker, simulate, dev) reads the same settings, so one set of
variables describes one deployment. ``aurora-streams settings`` prints them all with their
current values. Mappings and lists are given as JSON, e.g.
``AURORA_DEVICE_MAX_POWER_KW='{"NMI0001": 250}'``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aurora_streams.domain.model import DeviceRules
from aurora_streams.domain.scoring import ScoringRules
from aurora_streams.domain.validate import ValidationPolicy
from aurora_streams.errors import ConfigError
from aurora_streams.processing import TopicNames

__all__ = ["TABLES", "ApiToken", "Role", "Settings", "load_settings"]

TABLES = ("device_state", "device_days", "recent_anomalies", "forecasts")
"""The worker's tables; each has a changelog topic ``<app id>-<table>-changelog``."""


Role = Literal["read", "ingest", "admin"]


class ApiToken(BaseModel):
    """A bearer token and the roles it grants (``admin`` implies every role)."""

    token: SecretStr = Field(min_length=16)
    roles: list[Role]

    @field_validator("token")
    @classmethod
    def _printable_ascii(cls, value: SecretStr) -> SecretStr:
        # The authenticator refuses any other presented token, so such a token could never match.
        text = value.get_secret_value()
        if not (text.isascii() and text.isprintable() and text == text.strip()):
            raise ValueError("an API token must be printable ASCII without surrounding spaces")
        return value


class Settings(BaseSettings):
    """All settings; the environment variable is ``AURORA_`` + the field name in capitals."""

    model_config = SettingsConfigDict(env_prefix="AURORA_", frozen=True, extra="ignore")

    # --- where things are -------------------------------------------------------------
    broker_url: str = Field(
        "kafka://127.0.0.1:9092",
        description="Kafka bootstrap, kafka://host:port[;host:port]. `broker` listens here.",
    )
    app_id: str = Field("aurora-streams", description="Consumer group and changelog prefix.")
    partitions: int = Field(
        4,
        ge=1,
        le=1024,
        description="Partitions of every owned topic; the device table has as many.",
    )
    replication_factor: int = Field(1, ge=1, description="Replication of created topics.")
    datadir: Path = Field(
        Path("aurora-data"), description="Worker state (RocksDB) lives under this directory."
    )
    web_host: str = Field("127.0.0.1", description="Address other workers reach this one at.")
    web_bind: str = Field("127.0.0.1", description="Interface the HTTP server binds.")
    web_port: int = Field(6066, ge=1, le=65535, description="HTTP port of the worker.")
    database_url: str | None = Field(
        None, description="postgresql:// URL; when set, the worker runs the TimescaleDB sink."
    )

    # --- the embedded broker (`aurora-streams broker`, `dev`) ------------------------------
    broker_heap_mb: int = Field(512, ge=256, le=16_384, description="Java heap of the embedded Kafka broker.")
    broker_retention_hours: int = Field(
        168, ge=1, description="Embedded broker: time retention of topics that set none of their own."
    )
    broker_retention_bytes: int = Field(
        512 * 1024 * 1024,
        ge=16 * 1024 * 1024,
        description="Embedded broker: bytes kept per partition of delete-policy topics (bounds its disk).",
    )

    # --- topics ----------------------------------------------------------------------
    topic_raw: str = "meter.readings.raw"
    topic_normalized: str = "meter.readings.normalized"
    topic_anomalies: str = "meter.anomalies"
    topic_dlq: str = "meter.readings.dlq"
    topic_forecasts: str = "meter.forecasts"
    topic_retention_ms: int = Field(
        7 * 24 * 3600 * 1000,
        ge=-1,
        description="retention.ms of the created raw, normalized, anomaly and forecast topics (-1: by size "
        "only). Kafka deletes by record timestamp: see AURORA_RAW_TIMESTAMP_TYPE.",
    )
    raw_timestamp_type: Literal["LogAppendTime", "CreateTime"] = Field(
        "LogAppendTime",
        description="message.timestamp.type of the created raw topic. LogAppendTime: the broker stamps "
        "each raw record with its arrival, so retention counts from arrival and never deletes "
        "old-dated input (a NEM12 backfill, a gateway's buffered week) before it is read, and "
        "`ingested_at` and the future-timestamp check use the broker's clock. CreateTime: the "
        "producer's stamp is kept (simulated clocks, replays of history), and time retention "
        "deletes input stamped older than retention.ms, read or not.",
    )
    output_compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = Field(
        "lz4",
        description="Compression of the normalize agent's outputs and changelog batches (lz4: fewer "
        "bytes on the broker and its disk for little CPU; none: as produced).",
    )
    produce_timeout_s: float = Field(
        120.0,
        gt=0,
        description=(
            "How long the normalize agent's producer retries a record before its batch fails; "
            "the worker then stops without committing, so a restart re-delivers the batch."
        ),
    )
    produce_max_queued: int = Field(
        5_000,
        ge=100,
        description=(
            "Output and changelog records the normalize agent lets wait for the broker: above "
            "it the agent takes no more input, and a checkpoint writes no more states, until "
            "the broker acknowledges enough (waiting off the event loop, so heartbeats and the "
            "API go on). A waiting record holds its bytes in librdkafka (an output ~0.6 KB, a "
            "device state or forecaster up to ~10 KB): W1's worker had 79,000 outputs and "
            "10,000 states (48 MB) waiting at its memory high-water mark without this bound."
        ),
    )
    output_encoding: Literal["json", "avro"] = Field(
        "json", description="Encoding of normalized, anomaly and DLQ records."
    )
    max_message_bytes: int = Field(
        262_144, ge=1024, description="Raw messages larger than this go to the DLQ."
    )

    # --- validation and flag thresholds ------------------------------------------------
    max_power_kw: float = Field(
        100.0, gt=0, description="Max plausible power of a device; above it a delta is a jump."
    )
    device_max_power_kw: dict[str, float] = Field(
        default_factory=dict, description="Per-device max power overrides (JSON object)."
    )
    register_moduli_kwh: list[float] = Field(
        default_factory=lambda: [10_000.0, 100_000.0, 1_000_000.0, 10_000_000.0],
        description="Register wrap points tried, in order, when a register falls.",
    )
    register_wrap_band: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="A fall is a wrap only from the top this fraction of a modulus to the bottom "
        "this fraction (e.g. 9,000-9,999.9 to 0-1,000 at 10,000); any other fall is a reset.",
    )
    reorder_horizon_s: int = Field(
        6 * 3600, ge=0, description="Out-of-order readings this recent are placed in order."
    )
    max_window: int = Field(48, ge=2, le=10_000, description="Readings kept per channel.")
    state_cache_devices: int = Field(
        10_000,
        ge=0,
        description="Decoded device states kept in memory per worker (0: decode from the table every batch).",
    )
    gap_factor: float = Field(1.5, gt=1.0, description="Step > factor x cadence is a gap.")
    run_length: int = Field(3, ge=2, description="Equal actual values in a row for zero_run/frozen.")
    zero_run_min_s: int = Field(
        86_400, ge=0, description="A run of zeros is zero_run once it lasts this long."
    )
    frozen_min_s: int = Field(
        21_600,
        ge=0,
        description="A run of one non-zero value (a register not advancing) is frozen once it "
        "lasts this long.",
    )
    spike_z: float = Field(
        5.0, gt=0, description="Power this many deviations above its hour's usual is a spike."
    )
    notable_z: float = Field(4.0, gt=0, description="... this many (below spike_z) is high (or low below).")
    scoring_floor_kw: float = Field(
        0.5, ge=0, description="The least deviation (kW) scoring divides by: a household switches kilowatts."
    )
    max_future_s: int = Field(300, ge=0, description="Clock skew tolerated before future_timestamp.")
    device_zones: dict[str, str] = Field(
        default_factory=dict,
        description="IANA zone per device for naive timestamps (JSON object); others are rejected.",
    )
    max_batch_readings: int = Field(10_000, ge=1, description="Readings per gateway batch.")

    # --- HTTP API -------------------------------------------------------------------------
    api_tokens: dict[str, ApiToken] = Field(
        default_factory=dict,
        description='Named bearer tokens, JSON: {"ops": {"token": "...", "roles": ["read", "ingest"]}}. '
        "None configured: every authenticated endpoint answers 401.",
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 key for signed JWTs (claims: roles, exp required); unset: JWTs are refused."
    )
    jwt_issuer: str | None = Field(None, description="Required `iss` claim, when set.")
    jwt_audience: str | None = Field(None, description="Required `aud` claim, when set.")
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest NEM12 upload accepted.")
    max_json_bytes: int = Field(1024 * 1024, ge=1024, description="Largest JSON readings request accepted.")
    max_expanded_bytes: int = Field(
        1024 * 1024 * 1024, ge=1024, description="Largest file a zipped NEM12 upload may expand to."
    )

    # --- views ------------------------------------------------------------------------------
    sites_file: Path | None = Field(
        None, description="JSON object mapping device id to site, for site totals (/v1/fleet/consumption)."
    )
    forecast_window_min: int = Field(
        30, ge=5, le=1440, description="Forecasts learn windows of this many minutes as they close."
    )
    forecast_publish_hours: int = Field(
        24, ge=1, le=168, description="Hours ahead in each record published to the forecasts topic."
    )
    forecast_publish_every_min: int = Field(
        60,
        ge=0,
        le=10_080,
        description=(
            "A device channel's forecast is published when its model learns a window ending on a "
            "multiple of this many minutes of event time (0: whenever it learns). The model learns "
            "every window either way; this sets only the forecasts topic's volume."
        ),
    )
    aggregate_retention_days: int = Field(35, ge=1, description="Days of per-device aggregates kept.")
    recent_anomalies_per_device: int = Field(200, ge=1, description="Anomalies kept per device for /v1.")

    # --- sink ----------------------------------------------------------------------------
    sink_batch_max: int = Field(5000, ge=1, description="Records per sink transaction.")
    sink_batch_within_s: float = Field(0.5, gt=0, description="Max wait to fill a sink batch.")
    sink_pool_size: int = Field(2, ge=1, description="Database connections of the sink.")
    sink_max_backoff_s: float = Field(10.0, gt=0, description="Cap of the retry backoff.")

    # --- worker tuning -----------------------------------------------------------------
    batch_max: int = Field(2000, ge=1, le=4096, description="Raw messages handled per agent batch.")
    batch_max_bytes: int = Field(
        1_048_576,
        ge=1,
        description="Raw message bytes per agent batch (at least one message): 2,000 gateway batches "
        "of 48 readings would hold the event loop for seconds.",
    )
    batch_within_s: float = Field(0.025, gt=0, description="Max wait to fill a batch.")
    fetch_max_wait_ms: int = Field(
        10,
        ge=1,
        le=30_000,
        description="Longest a fetch of the raw topic waits at the broker for records (bounds idle latency).",
    )
    state_memory_mb: int = Field(
        32,
        ge=16,
        description=(
            "Memory of all the worker's RocksDB databases together (every table and partition, "
            "standbys included): one shared block cache that the memtables are charged to. Less "
            "means earlier flushes and more reads from the page cache. The worker keeps its hot "
            "device states and forecasters decoded or encoded in caches of its own, so the block "
            "cache mostly holds what they miss; it fills its budget within minutes (W1's "
            "peak RSS 408 MB at 64, 357 at 32)."
        ),
    )
    malloc: Literal["glibc", "jemalloc"] = Field(
        "glibc",
        description="The worker's C allocator: jemalloc (Debian's libjemalloc2, preloaded by re-running "
        "the worker; glibc's when it is not installed) returns freed memory to the kernel on its own.",
    )
    malloc_arenas: int = Field(
        2,
        ge=0,
        description="glibc malloc arenas the worker's threads share (0: glibc's default, eight per "
        "core). Fewer: less memory kept by fragmentation, for a little contention between threads.",
    )
    malloc_mmap_threshold_kib: int = Field(
        128,
        ge=0,
        description="Blocks of this many KiB or more get a mapping of their own, returned to the "
        "kernel when freed (0: glibc's rising threshold). Measured at 1,000 meters: 20-40 MB less "
        "RSS, half the freed memory kept in the arenas.",
    )
    malloc_trim_interval_s: float = Field(
        60.0,
        ge=0,
        description="How often the worker returns freed native memory to the kernel (malloc_trim, "
        "in a thread; 0: never). Without it RSS stays at the peak of a catch-up.",
    )
    checkpoint_interval_s: float = Field(
        15.0,
        ge=0,
        description=(
            "How often the normalize agent stores its device states and views and acknowledges "
            "its input (one state write per touched device per checkpoint: at 10,000 meters and "
            "2,000 readings/s, 5 s wrote 855 bytes of device state per reading, 30 s 163); a crash "
            "re-delivers up to this much input, and the /v1 views trail the outputs by as much. "
            "0: after every batch."
        ),
    )
    checkpoint_idle_s: float = Field(
        1.0,
        gt=0,
        description="An epoch whose input paused this long is stored at once, whatever the interval.",
    )
    checkpoint_max_readings: int = Field(
        60_000,
        ge=1,
        description="Raw messages after which a checkpoint is due anyway: bounds what an epoch "
        "holds while a worker catches up (about 5 s at W1's 12,000 readings/s; a live 2,000 "
        "readings/s fills 30,000 in the 15 s interval).",
    )
    checkpoint_max_devices: int = Field(
        3_000,
        ge=1,
        description="Devices loaded into memory (not in the decoded state cache) after which a "
        "checkpoint is due anyway (bounds memory: their states and view records are held until it "
        "is stored; an epoch also ends above AURORA_STATE_CACHE_DEVICES devices in all).",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="exactly_once needs a broker with transactions (not the embedded one).",
    )
    on_log_reset: Literal["rebase", "refuse"] = Field(
        "rebase",
        description="When a raw partition's log is found reset (a device state past the log's "
        "end: broker data wiped, topic recreated): rebase goes on from the device states with the "
        "partition's offsets in a new log epoch (said in one log line and a metric); refuse stops "
        "the worker (exit 78) without committing, until the operator decides.",
    )
    session_timeout_s: float = Field(
        10.0, gt=0, description="Consumer session timeout; a dead worker is noticed after it."
    )
    heartbeat_interval_s: float = Field(1.0, gt=0)
    consumer_stop_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a stopping worker waits for its Kafka consumer's last commit and "
        "group leave; then it exits without them (input not committed is re-delivered). Bounds "
        "the stop when the broker is unreachable (it took 62 s, past deploy/k8s's 60-s grace).",
    )
    commit_interval_s: float = Field(1.0, gt=0, description="Offset commit interval.")
    stall_after_s: float = Field(
        60.0,
        gt=0,
        description="A raw partition with lag whose committed offset has not moved for this long is "
        "stalled: /readyz answers 503 and says which (aurora_stalled_partitions).",
    )
    standby_replicas: int = Field(1, ge=0, description="Standby copies of table partitions.")
    log_level: str = Field("info", description="debug, info, warning or error.")
    log_format: Literal["json", "text"] = Field("json", description="Structured JSON logs by default.")

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        for part in value.split(";"):
            parsed = urlparse(part if "://" in part else f"kafka://{part}")
            if not parsed.hostname or not parsed.port:
                raise ValueError(f"broker URL {part!r} needs host and port, e.g. kafka://127.0.0.1:9092")
        return value

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` for Kafka clients."""
        hosts = []
        for part in self.broker_url.split(";"):
            parsed = urlparse(part if "://" in part else f"kafka://{part}")
            hosts.append(f"{parsed.hostname}:{parsed.port}")
        return ",".join(hosts)

    @cached_property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_raw, self.topic_normalized, self.topic_anomalies, self.topic_dlq)

    @cached_property
    def rules(self) -> DeviceRules:
        return DeviceRules(
            max_power_kw=self.max_power_kw,
            device_max_power_kw=dict(self.device_max_power_kw),
            register_moduli_kwh=tuple(sorted(self.register_moduli_kwh)),
            wrap_band=self.register_wrap_band,
            reorder_horizon_s=self.reorder_horizon_s,
            max_window=self.max_window,
            gap_factor=self.gap_factor,
            run_length=self.run_length,
            zero_run_min_s=self.zero_run_min_s,
            frozen_min_s=self.frozen_min_s,
            scoring=ScoringRules(
                spike_z=self.spike_z,
                notable_z=min(self.notable_z, self.spike_z),
                floor_kw=self.scoring_floor_kw,
            ),
        )

    @cached_property
    def policy(self) -> ValidationPolicy:
        return ValidationPolicy(
            device_zones=dict(self.device_zones),
            max_future_s=self.max_future_s,
            max_batch_readings=self.max_batch_readings,
        )

    @cached_property
    def sites(self) -> dict[str, str]:
        """device id -> site, from ``AURORA_SITES_FILE`` (empty when unset)."""
        if self.sites_file is None:
            return {}
        import orjson

        try:
            doc = orjson.loads(self.sites_file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"AURORA_SITES_FILE {self.sites_file}: {exc}") from exc
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise ConfigError(
                f"AURORA_SITES_FILE {self.sites_file}: expected a JSON object of device -> site"
            )
        return {str(k): v for k, v in doc.items()}

    @cached_property
    def owned_topic_names(self) -> frozenset[str]:
        """Every topic the app creates (aurora_streams.topics), all with ``partitions`` partitions."""
        return frozenset(
            (
                self.topic_raw,
                self.topic_normalized,
                self.topic_anomalies,
                self.topic_forecasts,
                self.topic_dlq,
                *(f"{self.app_id}-{t}-changelog" for t in TABLES),
            )
        )

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-device_state-changelog"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (plus explicit overrides), or a :class:`ConfigError`
    naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except Exception as exc:  # pydantic.ValidationError lists every bad field
        raise ConfigError(f"invalid AURORA_* settings: {exc}") from exc
