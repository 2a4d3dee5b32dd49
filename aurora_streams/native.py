"""The compiled core: the pure modules built with mypyc, used when the build matches the source.

The hot path of a worker (validation, the device state machine, the codecs, the day
aggregates) is plain typed Python. ``aurora-streams native build`` compiles those modules
with mypyc (part of mypy) into C extensions under the native directory
(``AURORA_NATIVE_DIR``, by default ``build/native`` beside the package), with a manifest of
the SHA-256 of every source file it compiled. It took the pure core from ~18 to ~10 us per
reading.

:func:`activate` runs when ``aurora_streams`` is first imported, before any of those modules:
if the manifest matches this interpreter and **every** compiled module's current source, an
import hook loads the extensions in place of the ``.py`` files; otherwise nothing changes
and the pure-Python modules run (an edited source is never shadowed by a stale build). It
is all or none: compiled modules call each other directly, so a mix could disagree about
classes. ``AURORA_NATIVE=0`` turns it off. :data:`STATUS` says which is in use and why.

Behaviour is the same either way: the test suite runs against the compiled build (scripts/test
builds it and requires it), and the pure modules remain the reference. Two differences a
developer meets: mypyc checks declared types at run time (a ``list`` passed where a
``tuple`` is declared raises ``TypeError``), and a compiled module binds its own functions
and globals, so monkeypatching them has no effect on the compiled callers.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["MODULES", "STATUS", "activate", "build", "native_dir", "source_hashes"]

MODULES: tuple[str, ...] = (
    "aurora_streams.errors",
    "aurora_streams.domain.flags",
    "aurora_streams.domain.jsonbytes",
    "aurora_streams.domain.model",
    "aurora_streams.domain.units",
    "aurora_streams.domain.timeutil",
    "aurora_streams.domain.scoring",
    "aurora_streams.domain.validate",
    "aurora_streams.domain.device",
    "aurora_streams.domain.aggregates",
    "aurora_streams.codecs",
    "aurora_streams.processing",
)
"""What is compiled. Only modules that import no Faust or Kafka: the pure core and what the
normalize agent calls per reading. ``agents.views`` is not worth its build time (5 minutes
for no measurable gain)."""

MANIFEST = "manifest.json"
_PACKAGE_DIR = Path(__file__).resolve().parent
STATUS = "off: not activated"
"""``on`` (with the build's directory) or ``off: <reason>``; set by :func:`activate`."""


def native_dir() -> Path:
    return Path(os.environ.get("AURORA_NATIVE_DIR") or _PACKAGE_DIR.parent / "build" / "native")


def _source(module: str) -> Path:
    return _PACKAGE_DIR.parent.joinpath(*module.split(".")).with_suffix(".py")


def source_hashes(modules: Sequence[str] = MODULES) -> dict[str, str]:
    """SHA-256 of each module's source file, as the manifest records them."""
    return {m: hashlib.sha256(_source(m).read_bytes()).hexdigest() for m in modules}


def _abi() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules (and mypyc's shared library of the build) by name."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def _check(directory: Path) -> tuple[dict[str, Path] | None, str]:
    """The extension files to load, or None and why not."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None, f"no build in {directory} (run: aurora-streams native build)"
    except (OSError, ValueError) as exc:
        return None, f"unreadable manifest in {directory}: {exc}"
    if manifest.get("abi") != _abi():
        return None, f"built for {manifest.get('abi')}, this interpreter loads {_abi()}"
    recorded = manifest.get("modules", {})
    if set(recorded) != set(MODULES):
        return None, "built from another module list (rebuild: aurora-streams native build)"
    current = source_hashes()
    stale = sorted(m for m in MODULES if recorded[m] != current[m])
    if stale:
        return None, f"sources changed since the build: {', '.join(stale)} (run: aurora-streams native build)"
    files = {m: directory / manifest["files"][m] for m in MODULES}
    files[manifest["group"]] = directory / manifest["files"][manifest["group"]]
    missing = sorted(str(f) for f in files.values() if not f.is_file())
    if missing:
        return None, f"missing build files: {', '.join(missing)}"
    return files, "ok"


def activate() -> str:
    """Install the import hook if the build is current (see the module docstring); returns
    :data:`STATUS`. Must run before any of :data:`MODULES` is imported; a second call does
    nothing."""
    global STATUS
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return STATUS
    if os.environ.get("AURORA_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        STATUS = "off: AURORA_NATIVE=0"
        return STATUS
    already = sorted(m for m in MODULES if m in sys.modules)
    if already:
        STATUS = f"off: imported before activation: {', '.join(already)}"
        return STATUS
    directory = native_dir()
    files, why = _check(directory)
    if files is None:
        STATUS = f"off: {why}"
        return STATUS
    sys.meta_path.insert(0, _Finder(files))
    STATUS = f"on ({directory})"
    return STATUS


def build(out: Path | None = None, *, opt_level: str = "3") -> Path:
    """Compile :data:`MODULES` with mypyc into ``out`` (default :func:`native_dir`),
    replacing what was there only once the build succeeded. Needs mypy, setuptools, a C
    compiler and the Python headers. Runs mypy with the project's configuration (from the
    current directory's pyproject.toml when run from the repository)."""
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped]

    out = out or native_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    hashes = source_hashes()
    with tempfile.TemporaryDirectory(prefix="aurora-native-") as tmp:
        work = Path(tmp)
        root = _PACKAGE_DIR.parent
        # mypyc names modules by their path relative to the working directory.
        cwd = os.getcwd()
        os.chdir(root)
        try:
            paths = [str(_source(m).relative_to(root)) for m in MODULES]
            extensions = mypycify(paths, opt_level=opt_level, target_dir=str(work / "c"))
            dist = Distribution({"name": "aurora-streams-native", "ext_modules": extensions})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib = str(work / "lib")
            cmd.build_temp = str(work / "tmp")
            cmd.ensure_finalized()
            cmd.run()
        finally:
            os.chdir(cwd)
        lib = work / "lib"
        suffix = _abi()
        files = {m: str(Path(*m.split(".")).with_name(m.rsplit(".", 1)[1] + suffix)) for m in MODULES}
        groups = [p for p in lib.glob(f"*__mypyc{suffix}")]
        if len(groups) != 1:
            raise RuntimeError(f"expected one mypyc shared library in {lib}, found {groups}")
        group = groups[0].name[: -len(suffix)]
        files[group] = groups[0].name
        for name in files.values():
            if not (lib / name).is_file():
                raise RuntimeError(f"the build did not produce {name}")
        manifest = {"abi": suffix, "modules": hashes, "group": group, "files": files}
        (lib / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        staged = out.with_name(out.name + ".new")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(lib, staged)
    if source_hashes() != hashes:
        shutil.rmtree(staged, ignore_errors=True)
        raise RuntimeError("sources changed during the build; run it again")
    shutil.rmtree(out, ignore_errors=True)
    staged.rename(out)
    return out
