"""`aurora-streams dev`, the README's run command: everything starts, data flows, Ctrl-C
stops every child."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.integration.harness import REPO, free_port


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


def test_dev_runs_everything_and_stops_cleanly(tmp_path: Path) -> None:
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "aurora_streams", "dev", "--devices", "20", "--rate", "200"],
        env=env,
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    banner: list[str] = []
    deadline = time.monotonic() + 90
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
        processed = 0.0
        while time.monotonic() < deadline and processed == 0:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=2) as resp:
                    body = resp.read().decode()
            except OSError:
                continue
            processed = sum(
                float(v) for v in re.findall(r"^aurora_readings_processed_total\{[^}]*\} (\S+)", body, re.M)
            )
        assert processed > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=2) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert not any(_alive(pid) for pid in pids)
