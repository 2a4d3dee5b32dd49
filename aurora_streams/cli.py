"""The ``aurora-streams`` command. Every subcommand reads the same ``AURORA_*`` settings."""

from __future__ import annotations

import functools
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from aurora_streams import __version__, malloc, native
from aurora_streams.errors import AuroraError
from aurora_streams.logs import logging_config, setup_logging
from aurora_streams.settings import Settings, load_settings

log = logging.getLogger("aurora_streams.cli")


def _settings() -> Settings:
    try:
        return load_settings()
    except AuroraError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aurora-streams")
def main() -> None:
    """aurora-streams: real-time energy meter data on Kafka.

    Settings come from AURORA_* environment variables (see `aurora-streams settings`).
    """


@main.command("settings")
def settings_cmd() -> None:
    """Print the effective settings as JSON, secrets masked (tokens, the JWT secret, the
    database password)."""
    s = _settings()
    doc = s.model_dump(mode="json")
    if doc.get("database_url"):
        doc["database_url"] = mask_url(doc["database_url"])
    click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def tune_gc() -> None:
    """Collect cyclic garbage far less often than CPython's default (every 700 net
    allocations). A worker keeps many long-lived containers (decoded device states, day
    records, River models) that every full collection traverses again; with the default
    thresholds collection took half of a busy worker's time. Our data structures
    hold no reference cycles, so little waits to be freed. Objects that exist at startup are
    moved out of the collector's sight altogether."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 1000)


@main.group("native")
def native_cmd() -> None:
    """The compiled core (mypyc): build it, or see whether it is in use."""


@native_cmd.command("build")
def native_build() -> None:
    """Compile the pure core with mypyc into AURORA_NATIVE_DIR (default build/native).
    Needs the native extra (mypy), a C compiler and the Python headers."""
    started = time.monotonic()
    click.echo(f"compiling {len(native.MODULES)} modules with mypyc (about 15 s)...", err=True)
    try:
        out = native.build()
    except Exception as exc:  # mypy errors, a missing compiler or headers: say so, exit 1
        raise click.ClickException(f"native build failed: {type(exc).__name__}: {exc}") from exc
    click.echo(f"built {out} in {time.monotonic() - started:.0f} s; used by processes started from now on")


@native_cmd.command("status")
@click.option("--require", is_flag=True, help="Exit 1 unless the compiled core is in use.")
def native_status(require: bool) -> None:
    """Whether this process runs the compiled core, and why not if it does not."""
    click.echo(native.STATUS)
    if require and not native.STATUS.startswith("on"):
        raise SystemExit(1)


@main.command()
@click.option(
    "--fetch-only", is_flag=True, help="Check Java and fetch (or find cached) Kafka's jars, then exit."
)
def broker(fetch_only: bool) -> None:
    """Run the embedded Apache Kafka broker (KRaft, single node) on AURORA_BROKER_URL, in the
    foreground, with its data under AURORA_DATADIR/broker. The first run fetches Kafka's jars
    from Maven Central (Java 17+ and Maven needed). Ctrl-C or SIGTERM stops it cleanly."""
    from aurora_streams.devbroker import KAFKA_VERSION, BrokerConfig, check_java, ensure_jars, run_foreground

    s = _settings()
    say = functools.partial(click.echo, err=True)
    if fetch_only:
        try:
            java, major = check_java()
            libdir = ensure_jars(say=say)
        except AuroraError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"Apache Kafka {KAFKA_VERSION}: jars in {libdir}; Java {major} at {java}")
        return
    try:
        code = run_foreground(BrokerConfig.from_settings(s), say=say)
    except AuroraError as exc:
        raise click.ClickException(str(exc)) from exc
    raise SystemExit(code)


@main.group()
def topics() -> None:
    """Create or check the topics the app owns."""


@topics.command("create")
def topics_create() -> None:
    """Create missing owned topics with AURORA_PARTITIONS partitions, then check them all."""
    from aurora_streams.topics import ensure_topics

    s = _settings()
    setup_logging(s.log_level, "text")
    try:
        created = ensure_topics(s)
    except AuroraError as exc:
        raise click.ClickException(str(exc)) from exc
    for name in created:
        click.echo(f"created {name}")
    click.echo(f"topics ok ({s.partitions} partitions)")


@topics.command("check")
def topics_check() -> None:
    """Exit non-zero, saying what to do, if an owned topic is missing or mismatched."""
    from aurora_streams.topics import check_topics

    s = _settings()
    try:
        check_topics(s)
    except AuroraError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("topics ok")


@main.group()
def db() -> None:
    """Database (TimescaleDB / PostgreSQL) for the sink: AURORA_DATABASE_URL."""


def _run_migrations(url: str) -> list[str]:
    import asyncio

    import asyncpg

    from aurora_streams.sinks.migrate import migrate

    async def run() -> list[str]:
        conn = await asyncpg.connect(url, timeout=15)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations (idempotent; TimescaleDB parts only where available)."""
    s = _settings()
    if not s.database_url:
        raise click.ClickException("AURORA_DATABASE_URL is not set")
    setup_logging(s.log_level, "text")
    try:
        applied = _run_migrations(s.database_url)
    except Exception as exc:
        raise click.ClickException(f"migration failed: {type(exc).__name__}: {exc}") from exc
    click.echo("\n".join(f"applied {name}" for name in applied) or "schema up to date")


