"""A forecaster's state split into a small head and blocks of its rolling arrays, so that
storing a model that learned a window rewrites a few hundred bytes, not its whole 9 KB.
No Faust imports; works on the bytes of :meth:`DeviceForecaster.to_bytes` (version 3)
without building a River model.

A forecaster keeps four arrays that grow by one element per window learned (one *step*)
and forget their oldest: Holt-Winters' seasonal components (``s``), the warm-up values
before its first season (``f``), the history behind the same-slot median (``h``) and the
day-ahead forecasts awaiting their actual (``p``, three numbers a step). Element ``i`` of
an array of length ``n`` belongs to step ``learned - n + i``, and once appended it never
changes (Holt-Winters appends a new seasonal component; it does not rewrite the old one),
with one exception: the first full season turns the warm-up values into seasonal
components (``f`` empties, ``s`` fills).

So the state is stored as:

* the **head** (version 4): the version 3 header (config, counters, accuracy sums, the
  arrays' lengths) and Holt-Winters' level and trend, about 200 bytes;
* **blocks** of :data:`BLOCK` steps: the elements of steps ``[start, start + count)`` of
  one array, stored under the name ``<array><slot>``, ``slot = (step // BLOCK) % slots``
  with enough slots (the array's capacity in blocks plus two) that a block still needed
  is never overwritten by a newer one of the same array.

:func:`split` gives the head and the blocks holding any step at or after a
:class:`Mark` (the state as last stored), and names the warm-up blocks to delete once the
first season has replaced them; :func:`join` rebuilds the version 3 bytes from a head and
its blocks and checks that every block it reads covers the steps the head needs.

Ordering: a reader must see a head only with the blocks written with it (the tables write
both in one RocksDB write batch; a changelog restore applies them in the order written,
blocks first, before the worker reads).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aurora_streams.errors import CorruptState

__all__ = ["BLOCK", "HEAD_VERSION", "Mark", "block_names", "is_head", "join", "mark_of", "split"]

HEAD_VERSION: Final = 4
_WHOLE_VERSION: Final = 3
BLOCK: Final = 16
"""Steps per block: a block of history is 128 bytes, of pending forecasts 384."""
_HEADER: Final = struct.Struct("<BBq8dqqdqdddq2d2q2d2d6I")
"""The version 3 header of :mod:`aurora_streams.domain.forecast` (kept equal by a test)."""
_BLOCK_HEAD: Final = struct.Struct("<qI")
"""A block's first step and its number of steps."""
_ARRAYS: Final = ("s", "f", "h", "p")
"""The arrays in the order of the version 3 body (after level and trend)."""
_WIDTH: Final = {"s": 1, "f": 1, "h": 1, "p": 3}


@dataclass(frozen=True, slots=True)
class Mark:
    """What the stored blocks hold: every step before ``learned``, and seasonal components
    if ``initialized`` (Holt-Winters had its first season)."""

    learned: int
    initialized: bool


def is_head(state: bytes) -> bool:
    return state[:1] == bytes((HEAD_VERSION,))


def _unpack(state: bytes) -> tuple[tuple[float | int, ...], memoryview]:
    if len(state) < _HEADER.size:
        raise CorruptState(f"forecaster state of {len(state)} bytes is shorter than its header")
    return _HEADER.unpack_from(state), memoryview(state)[_HEADER.size :]


def mark_of(state: bytes) -> Mark:
    """The mark of a state (version 3 or a head) as stored."""
    h, _ = _unpack(state)
    return Mark(int(h[12]), bool(int(h[1]) & 1))


