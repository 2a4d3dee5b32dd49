"""The compiled core's loader: used only when the build matches every source it compiled.

Each case runs a fresh interpreter: activation happens once, when ``aurora_streams`` is
first imported. The build itself is made by scripts/bootstrap (scripts/test requires it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aurora_streams import native

PROBE = (
    "import aurora_streams.domain.device as d, aurora_streams.native as n, json; "
    "print(json.dumps([n.STATUS, d.__file__]))"
)


def probe(**env: str) -> tuple[str, str]:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("AURORA_NATIVE")} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=run_env, capture_output=True, text=True, check=True, timeout=60
    )
    status, file = json.loads(out.stdout)
    return status, file


@pytest.fixture
def build_copy(tmp_path: Path) -> Path:
    built = native.native_dir()
    if not (built / native.MANIFEST).is_file():
        pytest.skip(f"no native build in {built} (scripts/bootstrap makes it)")
    copy = tmp_path / "native"
    shutil.copytree(built, copy)
    return copy


def edit_manifest(directory: Path, change: dict[str, object]) -> None:
    path = directory / native.MANIFEST
    manifest = json.loads(path.read_text())
    manifest.update(change)
    path.write_text(json.dumps(manifest))


def test_a_current_build_replaces_the_pure_modules(build_copy: Path) -> None:
    status, file = probe(AURORA_NATIVE_DIR=str(build_copy))
    assert status == f"on ({build_copy})"
    assert file.startswith(str(build_copy)) and file.endswith(".so")


def test_a_changed_source_turns_the_build_off(build_copy: Path) -> None:
    manifest = json.loads((build_copy / native.MANIFEST).read_text())
    edit_manifest(build_copy, {"modules": manifest["modules"] | {"aurora_streams.domain.device": "0" * 64}})
    status, file = probe(AURORA_NATIVE_DIR=str(build_copy))
    assert status.startswith("off: sources changed since the build: aurora_streams.domain.device")
    assert file.endswith("device.py")


def test_a_build_for_another_interpreter_is_not_loaded(build_copy: Path) -> None:
    edit_manifest(build_copy, {"abi": ".cpython-399-x86_64-linux-gnu.so"})
    status, file = probe(AURORA_NATIVE_DIR=str(build_copy))
    assert status.startswith("off: built for .cpython-399") and file.endswith("device.py")


def test_a_missing_extension_turns_the_build_off(build_copy: Path) -> None:
    manifest = json.loads((build_copy / native.MANIFEST).read_text())
    (build_copy / manifest["files"]["aurora_streams.codecs"]).unlink()
    status, file = probe(AURORA_NATIVE_DIR=str(build_copy))
    assert status.startswith("off: missing build files") and file.endswith("device.py")


def test_it_can_be_turned_off(build_copy: Path) -> None:
    status, file = probe(AURORA_NATIVE_DIR=str(build_copy), AURORA_NATIVE="0")
    assert status == "off: AURORA_NATIVE=0" and file.endswith("device.py")


def test_no_build_means_pure_python(tmp_path: Path) -> None:
    status, file = probe(AURORA_NATIVE_DIR=str(tmp_path / "nothing"))
    assert status.startswith("off: no build in") and file.endswith("device.py")


def test_the_manifest_records_every_compiled_source(build_copy: Path) -> None:
    manifest = json.loads((build_copy / native.MANIFEST).read_text())
    assert manifest["modules"] == native.source_hashes()
    assert set(manifest["files"]) == {*native.MODULES, manifest["group"]}