@db.command("serve")
@click.option("--port", type=int, default=5432, show_default=True)
@click.option(
    "--dir",
    "basedir",
    type=click.Path(path_type=Path),
    default=Path("aurora-data/postgres"),
    show_default=True,
)
def db_serve(port: int, basedir: Path) -> None:
    """Run a local PostgreSQL (Debian's packages) on 127.0.0.1 for development, migrated.

    Prints the AURORA_DATABASE_URL to use; Ctrl-C stops it. Never for production.
    """
    from aurora_streams.devpostgres import LocalPostgres

    pg = LocalPostgres(basedir.resolve(), port)
    try:
        pg.start()
        _run_migrations(pg.url)
    except AuroraError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"PostgreSQL on 127.0.0.1:{port}; export AURORA_DATABASE_URL={pg.url}", err=True)
    try:
        while pg.running():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        pg.stop()


@main.command()
@click.option(
    "--create-topics/--no-create-topics",
    default=True,
    show_default=True,
    help="Create missing owned topics before starting.",
)
def worker(create_topics: bool) -> None:
    """Run a worker: the normalize agent, its table and the HTTP views on AURORA_WEB_PORT."""
    import faust

    from aurora_streams.app import create_app
    from aurora_streams.topics import check_topics, ensure_topics

    s = _settings()
    malloc.reexec_with(s.malloc)  # returns only once the allocator is the one asked for
    setup_logging(s.log_level, s.log_format)
    malloc.limit_arenas(s.malloc_arenas)  # before the app starts any thread
    malloc.fix_mmap_threshold(s.malloc_mmap_threshold_kib)
    log.info("worker starting; C allocator: %s", malloc.allocator_in_use())
    try:
        if create_topics:
            ensure_topics(s)
        else:
            check_topics(s)
    except AuroraError as exc:
        raise click.ClickException(f"refusing to start: {exc}") from exc
    Path(s.datadir).mkdir(parents=True, exist_ok=True)
    if s.processing_guarantee == "exactly_once":
        _drop_local_tables(Path(s.datadir))
    app = create_app(s)
    log.info(
        "worker starting: broker=%s web=http://%s:%d datadir=%s partitions=%d native=%s",
        s.bootstrap_servers,
        s.web_host,
        s.web_port,
        s.datadir,
        s.partitions,
        native.STATUS,
    )
    w = faust.Worker(app, loglevel=s.log_level, logging_config=logging_config(s.log_level, s.log_format))
    # At WARNING and above Faust's terminal spinner sets the root logger to DEBUG (to spin on
    # every record), so every library debug call builds a LogRecord: 7% of a busy worker's
    # time in the profile. We log to a pipe or a file anyway.
    w.spinner = None
    tune_gc()
    w.execute_from_commandline()


def _drop_local_tables(datadir: Path) -> None:
    """Under exactly-once, start from the committed changelogs, not from local RocksDB.

    Faust writes a table's local store at once and its changelog inside the transaction, so
    after a crash the local store holds the writes of transactions that were aborted: device
    states ahead of the committed input. Re-delivered input then met those states and made
    records a crash-free run never makes (the exactly-once crash test saw them). The
    changelogs are compacted, so the rebuild reads about one record per device and view key."""
    for tables in datadir.glob("v*/tables"):
        log.info("exactly_once: dropping local table state %s; it is rebuilt from the changelogs", tables)
        shutil.rmtree(tables)


