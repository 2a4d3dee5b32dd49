"""Schemathesis against /openapi.json on a real worker: no 5xx, and every response (status,
content type, headers, body) conforms to the published schema. Runs the schemathesis CLI
(its pytest plugin does not support pytest 9)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import Deployment

TOKEN = "s" * 32
#: Every check runs (schemathesis's default; a --checks option would override the file):
#: no 5xx, every response as documented, schema-valid requests accepted and schema-violating
#: ones refused, with the exceptions in schemathesis.toml, each explained there.
CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_api_conforms_to_its_openapi_document(broker: str, tmp_path: Path) -> None:
    dep = Deployment(broker, tmp_path)
    dep.create_topics()
    dep.extra_env["AURORA_API_TOKENS"] = json.dumps({"admin": {"token": TOKEN, "roles": ["admin"]}})
    worker = dep.start_worker("contract")
    try:
        worker.wait_ready()
        cli = Path(sys.executable).with_name("schemathesis")
        if not cli.exists():
            pytest.skip("schemathesis is not installed")
        result = subprocess.run(
            [
                str(cli),
                "--config-file",
                str(CONFIG),
                "run",
                f"http://127.0.0.1:{worker.port}/openapi.json",
                "-H",
                f"Authorization: Bearer {TOKEN}",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--exclude-path",
                "/readyz",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stdout[-6000:]
    finally:
        dep.stop_all()
