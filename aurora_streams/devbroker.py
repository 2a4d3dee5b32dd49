"""The embedded broker for dev, tests and benchmarks: Apache Kafka 3.9 (single node, KRaft)
run from its jars on Java 17+, on loopback. DESIGN.md, Brokers.

Ordering of a start (:func:`start_broker`):

1. the jars: ``org.apache.kafka:kafka_2.13`` and its runtime dependencies, pinned in
   ``kafka-pom.xml`` beside this module, resolved from Maven Central by Maven into a
   per-user cache once (:func:`ensure_jars`); later starts reuse the cache, offline;
2. ``server.properties`` and ``log4j.properties`` are (re)written under the data dir from
   the arguments, so a restart with other settings takes them;
3. the log dir is formatted with a new cluster id only when it holds no ``meta.properties``
   (first start): a restart keeps every topic, offset and committed group position;
4. ``java ... kafka.Kafka server.properties`` starts; the call returns once the broker
   answers a metadata request, not merely once its port accepts connections.

It is the same broker as production (transactions, retention, compaction and offsets behave
as they will there). Retention is set by time and by bytes per partition for topics that do
not override it, so a dev platform left running for a week stays bounded on disk.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING

from aurora_streams.errors import BrokerError

if TYPE_CHECKING:
    from aurora_streams.settings import Settings

__all__ = [
    "KAFKA_VERSION",
    "BrokerConfig",
    "check_java",
    "ensure_jars",
    "kafka_cache_dir",
    "prepare",
    "run_foreground",
    "start_broker",
    "stop_process",
    "wait_for_port",
    "wait_until_serving",
]

KAFKA_VERSION = "3.9.1"
"""Pinned with its dependencies in ``kafka-pom.xml``; the docker-compose image is the same line."""

_JAVA_INSTALL_HINT = (
    "install a Java 17+ runtime (Debian/Ubuntu: `sudo apt-get install openjdk-17-jre-headless`; "
    "macOS: `brew install openjdk@17`), or put one on PATH / set JAVA_HOME"
)
_MAVEN_INSTALL_HINT = (
    "install Maven (Debian/Ubuntu: `sudo apt-get install maven`; macOS: `brew install maven`)"
)


def _pom() -> bytes:
    return (resources.files("aurora_streams") / "kafka-pom.xml").read_bytes()


def kafka_cache_dir() -> Path:
    """Where the jars are kept: ``AURORA_KAFKA_CACHE`` or ``$XDG_CACHE_HOME/aurora-streams``
    (``~/.cache/aurora-streams``), one sub-directory per pinned dependency set."""
    root = os.environ.get("AURORA_KAFKA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aurora-streams"
    )
    digest = hashlib.sha256(_pom()).hexdigest()[:12]
    return Path(root) / f"kafka-{KAFKA_VERSION}-{digest}"


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError(f"no Java runtime found: {_JAVA_INSTALL_HINT}")
    return found


def check_java() -> tuple[str, int]:
    """The java executable and its major version; :class:`BrokerError` saying what to
    install when there is none, or it is older than 17."""
    java = _java()
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"{java} -version failed ({exc}): {_JAVA_INSTALL_HINT}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise BrokerError(f"cannot read the version of {java}: {_JAVA_INSTALL_HINT}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < 17:
        raise BrokerError(
            f"{java} is Java {major}; Apache Kafka {KAFKA_VERSION} needs 17+: {_JAVA_INSTALL_HINT}"
        )
    return java, major


def ensure_jars(*, say: Callable[[str], None] | None = None) -> Path:
    """The directory holding Kafka's jars, fetching them with Maven on first use.

    Safe when several processes start at once (a file lock; the directory appears complete
    or not at all). ``say`` receives progress messages for a human."""
    libdir = kafka_cache_dir() / "lib"
    if (libdir / ".complete").exists():
        return libdir
    libdir.parent.mkdir(parents=True, exist_ok=True)
    with open(libdir.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libdir / ".complete").exists():
            return libdir
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError(
                f"Apache Kafka {KAFKA_VERSION}'s jars are not cached in {libdir.parent} and Maven is "
                f"not installed to fetch them: {_MAVEN_INSTALL_HINT}"
            )
        if say:
            say(
                f"fetching Apache Kafka {KAFKA_VERSION} (57 jars, ~46 MB) from Maven Central into "
                f"{libdir.parent}; first run only, about 15-60 s..."
            )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=libdir.parent) as tmp:
            pom = Path(tmp) / "pom.xml"
            pom.write_bytes(_pom())
            out = Path(tmp) / "lib"
            proc = subprocess.run(
                [
                    mvn,
                    "-B",
                    "-q",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={out}",
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0 or not any(out.glob("kafka_2.13-*.jar")):
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise BrokerError(f"Maven could not fetch Apache Kafka {KAFKA_VERSION}'s jars:\n{tail}")
            (out / ".complete").write_text(KAFKA_VERSION)
            if libdir.exists():
                shutil.rmtree(libdir)
            out.rename(libdir)
        if say:
            say(f"fetched {len(list(libdir.glob('*.jar')))} jars in {time.monotonic() - started:.0f} s")
    return libdir


@dataclass(frozen=True)
class BrokerConfig:
    """One single-node KRaft broker. ``datadir`` holds its config, log dirs and metadata."""

    host: str
    port: int
    datadir: Path
    heap_mb: int = 512
    retention_hours: int = 168
    retention_bytes: int = 512 * 1024 * 1024
    """Per partition, for topics that set no ``retention.bytes`` of their own."""
    segment_bytes: int = 64 * 1024 * 1024
    """Retention deletes whole segments: smaller segments bound a partition tighter."""
    retention_check_ms: int = 60_000
    """How often retention runs. Kafka's time retention deletes by *record timestamp*, the
    active segment too (it rolls it first): records stamped more than ``retention.ms`` ago
    go at the next check whether or not anyone read them."""

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerConfig:
        """Listens at the first address of ``AURORA_BROKER_URL``; data in ``AURORA_DATADIR/broker``."""
        host, port = settings.bootstrap_servers.split(",")[0].rsplit(":", 1)
        return cls(
            host,
            int(port),
            Path(settings.datadir) / "broker",
            heap_mb=settings.broker_heap_mb,
            retention_hours=settings.broker_retention_hours,
            retention_bytes=settings.broker_retention_bytes,
        )

    @property
    def logdir(self) -> Path:
        return self.datadir / "kraft-logs"

    def server_properties(self, controller_port: int) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.logdir.resolve()),
            # DESIGN.md, Partitions: the app creates its topics; a typo never makes a new one.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            # Fewer internal partitions: faster first start, and a dev broker has few groups.
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            # A group forms at once: the 3-s default delays every worker start and test.
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": str(self.retention_hours),
            "log.retention.bytes": str(self.retention_bytes),
            "log.segment.bytes": str(self.segment_bytes),
            "log.retention.check.interval.ms": str(self.retention_check_ms),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())


_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.log=WARN
"""


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding, as
    ``kafka-storage random-uuid`` prints it (saves a JVM start)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _java_opts(heap_mb: int) -> list[str]:
    return [
        f"-Xms{heap_mb}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        # The JIT and GC sized for a small machine: Kafka runs beside the workers.
        "-XX:CICompilerCount=2",
        "-XX:ParallelGCThreads=2",
        "-XX:ConcGCThreads=1",
        "-Djava.awt.headless=true",
    ]


