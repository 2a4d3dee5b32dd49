"""A throwaway PostgreSQL server on loopback, from Debian's packages, for dev and tests.

PostgreSQL refuses to run as root, so when we are root the cluster is created and run as
the ``postgres`` system user (the Debian package creates it), in a directory that user owns.
Authentication is ``trust`` on 127.0.0.1 only: this is a development server, never a
production one.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aurora_streams.errors import AuroraError

__all__ = ["LocalPostgres", "pg_bindir"]


class PostgresUnavailable(AuroraError):
    """PostgreSQL binaries are missing. Operator action: ``apt-get install postgresql``."""


def pg_bindir() -> Path:
    """Directory holding ``initdb`` and ``pg_ctl`` (newest Debian version, or PATH)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PostgresUnavailable("PostgreSQL is not installed: apt-get install postgresql")


@dataclass
class LocalPostgres:
    """A cluster under ``basedir`` listening on 127.0.0.1:``port``."""

    basedir: Path
    port: int
    durable: bool = True
    """False turns fsync off: faster, and fine for tests that never crash the OS."""

    @classmethod
    def in_tempdir(cls, port: int, *, durable: bool = False) -> LocalPostgres:
        # Not under pytest's tmp dirs: those are private to root, and the server may run as
        # the postgres user.
        return cls(Path(tempfile.mkdtemp(prefix="aurora-pg-")), port, durable)

    def __post_init__(self) -> None:
        if os.geteuid() == 0 and not _reachable_by_postgres(self.basedir):
            # Root-private parents (pytest's tmp dirs, /root): keep the cluster where the
            # postgres user can reach it, at a stable place derived from the requested one.
            digest = hashlib.sha1(str(self.basedir.resolve()).encode()).hexdigest()[:10]
            self.basedir = Path(tempfile.gettempdir()) / f"aurora-pg-{digest}"

    @property
    def datadir(self) -> Path:
        return self.basedir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(pg_bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def init(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        self.basedir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.basedir, user.pw_uid, user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C",
        )

    def start(self, timeout: float = 30.0) -> None:
        self.init()
        options = f"-p {self.port} -k {self.basedir} -c listen_addresses=127.0.0.1 -c max_connections=50"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.basedir / "server.log"),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            check=False,
        )
        if result.returncode != 0:
            raise PostgresUnavailable(f"PostgreSQL did not start: {result.stderr.strip()}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.datadir), "status", check=False).returncode == 0

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.basedir, ignore_errors=True)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.basedir / "server.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise PostgresUnavailable(f"PostgreSQL not reachable on port {self.port}")


def _reachable_by_postgres(path: Path) -> bool:
    """Whether every existing ancestor of ``path`` can be traversed by the postgres user."""
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        return True
    for parent in [path.resolve(), *path.resolve().parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            continue
        if not st.st_mode & 0o001 and not (st.st_gid == user.pw_gid and st.st_mode & 0o010):
            return False
    return True


def _has_c_utf8() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return False
    return any(line.lower() in ("c.utf8", "c.utf-8") for line in out.splitlines())
