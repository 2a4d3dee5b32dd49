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
