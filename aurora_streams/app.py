"""The Faust application: the whole dataflow on one screen.

    meter.readings.raw ──► normalize ──► meter.readings.normalized
      (keyed by device)      │  │    └─► meter.anomalies
                             │  └──────► meter.readings.dlq
                             ▼
                 device_state (RocksDB + changelog)

    meter.readings.normalized, meter.anomalies ──► views ──► device_days, recent_anomalies
                                                      (tables behind the /v1 read API)

    meter.readings.normalized, meter.anomalies, meter.readings.raw ──► sink ──► TimescaleDB
                                                 (when AURORA_DATABASE_URL is set)

``normalize`` validates and normalizes in one pass (no repartition: the raw topic is keyed
by device). ``sink`` stores outputs and raw payloads, acking only what is stored.
HTTP on ``AURORA_WEB_PORT``: ``/healthz``, ``/readyz``, ``/metrics``, and ingest
(``/v1/ingest/nem12``, ``/v1/ingest/jobs/{id}``, ``/v1/ingest/readings``) feeding the raw topic.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust

from aurora_streams import malloc
from aurora_streams.agents.delivery import FastProducer
from aurora_streams.agents.intake import RawIntake
from aurora_streams.agents.normalize import attach_normalize
from aurora_streams.agents.sink import attach_sink
from aurora_streams.domain.forecast import preload
from aurora_streams.faust_adapter import FastTableManager, ProbingConsumer, Transport, on_event_loop
from aurora_streams.observability import AuroraMonitor, register_collector
from aurora_streams.processing import build_processor
from aurora_streams.settings import Settings
from aurora_streams.tables import store
from aurora_streams.tables.device_state import define_device_state
from aurora_streams.tables.views import define_view_tables
from aurora_streams.web.api import attach_api
from aurora_streams.web.health import attach_health
from aurora_streams.web.ingest import attach_ingest
from aurora_streams.web.openapi import attach_openapi
from aurora_streams.web.ops import attach_ops
from aurora_streams.web.protocol import install as install_error_pages

__all__ = ["AuroraApp", "create_app"]


class AuroraApp(faust.App):  # type: ignore[misc]
    aurora_settings: Settings
    state_caches: list[Any]
    """Caches of decoded table values (tables.device_state.StateCache), cleared whenever a
    rebalance starts: partitions may come back advanced by another worker."""

    raw_intake: RawIntake
    """Raw-topic messages fetched and not yet taken by the normalize agent; cleared whenever
    a rebalance starts, like Faust's stream queues."""
    raw_shared: bool
    """Whether a Faust agent reads the raw topic too (the sink): its messages then also go
    through Faust's conductor to that agent's stream."""

    output_producer: FastProducer | None = None
    """The normalize agent's producer of outputs and changelog records (at-least-once)."""

    async def drain_outputs(self) -> None:
        """Wait until every output and changelog record queued so far has reached the broker
        (or failed: the next checkpoint's flush reports it). Called before this worker gives
        up partitions, at a rebalance and at a stop: a changelog record of an abandoned
        epoch that reached the broker after the partition's next owner had written its own
        records for the same key would end the changelog with the older state, and a later
        owner would restore it (found by a soak whose second worker joined and left 14 times:
        166 normalized readings computed from restored stale states)."""
        fast = self.output_producer
        if fast is None:
            return
        left = await fast.drain(self.aurora_settings.produce_timeout_s)
        if left:
            self.log.warning("%d output records not yet acknowledged as the worker gives up partitions", left)

    _event_loop: asyncio.AbstractEventLoop | None = None

    async def on_start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        await super().on_start()

    async def on_stop(self) -> None:
        await self.drain_outputs()
        await super().on_stop()

    def on_rebalance_start(self) -> None:
        # Called from aiokafka's consumer thread: the resets run on the event loop.
        super().on_rebalance_start()
        on_event_loop(self._event_loop, self._reset_for_rebalance)

    def _reset_for_rebalance(self) -> None:
        cast(ProbingConsumer, self.consumer).begin_rebalance()
        self.raw_intake.clear()
        for cache in self.state_caches:
            cache.clear()

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        cast(ProbingConsumer, self.consumer).end_rebalance()

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)


