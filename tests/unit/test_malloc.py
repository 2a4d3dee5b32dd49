"""The worker's C allocator knobs (aurora_streams.malloc), on this machine's glibc."""

from __future__ import annotations

from pathlib import Path

import pytest

from aurora_streams import malloc

glibc = pytest.mark.skipif(malloc._libc() is None, reason="not glibc: the knobs do nothing")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_zero_arenas_means_glibcs_default_and_changes_nothing() -> None:
    assert malloc.limit_arenas(0) is False


@glibc
def test_arenas_can_be_limited() -> None:
    assert malloc.limit_arenas(2) is True


@glibc
def test_mmap_threshold_can_be_fixed_and_zero_changes_nothing() -> None:
    assert malloc.fix_mmap_threshold(0) is False
    assert malloc.fix_mmap_threshold(128) is True


_BLOCKS_AFTER_A_LARGE_FREE = """
import sys
from pathlib import Path
from aurora_streams import malloc

def rss_mb():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

malloc.fix_mmap_threshold(int(sys.argv[1]))
bytearray(1024 * 1024)  # freed at once: glibc's threshold rises to a freed mapping's size unless fixed
blocks = [bytearray(256 * 1024) for _ in range(400)]  # bytearray(n) touches every page
keep = blocks[::10]
before = rss_mb()
del blocks
print(before - rss_mb(), len(keep))
"""


@glibc
def test_a_fixed_mmap_threshold_returns_freed_large_blocks_at_once() -> None:
    """Survivors spread among freed 256 KiB blocks: with glibc's rising threshold the freed
    ones stay in the heap (RSS unchanged until a trim), with a fixed one each went back to
    the kernel when freed."""
    import subprocess
    import sys

    def released_mb(kib: int) -> float:
        out = subprocess.run(
            [sys.executable, "-c", _BLOCKS_AFTER_A_LARGE_FREE, str(kib)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return float(out.split()[0])

    assert released_mb(128) > 80
    assert released_mb(0) < 20


@glibc
def test_trim_returns_memory_freed_in_the_middle_of_the_heap() -> None:
    """What a catch-up leaves: most of ~300 MB of 2 KB chunks freed, with survivors spread
    through the heap so that nothing can be released from its top alone."""
    chunks = [bytes(2_000) + bytes([i % 256]) for i in range(150_000)]
    keep = chunks[::200]
    del chunks
    before = _rss_mb()
    assert malloc.trim() is True
    after = _rss_mb()
    assert after < before - 100, (before, after)
    assert len(keep) == 750


@glibc
def test_heap_usage_tells_held_memory_from_freed() -> None:
    """100 MB allocated shows in ``in_use``; once freed, it leaves ``in_use`` (and lands in
    ``free`` or goes back to the kernel, by glibc's thresholds)."""
    before = malloc.heap_usage()
    assert before is not None
    chunks = [bytes(2_000) + bytes([i % 256]) for i in range(50_000)]
    held = malloc.heap_usage()
    assert held is not None and held.in_use > before.in_use + 90 * 2**20
    del chunks
    freed = malloc.heap_usage()
    assert freed is not None and freed.in_use < held.in_use - 90 * 2**20
    assert freed.free >= 0


@pytest.mark.skipif(
    __import__("ctypes.util").util.find_library("jemalloc") is None, reason="libjemalloc2 is not installed"
)
def test_the_worker_reruns_itself_with_jemalloc_preloaded(tmp_path: Path) -> None:
    """AURORA_MALLOC=jemalloc: the worker command re-executes itself (same pid) with the
    library preloaded and says so in its first log line; with glibc it does not. The worker
    is stopped once it has said so (no broker runs here)."""
    import os
    import subprocess
    import sys

    from tests.integration.harness import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("AURORA_") and k != "LD_PRELOAD"}
    env.update(
        AURORA_BROKER_URL=f"kafka://127.0.0.1:{free_port()}",
        AURORA_DATADIR=str(tmp_path),
        AURORA_LOG_FORMAT="text",
    )
    for allocator in ("jemalloc", "glibc"):
        env["AURORA_MALLOC"] = allocator
        proc = subprocess.Popen(
            [sys.executable, "-m", "aurora_streams", "worker"],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        seen: list[str] = []
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                seen.append(line)
                if "C allocator:" in line:
                    break
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            proc.stderr.close()  # type: ignore[union-attr]
        assert any(f"C allocator: {allocator}" in line for line in seen), "".join(seen)[-2000:]
        assert ("libjemalloc" in maps) == (allocator == "jemalloc")


@glibc
def test_heap_usage_at_scrape_time_runs_no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scraped every few seconds: finding libc (``ldconfig -p`` in a subprocess) happens once
    per process, not per call."""
    import subprocess

    malloc._libc()

    def spawned(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a subprocess at scrape time: {args}")

    monkeypatch.setattr(subprocess, "Popen", spawned)
    if malloc.allocator_in_use() == "glibc":
        usage = malloc.heap_usage()
        assert usage is not None and usage.in_use > 0
    assert malloc.trim() in (True, False)
