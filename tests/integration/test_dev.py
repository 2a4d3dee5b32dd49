"""`aurora-streams dev`, the README's run command: everything starts, data flows, Ctrl-C
stops every child."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aurora_streams.devpostgres import LocalPostgres
from tests.integration.harness import REPO, free_port
from tests.integration.test_sink_e2e import wait_rows


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _dev_env(tmp_path: Path) -> tuple[dict[str, str], int]:
    broker_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURORA_")}
    env.update(
        {
            "AURORA_BROKER_URL": f"kafka://127.0.0.1:{broker_port}",
            "AURORA_WEB_PORT": str(web_port),
            "AURORA_DATADIR": str(tmp_path / "data"),
            "AURORA_SESSION_TIMEOUT_S": "6",
        }
    )
    return env, web_port


def _new_readings(web_port: int) -> float:
    """Readings the worker counted as new (not replays of what it had stored)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=2) as resp:
            body = resp.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(v) for v in re.findall(r'^aurora_readings_processed_total\{outcome="new"\} (\S+)', body, re.M)
    )


def _run_dev(
    env: dict[str, str], web_port: int, extra: list[str], deadline: float, *, group: bool = False
) -> None:
    """Start `aurora-streams dev`, wait until its worker has normalized new readings, then
    stop it with SIGINT (with ``group``, to its whole process group, as Ctrl-C in a terminal
    does, started as a background job, with SIGINT ignored) and check that it exits cleanly
    and every child it named has exited."""
    cmd = [sys.executable, "-m", "aurora_streams", "dev", "--devices", "20", "--rate", "200", *extra]
    if group:  # as a shell starts a background job: SIGINT ignored, kept across exec
        cmd = ["bash", "-c", 'trap "" INT; exec "$@"', "dev", *cmd]
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=group
    )
    assert proc.stderr is not None
    banner: list[str] = []
    pids: list[int] = []
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            banner.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(banner)
        assert "aurora-streams dev is running" in text, text
        pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
        assert len(pids) == 3
        while time.monotonic() < deadline and _new_readings(web_port) == 0:
            time.sleep(1)
        assert _new_readings(web_port) > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=2) as resp:
            assert resp.status == 200
        if "--with-postgres" in extra:
            url = re.search(r"sink\s+(postgresql://\S+)", text)
            assert url, text
            wait_rows(url[1], "SELECT count(*) FROM readings", 1, timeout=60)
    finally:
        if group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        proc.wait(60)
    rest = proc.stderr.read()
    proc.stderr.close()
    assert proc.returncode == 0 and "Error" not in rest, rest
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize("with_postgres", [False, True], ids=["broker-only", "with-postgres"])
def test_dev_runs_everything_and_stops_cleanly(tmp_path: Path, with_postgres: bool) -> None:
    env, web_port = _dev_env(tmp_path)
    pg_port = free_port()
    extra = ["--with-postgres", "--postgres-port", str(pg_port)] if with_postgres else []
    _run_dev(env, web_port, extra, time.monotonic() + 90)
    if with_postgres:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", pg_port), timeout=1).close()
        shutil.rmtree(
            LocalPostgres((tmp_path / "data" / "postgres").resolve(), pg_port).basedir, ignore_errors=True
        )


def test_dev_stops_cleanly_on_a_sigint_to_its_process_group(tmp_path: Path) -> None:
    env, web_port = _dev_env(tmp_path)
    _run_dev(env, web_port, [], time.monotonic() + 90, group=True)


def test_a_second_dev_run_on_the_same_data_dir_normalizes_new_readings(tmp_path: Path) -> None:
    # The broker keeps its topics in the data dir across runs, beside the worker's tables:
    # the second run resumes from the committed offsets, and its readings are new, not
    # fenced as replays of the first run's. Both runs' raw records are still there.
    env, web_port = _dev_env(tmp_path)
    _run_dev(env, web_port, [], time.monotonic() + 90)
    assert any((tmp_path / "data" / "broker").rglob("meta.properties")), "the first run left no broker data"
    env2, web_port = _dev_env(tmp_path)
    env2["AURORA_BROKER_URL"] = env["AURORA_BROKER_URL"]  # the same broker, restarted on its data
    _run_dev(env2, web_port, [], time.monotonic() + 90)