_RAW_INTAKE_MESSAGES = 8192
"""Raw messages fetched ahead of the agent, as a stream's buffer would hold
(``stream_buffer_maxsize``): at least two batches (``AURORA_BATCH_MAX`` is at most 4,096)."""


def create_app(settings: Settings) -> AuroraApp:
    """Build the app, its table, agent and views from ``settings``."""
    eos = settings.processing_guarantee == "exactly_once"
    app = AuroraApp(
        settings.app_id,
        broker=settings.broker_url,
        store=f"{store.SCHEME}://",
        datadir=str(settings.datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # Topics are created by `aurora-streams topics create` (or the worker's startup
        # check) with explicit configs; Faust never declares them.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        processing_guarantee=settings.processing_guarantee,
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_request_timeout=max(40.0, settings.session_timeout_s * 2),
        # Under exactly-once the normalize agent commits each checkpoint's transaction itself,
        # right after acknowledging its input (agents.normalize._commit_transaction); a commit
        # on Faust's timer or after N acknowledgements could split a batch's outputs from its
        # offsets and state.
        broker_commit_interval=settings.commit_interval_s if not eos else 24 * 3600.0,
        broker_commit_every=10_000 if not eos else 2**31,
        broker_max_poll_records=min(settings.batch_max, 500),  # larger polls stall rebalances (notes §4.1)
        # Faust stops fetching a partition whose stream queue passes 4/5 of this (flow control)
        # until it halves. At its default, 4096, next to a take_events batch of up to 2,000,
        # interleaved partitions were paused and resumed in turn and W1 ran at half speed.
        # The raw topic no longer goes through a stream queue (agents.intake);
        # the sink's streams still do.
        stream_buffer_maxsize=8192,
        # A rebalance or a stop does not wait for events being processed: both agents are
        # idempotent under re-delivery (the normalize agent fences replays, the sink
        # upserts), and the normalize agent holds its messages across checkpoints, which a
        # rebalance abandons (Faust's wait_empty would wait for them forever when the sink
        # reads the raw topic too). Pitfalls §4.1.
        stream_wait_empty=False,
        table_standby_replicas=settings.standby_replicas,
        table_cleanup_interval=30.0,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_in_thread=False,
        Monitor=AuroraMonitor,
        TableManager=FastTableManager,
    )
    app.aurora_settings = settings
    app.state_caches = []
    raw = app.topic(settings.topic_raw, partitions=settings.partitions)
    app.raw_intake = RawIntake(maxsize=_RAW_INTAKE_MESSAGES)
    device_state = define_device_state(app, settings)
    days, recent, forecasts = define_view_tables(app, settings)
    attach_normalize(app, device_state, build_processor(settings), settings, (days, recent, forecasts))
    sink = attach_sink(app, settings) if settings.database_url else None
    # The consumer hands raw messages to the normalize agent's intake, not to a stream (see
    # agents.intake). When the sink's stream reads the raw topic too, it subscribes it (and
    # its messages also go to that stream); otherwise the topic is subscribed here, with no
    # stream to deliver to.
    app.raw_shared = sink is not None and settings.topic_raw in sink.channel.topics
    if not app.raw_shared:
        app.topics.add(raw)
    install_error_pages()
    attach_ingest(app, settings)
    attach_api(app, settings, device_state, days, recent, forecasts)
    attach_openapi(app)
    attach_ops(app)
    attach_health(app)

    if settings.malloc_trim_interval_s > 0:

        @app.timer(settings.malloc_trim_interval_s)  # type: ignore[untyped-decorator]
        async def _return_free_memory() -> None:
            await asyncio.get_running_loop().run_in_executor(None, malloc.trim)

    @app.task  # type: ignore[untyped-decorator]
    async def _import_river() -> None:
        # Blocks the loop briefly (HoltWinters alone, a few ms; the whole package took 0.5 s
        # and 84 MB) while the consumer group forms, not before the worker joins it.
        preload()

    @app.task  # type: ignore[untyped-decorator]
    async def _register_metrics() -> None:
        tables = {
            "device_state": device_state,
            "device_days": days,
            "recent_anomalies": recent,
            "forecasts": forecasts,
        }
        register_collector(app, tables, settings.datadir)

    return app