@main.command()
@click.option("--devices", type=int, default=100, show_default=True)
@click.option(
    "--rate",
    type=float,
    default=200.0,
    show_default=True,
    help="Messages per second (0: as fast as possible).",
)
@click.option("--count", type=int, default=None, help="Stop after this many messages.")
@click.option("--duration", type=int, default=None, help="Stop after this many simulated seconds.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--start", "start", type=str, default=None, help="Simulated start (ISO-8601; default 30 days ago)."
)
@click.option(
    "--live/--no-live",
    default=True,
    show_default=True,
    help="Send no message before the wall clock reaches its simulated arrival: catch up from "
    "--start at --rate, then go on in real time (the broker stamps raw records on arrival, and "
    "readings ahead of it are future_timestamp).",
)
@click.option("--batch-size", type=int, default=1, show_default=True, help="Readings per gateway batch.")
@click.option("--encoding", type=click.Choice(["json", "avro", "mixed"]), default="mixed", show_default=True)
@click.option("--reset-rate", type=float, default=0.002, show_default=True)
@click.option("--rollover-share", type=float, default=0.05, show_default=True)
@click.option("--late-rate", type=float, default=0.005, show_default=True)
@click.option("--very-late-rate", type=float, default=0.0005, show_default=True)
@click.option("--duplicate-rate", type=float, default=0.002, show_default=True)
@click.option("--jump-rate", type=float, default=0.001, show_default=True)
@click.option("--gap-rate", type=float, default=0.002, show_default=True)
@click.option("--zero-run-rate", type=float, default=0.00005, show_default=True)
@click.option("--negative-rate", type=float, default=0.0005, show_default=True)
@click.option("--estimate-rate", type=float, default=0.002, show_default=True)
@click.option("--future-rate", type=float, default=0.0005, show_default=True)
@click.option("--malformed-rate", type=float, default=0.0005, show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def simulate(
    devices: int,
    rate: float,
    count: int | None,
    duration: int | None,
    seed: int,
    start: str | None,
    batch_size: int,
    encoding: str,
    reset_rate: float,
    rollover_share: float,
    late_rate: float,
    very_late_rate: float,
    duplicate_rate: float,
    jump_rate: float,
    gap_rate: float,
    zero_run_rate: float,
    negative_rate: float,
    estimate_rate: float,
    future_rate: float,
    malformed_rate: float,
    live: bool,
    no_progress: bool,
) -> None:
    """Produce simulated meter readings to the raw topic."""
    from aurora_streams.domain.timeutil import parse_timestamp
    from aurora_streams.simulator import SimConfig, generate, produce

    s = _settings()
    # Thirty days back: at the default rate the fleet catches up over about two hours, then
    # runs live (--live), so its readings reach the views, the forecasts and the sink at once.
    start_ms = parse_timestamp(start) if start else int(time.time() * 1000) - 30 * 86_400_000
    cfg = SimConfig(
        devices=devices,
        seed=seed,
        start_ms=start_ms,
        batch_size=batch_size,
        encoding=encoding,
        reset_rate=reset_rate,
        rollover_share=rollover_share,
        late_rate=late_rate,
        very_late_rate=very_late_rate,
        duplicate_rate=duplicate_rate,
        jump_rate=jump_rate,
        gap_rate=gap_rate,
        zero_run_rate=zero_run_rate,
        negative_rate=negative_rate,
        estimate_rate=estimate_rate,
        future_rate=future_rate,
        malformed_rate=malformed_rate,
    )
    click.echo(
        f"simulating {devices} meters -> {s.topic_raw} at {s.bootstrap_servers}"
        f" ({'unlimited' if not rate else f'{rate:g} msg/s'})",
        err=True,
    )
    try:
        sent = produce(
            generate(cfg, limit=count, duration_s=duration),
            bootstrap=s.bootstrap_servers,
            topic=s.topic_raw,
            rate=rate or None,
            total=count,
            progress=not no_progress,
            live=live,
        )
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
        return
    click.echo(f"sent {sent} messages", err=True)


@main.command()
@click.option("--devices", type=int, default=200, show_default=True)
@click.option("--rate", type=float, default=200.0, show_default=True)
@click.option(
    "--with-postgres",
    is_flag=True,
    help="Also run a local PostgreSQL (Debian's packages) and the sink into it.",
)
@click.option("--postgres-port", type=int, default=5432, show_default=True)
def dev(devices: int, rate: float, with_postgres: bool, postgres_port: int) -> None:
    """Everything in one process tree: embedded broker, topics, a worker, the simulator.

    With AURORA_DATABASE_URL set (or --with-postgres) the worker also runs the sink.
    Ctrl-C stops all of it (each child by its pid).
    """
    from aurora_streams.devbroker import (
        KAFKA_VERSION,
        BrokerConfig,
        start_broker,
        stop_process,
        wait_for_port,
    )
    from aurora_streams.devpostgres import LocalPostgres
    from aurora_streams.topics import ensure_topics

    s = _settings()
    pg: LocalPostgres | None = None
    worker_env = dict(os.environ)
    dev_token = None
    if not s.api_tokens:
        import secrets

        # A token for this dev session only, so the ingest endpoints can be tried at once.
        dev_token = secrets.token_urlsafe(24)
        worker_env["AURORA_API_TOKENS"] = orjson.dumps(
            {"dev": {"token": dev_token, "roles": ["admin"]}}
        ).decode()
    logdir = Path(s.datadir) / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def stop_all(*_: Any) -> None:
        for name, proc in reversed(children):
            click.echo(f"stopping {name} (pid {proc.pid})", err=True)
            stop_process(proc, timeout=15)
        children.clear()
        if pg is not None:
            click.echo("stopping postgres", err=True)
            pg.stop()

    def on_stop_signal(*_: Any) -> None:
        # SIGTERM stops everything, like Ctrl-C. SIGINT is handled here too: a shell starts a
        # background job with SIGINT ignored, but the broker exits on it, so a SIGINT to the
        # process group left dev reporting "broker exited" over a half-stopped platform.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGINT, on_stop_signal)
    try:
        with open(logdir / "broker.log", "ab") as blog:
            children.append(
                (
                    "broker",
                    start_broker(
                        BrokerConfig.from_settings(s), log=blog, say=lambda m: click.echo(m, err=True)
                    ),
                )
            )
        created = ensure_topics(s)
        click.echo(f"topics ready ({s.partitions} partitions; created {len(created)})", err=True)
        database_url = s.database_url
        if with_postgres:
            pg = LocalPostgres((Path(s.datadir) / "postgres").resolve(), postgres_port)
            pg.start()
            database_url = worker_env["AURORA_DATABASE_URL"] = pg.url
        if database_url:
            applied = _run_migrations(database_url)
            click.echo(f"database ready ({len(applied)} migrations applied)", err=True)
        exe = [sys.executable, "-m", "aurora_streams"]
        with open(logdir / "worker.log", "ab") as wlog:
            worker = subprocess.Popen([*exe, "worker"], stdout=wlog, stderr=subprocess.STDOUT, env=worker_env)
            children.append(("worker", worker))
        wait_for_port(s.web_host, s.web_port, timeout=60)
        with open(logdir / "simulator.log", "ab") as slog:
            children.append(
                (
                    "simulator",
                    subprocess.Popen(
                        [*exe, "simulate", "--devices", str(devices), "--rate", str(rate), "--no-progress"],
                        stdout=slog,
                        stderr=subprocess.STDOUT,
                    ),
                )
            )
        base = f"http://{s.web_host}:{s.web_port}"
        sink = _redact(database_url) if database_url else "off (AURORA_DATABASE_URL unset)"
        click.echo(
            "\n".join(
                [
                    "aurora-streams dev is running:",
                    f"  broker     {s.bootstrap_servers} (Apache Kafka {KAFKA_VERSION}, KRaft; "
                    f"pid {children[0][1].pid}; data in {Path(s.datadir) / 'broker'})",
                    f"  worker     {base}  (pid {children[1][1].pid}; /healthz /readyz /metrics)",
                    f"  ops page   {base}/  (enter the API token below)",
                    f"  simulator  {devices} meters at {rate:g} msg/s (pid {children[2][1].pid})",
                    f"  topics     {s.topic_raw} -> {s.topic_normalized}, {s.topic_anomalies}, "
                    f"{s.topic_forecasts}, {s.topic_dlq}",
                    f"  sink       {sink}",
                    f"  API token  {dev_token} (admin; this session only)"
                    if dev_token
                    else "  API token  from AURORA_API_TOKENS",
                    f"  logs       {logdir}/",
                    "Ctrl-C stops everything.",
                ]
            ),
            err=True,
        )
        while all(p.poll() is None for name, p in children if name != "simulator"):
            time.sleep(0.5)
        dead = [n for n, p in children if p.poll() is not None and n != "simulator"]
        raise click.ClickException(f"{', '.join(dead)} exited; see {logdir}/")
    except KeyboardInterrupt:
        pass
    except AuroraError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        stop_all()


@main.group()
def ingest() -> None:
    """Feed files to the raw topic."""


@ingest.command("nem12")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--lenient", is_flag=True, help="Ingest what can be read and report every breach (default: strict)."
)
@click.option("--dry-run", is_flag=True, help="Parse and summarize only; publish nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True)
def ingest_nem12(
    files: tuple[Path, ...], lenient: bool, dry_run: bool, as_json: bool, no_progress: bool
) -> None:
    """Read NEM12 files (CSV or zip) and publish one gateway batch per NMI channel day.

    Strict mode rejects a file at its first breach of the specification (file, line, rule)
    and publishes nothing of it; --lenient publishes what it can and lists every problem.
    """
    from tqdm import tqdm

    from aurora_streams.errors import DeliveryFailed
    from aurora_streams.ingest.nem12 import Nem12Error
    from aurora_streams.ingest.publish import ingest_reader, open_reader, text_size
    from aurora_streams.ingest.summary import IngestSummary
    from aurora_streams.kafka.producer import RecordProducer

    s = _settings()
    mode = "lenient" if lenient else "strict"
    summary = IngestSummary()
    producer = None if dry_run else RecordProducer(s.bootstrap_servers, linger_ms=20, compression="lz4")

    def send(key: bytes, value: bytes) -> None:
        assert producer is not None
        producer.produce(s.topic_raw, key, value)
        producer.poll(0)

    total = sum(text_size(p) for p in files)
    rejected: list[str] = []
    with tqdm(total=total, unit="B", unit_scale=True, disable=no_progress or as_json, mininterval=0.3) as bar:
        for path in files:
            try:
                ingest_reader(
                    functools.partial(open_reader, path),
                    path.name,
                    mode=mode,  # type: ignore[arg-type]
                    sink=None if producer is None else send,
                    summary=summary,
                    progress=bar.update,
                )
            except Nem12Error as exc:
                rejected.append(str(exc))
                summary.problems.append(exc.problem)
    if producer is not None:
        try:
            producer.flush(60)
        except DeliveryFailed as exc:
            raise click.ClickException(str(exc)) from exc
    _print_summary(summary, as_json, published=producer is not None)
    if rejected:
        raise click.ClickException(
            f"{len(rejected)} file(s) rejected (nothing of them published): " + "; ".join(rejected)
        )
    refused = summary.problems.counts["id_refused"]
    if refused:
        raise click.ClickException(
            f"{refused} channel(s) refused: their device id or channel breaks the worker's rules "
            "(see problems); nothing of them was published"
        )


def _print_summary(summary: Any, as_json: bool, *, published: bool) -> None:
    doc = summary.to_dict()
    if as_json:
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    verb = "published" if published else "parsed (dry run)"
    click.echo(
        f"files {doc['files']}  NMIs {len(doc['nmis'])}  channels {len(doc['channels'])}  "
        f"readings {doc['readings']}  batches {verb}: {doc['messages']}  "
        f"readings {verb}: {doc['published_readings']}"
    )
    click.echo(
        f"{'NMI':<12} {'channel':<7} {'unit':<6} {'min':>3} {'readings':>9} {'total':>14}  first -> last"
    )
    for c in doc["channels"]:
        click.echo(
            f"{c['nmi']:<12} {c['channel']:<7} {c['unit']:<6} {c['interval_min']:>3} {c['readings']:>9} "
            f"{c['total']:>14.3f}  {c['first']} -> {c['last']}"
        )
    problems = doc["problems"]
    click.echo(f"problems: {len(problems) + doc['problems_not_listed']}")
    for p in problems[:50]:
        click.echo(f"  {p['severity']}: {p['file']}:{p['line']}: {p['rule']}: {p['message']}")
    if len(problems) > 50:
        click.echo(f"  ... and {len(problems) - 50} more (use --json for them)")
    if doc["problems_not_listed"]:
        counts = ", ".join(f"{rule} {n}" for rule, n in doc["problem_counts"].items())
        click.echo(f"  {doc['problems_not_listed']} more not listed; by rule: {counts}")


@main.command()
@click.argument("topic", type=click.Choice(["raw", "normalized", "anomalies", "dlq"]))
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record, not the newest.")
@click.option("--count", type=int, default=None, help="Stop after this many records.")
@click.option("--timeout", type=float, default=None, help="Stop after this many idle seconds.")
def tail(topic: str, from_beginning: bool, count: int | None, timeout: float | None) -> None:
    """Print records of an owned topic as JSON lines (decoded from either encoding)."""
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    from aurora_streams.codecs import decode_output, decode_raw

    s = _settings()
    name = getattr(s.topics, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": s.bootstrap_servers,
            "group.id": f"tail-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    md = consumer.list_topics(name, timeout=10).topics.get(name)
    if md is None or md.error is not None:
        raise click.ClickException(f"topic {name} not found; run `aurora-streams topics create`")
    consumer.assign([TopicPartition(name, p, start) for p in md.partitions])
    seen, idle_since = 0, time.monotonic()
    try:
        while count is None or seen < count:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                if timeout is not None and time.monotonic() - idle_since > timeout:
                    break
                continue
            idle_since = time.monotonic()
            value = msg.value()
            try:
                if value is None:
                    doc: Any = None
                elif topic == "raw":
                    doc = decode_raw(value, max_bytes=1 << 30)
                else:
                    doc = decode_output(value)
            except Exception as exc:  # show undecodable records rather than stopping
                doc = {"undecodable": repr(value[:200]) if value else None, "error": str(exc)}
            click.echo(orjson.dumps(doc, default=str).decode())
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _redact(url: str) -> str:
    """The URL without its password, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--suffix", default=None, help="Channel to use when the file holds several (e.g. E1).")
@click.option("--window", "window_min", type=int, default=30, show_default=True, help="Window minutes.")
@click.option("--season-days", type=int, default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def backtest(file: Path, suffix: str | None, window_min: int, season_days: int, as_json: bool) -> None:
    """Replay a series (CSV with t_end, value[, suffix]) through the online forecaster and
    print its accuracy against the seasonal-naive baseline, per horizon."""
    from aurora_streams.backtest import backtest as run
    from aurora_streams.backtest import load_windows
    from aurora_streams.domain.forecast import ForecastConfig

    windows = load_windows(file, window_min=window_min, suffix=suffix)
    if not windows:
        raise click.ClickException("no readings in the file (check --suffix)")
    day = 1440 // window_min
    horizons = sorted({1, 2, max(1, day // 8), max(1, day // 4), max(1, day // 2), day})
    result = run(
        windows,
        window_ms=window_min * 60_000,
        config=ForecastConfig(season_days=season_days),
        horizons=horizons,
    )
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "windows": result.windows,
                    "horizons": result.horizons,
                    "day_ahead": result.day_ahead,
                    "state_bytes": result.state_bytes,
                },
                option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
            ).decode()
        )
        return
    click.echo(f"{result.windows} windows of {window_min} min; model state {result.state_bytes} bytes")
    click.echo(f"{'ahead':>8} {'MAE':>10} {'naive MAE':>10} {'ratio':>7}")
    for h, row in result.horizons.items():
        click.echo(
            f"{h * window_min / 60:>7.1f}h {row['mae']:>10.4f} {row['naive_mae']:>10.4f} {row['ratio']:>7.3f}"
        )
    d = result.day_ahead
    if d.get("scored"):
        click.echo(
            f"day-ahead (online): MAE ratio {d['mae_ratio']:.3f}, sMAPE {d['smape']:.3f}, "
            f"90% interval coverage {d['coverage']:.3f} over {d['scored']} windows"
        )


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the throughput benchmark (bench/throughput.py; see bench/README.md)."""
    script = Path("bench") / "throughput.py"
    if not script.exists():
        raise click.ClickException("run from the repository root (bench/throughput.py not found)")
    raise SystemExit(subprocess.call([sys.executable, str(script), *args]))


if __name__ == "__main__":
    main()