def prepare(config: BrokerConfig, *, say: Callable[[str], None] | None = None) -> list[str]:
    """Steps 1-3 of a start (jars, config files, format on first start); the command line
    that runs the broker."""
    java, _ = check_java()
    libdir = ensure_jars(say=say)
    config.datadir.mkdir(parents=True, exist_ok=True)
    props = config.datadir / "server.properties"
    props.write_text(config.server_properties(_free_port()))
    log4j = config.datadir / "log4j.properties"
    log4j.write_text(_LOG4J)
    classpath = f"{libdir}/*"
    if not (config.logdir / "meta.properties").exists():
        config.logdir.mkdir(parents=True, exist_ok=True)
        fmt = subprocess.run(
            [
                java,
                "-Xmx256m",
                f"-Dlog4j.configuration=file:{log4j.resolve()}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                # One argument, not two: a random id can start with "-", which argparse would
                # take for an option.
                f"--cluster-id={_cluster_id()}",
                "-c",
                str(props),
            ],
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            raise BrokerError(
                f"formatting {config.logdir} failed: {(fmt.stdout + fmt.stderr).strip()[-2000:]}"
            )
    return [
        java,
        *_java_opts(config.heap_mb),
        f"-Dlog4j.configuration=file:{log4j.resolve()}",
        f"-Dkafka.logs.dir={config.datadir.resolve()}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(props),
    ]


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"nothing listens on {host}:{port} after {timeout:g} s")


