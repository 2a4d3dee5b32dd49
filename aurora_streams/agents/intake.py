"""The raw topic's messages, handed from the consumer's fetch loop to the normalize agent.

Faust would deliver each raw message through its conductor, an ``Event``, the agent's stream
queue, the stream iterator (with its sensors and ack tracking) and ``take_events``: a fifth of
a busy worker's main thread, for a message the agent only reads the key, value,
partition, offset and timestamp of. The worker's consumer (``faust_adapter.ProbingConsumer``) appends
raw messages here instead, and the agent takes them in batches.

Guarantees and ordering:

* **Order.** One fetch loop appends, in each partition's offset order; :meth:`RawIntake.take`
  returns messages in the order they were appended, so a partition's messages are taken in
  offset order.
* **Acknowledgement.** Messages here are not tracked by Faust's consumer (nothing waits for
  them on a rebalance or at shutdown). A message's offset becomes committable only when the
  agent acknowledges it after its checkpoint is stored (``agents.checkpoint.release_acks``);
  until then a crash re-delivers it.
* **Rebalance.** :meth:`RawIntake.clear` (called when a rebalance starts) drops every message
  not yet taken and advances :attr:`RawIntake.generation`; a batch taken before it is dropped
  by the agent too (it compares generations). After the rebalance Faust seeks every assigned
  partition to its committed offset, so all of them are fetched again by their new owner.
* **Back-pressure.** At ``maxsize`` messages the fetch loop waits for room (as Faust's
  conductor waits on a full stream queue), interruptibly, so a rebalance can cut it short.
  It waits for every partition it fetches, standby changelogs included: a worker catching
  up on its raw topic lets its standbys fall behind meanwhile (they catch up once the
  intake drains). Faust paused only the full stream's partition, and that pause and resume
  between interleaved partitions halved a catch-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

__all__ = ["RawIntake"]


class RawIntake:
    """A bounded, clearable buffer of raw messages between the fetch loop and the agent.

    Single producer (the fetch loop), single consumer (the agent); both run on the event
    loop, so no locking."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.generation = 0
        """Advanced by every :meth:`clear`: a batch taken in another generation is void."""
        self._messages: list[Any] = []
        self._bytes = 0
        """Value bytes of ``_messages``."""
        self._want = sys.maxsize
        self._want_bytes = sys.maxsize
        self._filled: asyncio.Event | None = None
        self._room: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._messages)

    def full(self) -> bool:
        return len(self._messages) >= self.maxsize

    def put(self, message: Any) -> None:
        """Append ``message`` (the caller checked :meth:`full`; this never blocks)."""
        messages = self._messages
        messages.append(message)
        value = message.value
        if value is not None:
            self._bytes += len(value)
        if (len(messages) >= self._want or self._bytes >= self._want_bytes) and self._filled is not None:
            self._filled.set()

    async def put_when_ready(self, message: Any, flow_control: Any) -> None:
        """Append ``message`` once Faust's flow control is active and there is room. Meant to
        be raced against a rebalance (``Consumer.wait_first``): cancelled, it appends nothing."""
        while True:
            await flow_control.acquire()
            if not self.full():
                self.put(message)
                return
            room = self._room
            if room is None:
                room = self._room = asyncio.Event()
            await room.wait()

    async def take(
        self, max_messages: int, within_s: float, max_bytes: int = sys.maxsize
    ) -> tuple[int, list[Any]]:
        """The next batch and the generation it was taken in: waits for a first message,
        then up to ``within_s`` seconds for ``max_messages`` or ``max_bytes`` of values,
        and returns the oldest messages up to either bound (at least one message), as
        Faust's ``take_events`` does with a count."""
        while True:
            if not self._messages:
                await self._wait_for(1, sys.maxsize, None)
            if len(self._messages) < max_messages and self._bytes < max_bytes:
                await self._wait_for(max_messages, max_bytes, within_s)
            if self._messages:
                break
            # A rebalance cleared the intake while the batch filled: an empty batch reached
            # the agent and stopped the worker (min() of nothing). Wait for the next message.
        messages = self._messages
        n = min(max_messages, len(messages))
        size = 0
        for i in range(n):
            size += len(messages[i].value or b"")
            if size >= max_bytes:
                n = i + 1
                break
        batch = messages[:n]
        del messages[:n]
        self._bytes -= size
        self._made_room()
        return self.generation, batch

    def clear(self) -> None:
        """Drop every message not yet taken (a rebalance started: they will be fetched
        again from the committed offsets) and start a new generation."""
        self._messages.clear()
        self._bytes = 0
        self.generation += 1
        self._made_room()

    def _made_room(self) -> None:
        room = self._room
        if room is not None and len(self._messages) < self.maxsize:
            self._room = None
            room.set()

    async def _wait_for(self, count: int, size: int, timeout: float | None) -> None:
        # Set by put() when ``count`` messages or ``size`` bytes are here; an Event per
        # wait, as waits are per batch (not per message).
        filled = self._filled = asyncio.Event()
        self._want, self._want_bytes = count, size
        try:
            if len(self._messages) >= count or self._bytes >= size:
                return
            if timeout is None:
                await filled.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(filled.wait(), timeout)
        finally:
            self._filled = None
            self._want = self._want_bytes = sys.maxsize
