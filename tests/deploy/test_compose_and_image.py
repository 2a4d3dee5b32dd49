"""docker-compose.yml and the Dockerfile. No Docker engine runs here: the compose file is
checked by ``docker compose config`` where the compose plugin exists, and always
structurally; the image's rules (multi-stage, non-root, pinned base) are read from the
Dockerfile."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) or Debian's ``docker-compose``, whichever exists."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_validates(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")

    def config(path: Path) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*command, "-f", str(path), "config", "-q"], capture_output=True)

    done = config(ROOT / "docker-compose.yml")
    assert done.returncode == 0, done.stderr.decode()
    broken = compose()
    broken["services"]["worker-1"]["depends_on"] = {"topics": {"condition": "when_it_feels_like_it"}}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    assert config(tmp_path / "docker-compose.yml").returncode != 0


def test_the_platform_services() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    from aurora_streams.devbroker import KAFKA_VERSION

    # One broker story: production's compose runs the version dev and tests run.
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    for one_shot, command in (("topics", ["topics", "create"]), ("migrate", ["db", "migrate"])):
        assert services[one_shot]["command"] == command and services[one_shot]["restart"] == "no"
    workers = [s for name, s in services.items() if name.startswith("worker-")]
    assert len(workers) == 2
    hosts = {w["environment"]["AURORA_WEB_HOST"] for w in workers}
    volumes = {w["volumes"][0].split(":")[0] for w in workers}
    assert len(hosts) == 2 and len(volumes) == 2 and volumes <= set(compose()["volumes"])
    for w in workers:
        assert w["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert "simulate" in services["simulator"]["command"]
    for tool in ("prometheus", "grafana"):
        for mount in services[tool]["volumes"]:
            assert (ROOT / mount.split(":")[0]).exists(), mount


def test_no_unpinned_images() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image", "")
        assert not image.endswith(":latest") and (":" in image or "build" in service), name


def test_dockerfile_is_multi_stage_non_root_and_pinned() -> None:
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert len(bases) >= 2
    for base in bases:
        assert re.search(r":\d+\.\d+\.\d+", base), f"{base} is not pinned to a patch version"
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert "HEALTHCHECK" in text and "/healthz" in text