def _capacities(h: tuple[float | int, ...]) -> dict[str, int]:
    """Each array's longest length in steps, as :class:`DeviceForecaster` sizes them."""
    interval_ms, season_days, median_days = int(h[2]), int(h[6]), int(h[9])
    day = max(1, 86_400_000 // interval_ms)
    season = max(2, day * season_days)
    return {"s": season + 1, "f": season, "h": day * max(1, median_days), "p": day}


def _slots(capacity: int) -> int:
    return capacity // BLOCK + 2


def _doubles(data: memoryview | bytes) -> array[float]:
    out = array("d")
    out.frombytes(data)
    if sys.byteorder != "little":
        out.byteswap()
    return out


def _to_bytes(values: array[float]) -> bytes:
    if sys.byteorder != "little":
        values = array("d", values)
        values.byteswap()
    return values.tobytes()


def split(state: bytes, since: Mark | None) -> tuple[bytes, dict[str, bytes | None]]:
    """The head of a version 3 ``state`` and its blocks changed since ``since`` (all of
    them when ``None``), by name; a name mapped to ``None`` is a block to delete."""
    if state[:1] != bytes((_WHOLE_VERSION,)):
        raise CorruptState(f"not a version 3 forecaster state (first byte {state[:1]!r})")
    h, body_bytes = _unpack(state)
    lengths = {"s": int(h[-4]), "f": int(h[-3]), "h": int(h[-2]), "p": int(h[-1])}
    n_level, n_trend = int(h[-6]), int(h[-5])
    body = _doubles(body_bytes)
    if len(body) != n_level + n_trend + sum(n * _WIDTH[a] for a, n in lengths.items()):
        raise CorruptState(f"forecaster state of {len(state)} bytes does not match its header")
    head = bytes((HEAD_VERSION,)) + state[1 : _HEADER.size] + _to_bytes(body[: n_level + n_trend])
    learned, initialized = int(h[12]), bool(int(h[1]) & 1)
    caps = _capacities(h)
    blocks: dict[str, bytes | None] = {}
    at = n_level + n_trend
    for name in _ARRAYS:
        n, width = lengths[name], _WIDTH[name]
        values = body[at : at + n * width]
        at += n * width
        first = learned - n  # the step of values[0]
        start = first if since is None else max(first, since.learned)
        if name == "s" and since is not None and initialized and not since.initialized:
            start = first  # the first season just replaced the warm-up values
        if name == "f" and since is not None and since.initialized != initialized:
            # The warm-up values became seasonal components: their blocks go.
            for slot in range(_slots(caps["f"])):
                blocks[f"f{slot}"] = None
            continue
        slots = _slots(caps[name])
        for block in range(start // BLOCK, (learned - 1) // BLOCK + 1) if n else ():
            lo, hi = max(block * BLOCK, first), min((block + 1) * BLOCK, learned)
            chunk = values[(lo - first) * width : (hi - first) * width]
            blocks[f"{name}{block % slots}"] = _BLOCK_HEAD.pack(lo, hi - lo) + _to_bytes(chunk)
    return head, blocks


def block_names(head: bytes) -> list[str]:
    """The names of the blocks :func:`join` reads for ``head``."""
    h, _ = _unpack(head)
    learned = int(h[12])
    caps = _capacities(h)
    names = []
    for name, n in zip(_ARRAYS, (int(h[-4]), int(h[-3]), int(h[-2]), int(h[-1])), strict=True):
        if n:
            slots = _slots(caps[name])
            names += [f"{name}{b % slots}" for b in range((learned - n) // BLOCK, (learned - 1) // BLOCK + 1)]
    return names


def join(head: bytes, block: Callable[[str], bytes | None]) -> bytes:
    """The version 3 state of ``head`` with its blocks, read by name with ``block``."""
    if not is_head(head):
        raise CorruptState(f"not a forecaster head (first byte {head[:1]!r})")
    h, rest = _unpack(head)
    learned = int(h[12])
    caps = _capacities(h)
    n_level, n_trend = int(h[-6]), int(h[-5])
    if len(rest) != 8 * (n_level + n_trend):
        raise CorruptState(f"forecaster head of {len(head)} bytes does not match its header")
    parts = [bytes((_WHOLE_VERSION,)), head[1 : _HEADER.size], bytes(rest)]
    for name, n in zip(_ARRAYS, (int(h[-4]), int(h[-3]), int(h[-2]), int(h[-1])), strict=True):
        if not n:
            continue
        width, slots, first = _WIDTH[name], _slots(caps[name]), learned - n
        for b in range(first // BLOCK, (learned - 1) // BLOCK + 1):
            lo, hi = max(b * BLOCK, first), min((b + 1) * BLOCK, learned)
            data = block(f"{name}{b % slots}")
            if data is None or len(data) < _BLOCK_HEAD.size:
                raise CorruptState(f"forecaster block {name}{b % slots} for steps {lo}..{hi} is missing")
            start, count = _BLOCK_HEAD.unpack_from(data)
            if start > lo or start + count < hi or len(data) != _BLOCK_HEAD.size + 8 * width * count:
                raise CorruptState(
                    f"forecaster block {name}{b % slots} holds steps {start}..{start + count}, "
                    f"not {lo}..{hi}: written with another head"
                )
            at = _BLOCK_HEAD.size + 8 * width * (lo - start)
            parts.append(data[at : at + 8 * width * (hi - lo)])
    return b"".join(parts)