def wait_until_serving(
    host: str, port: int, *, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until the broker answers a metadata request naming itself (its port opens a moment
    before the KRaft controller has registered it)."""
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    deadline = time.monotonic() + timeout
    while True:  # the port first, so librdkafka does not log a refused connection every 50 ms
        if proc is not None and proc.poll() is not None:
            raise BrokerError(
                f"the broker exited with {proc.returncode} while starting (is {host}:{port} in use?)"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerError(f"nothing listens on {host}:{port} after {timeout:g} s") from None
            time.sleep(0.1)
    admin = AdminClient({"bootstrap.servers": f"{host}:{port}", "socket.timeout.ms": 2000, "log_level": 2})
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(
                f"the broker exited with {proc.returncode} while starting (is {host}:{port} in use?)"
            )
        try:
            md = admin.list_topics(timeout=2)
            if md.brokers:
                return
        except Exception as exc:  # KafkaException while it starts
            last = exc
        time.sleep(0.2)
    raise BrokerError(f"the broker on {host}:{port} did not answer metadata within {timeout:g} s: {last}")


def start_broker(
    config: BrokerConfig,
    *,
    log: IO[bytes] | None = None,
    say: Callable[[str], None] | None = None,
    timeout: float = 90.0,
) -> subprocess.Popen[bytes]:
    """Start the broker as a child process and return once it serves metadata."""
    cmd = prepare(config, say=say)
    proc = subprocess.Popen(
        cmd,
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(config.host, config.port, timeout=timeout, proc=proc)
    except BrokerError:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop a process we started, by its pid: SIGTERM, then SIGKILL after ``timeout``.
    Kafka's controlled shutdown on SIGTERM takes a few seconds; its logs stay consistent."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_foreground(config: BrokerConfig, *, say: Callable[[str], None]) -> int:
    """Run the broker until SIGINT or SIGTERM (each stops it cleanly); its exit status."""
    import signal

    proc = subprocess.Popen(prepare(config, say=say), stdin=subprocess.DEVNULL)

    def forward(_signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        wait_until_serving(config.host, config.port, timeout=90, proc=proc)
    except BrokerError:
        stop_process(proc)
        raise
    say(
        f"Apache Kafka {KAFKA_VERSION} (KRaft, single node) listens on {config.host}:{config.port}; "
        f"data in {config.datadir} (pid {proc.pid}; Ctrl-C stops it)"
    )
    code = proc.wait()
    # The JVM exits 143 (128 + SIGTERM) after its shutdown hook stopped Kafka cleanly.
    return 0 if code == 143 else code


if __name__ == "__main__":  # pragma: no cover
    print(ensure_jars(say=lambda m: print(m, file=sys.stderr)))
