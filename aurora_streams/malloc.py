"""The C allocator of a long-running worker (glibc; elsewhere these do nothing).

A worker's native memory comes from many threads (RocksDB's flushes and compactions,
librdkafka's brokers, the executor that flushes the producer), and glibc gives each
contending thread an arena of its own, up to eight per core, each holding on to what it
once needed. After a catch-up, memory that Python and RocksDB freed stays in those arenas
and in the main heap's free lists: the RSS stays at the catch-up's peak. Three
knobs: fewer arenas (``AURORA_MALLOC_ARENAS``), set before any thread starts, a fixed
threshold above which blocks get their own mapping (``AURORA_MALLOC_MMAP_THRESHOLD_KIB``),
and ``malloc_trim`` now and then (``AURORA_MALLOC_TRIM_INTERVAL_S``), which returns free
pages of every arena to the kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any, NamedTuple

__all__ = ["JEMALLOC", "HeapUsage", "fix_mmap_threshold", "heap_usage", "limit_arenas", "reexec_with", "trim"]

JEMALLOC = "libjemalloc.so.2"
"""Debian's ``libjemalloc2``: an allocator that returns freed memory to the kernel on its own
(``dirty_decay_ms``) and fragments less under many threads than glibc's."""

_JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:5000"

_M_ARENA_MAX = -8
"""``mallopt`` parameter number of M_ARENA_MAX (glibc's malloc.h)."""
_M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter number of M_MMAP_THRESHOLD (glibc's malloc.h)."""


@functools.cache
def _libc() -> Any:
    # Once per process: find_library runs ``ldconfig -p`` in a subprocess, and heap_usage is
    # called on every metrics scrape (so mallinfo2's return type is set here, once).
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    return libc


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


class HeapUsage(NamedTuple):
    """glibc's view of its heap, all arenas together (``mallinfo2``)."""

    in_use: int
    """Bytes handed out and not freed (small and large chunks, mmapped ones included)."""
    free: int
    """Bytes freed and kept inside the arenas: the fragmentation part of RSS until a trim
    or a reuse (pages ``malloc_trim`` gave back still count here, not in RSS)."""


def heap_usage() -> HeapUsage | None:
    """In-use and free bytes of glibc's arenas, or ``None`` (not glibc, or jemalloc preloaded,
    whose arenas ``mallinfo2`` does not see). Walks every arena's free lists under its lock:
    milliseconds for a worker's heap, fine at scrape time."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2") or allocator_in_use() != "glibc":
        return None
    info = libc.mallinfo2()
    return HeapUsage(in_use=int(info.uordblks + info.hblkhd), free=int(info.fordblks))


def limit_arenas(arenas: int) -> bool:
    """Let at most ``arenas`` malloc arenas exist (0: glibc's default). Effective for arenas
    created after the call: call it before starting threads. Returns whether it applied."""
    libc = _libc()
    if arenas <= 0 or libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def fix_mmap_threshold(kib: int) -> bool:
    """Serve every allocation of ``kib`` KiB or more by its own mapping, returned to the
    kernel when freed (0: glibc's default, a threshold that rises to the largest block ever
    freed, up to 32 MiB). glibc raises it after the first large free, and from then on the
    epochs' large buffers (lists of thousands of records, encoded batches) are carved from
    the arenas, where freed space between live blocks stays in RSS. Returns whether it applied."""
    libc = _libc()
    if kib <= 0 or libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, kib * 1024))


def trim() -> bool:
    """Return free memory at the top and in the middle of every arena to the kernel
    (``malloc_trim(0)``). Takes each arena's lock in turn: call it from a thread, not the
    event loop. Returns whether anything was released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def reexec_with(allocator: str) -> None:
    """Replace this process (same pid, same arguments) by one with ``allocator`` preloaded,
    unless it already runs with it or the library is not installed (then it goes on with
    glibc's and returns). Call it first thing, before any thread starts."""
    import os
    import sys

    if allocator != "jemalloc" or JEMALLOC in os.environ.get("LD_PRELOAD", ""):
        return
    if ctypes.util.find_library("jemalloc") is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD"), JEMALLOC]))
    env.setdefault("MALLOC_CONF", _JEMALLOC_CONF)
    os.execve(sys.executable, [sys.executable, "-m", "aurora_streams", *sys.argv[1:]], env)


def allocator_in_use() -> str:
    """``jemalloc`` when it is preloaded into this process, else ``glibc``."""
    import os

    return "jemalloc" if JEMALLOC in os.environ.get("LD_PRELOAD", "") else "glibc"
