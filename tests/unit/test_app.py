"""The worker's consumer hands a raw-topic message to its stream directly only when that
cannot block; otherwise it keeps Faust's interruptible path (``wait_first``), which a
rebalance must be able to cut short (a delivery blocked on a full queue whose contents the
rebalance clears would never be woken)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from aurora_streams.app import _ProbingConsumer

RAW = TP("raw", 0)


def _consumer(*, queue_full: bool = False, flow: bool = True, suspended: bool = False) -> Any:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    if queue_full:
        queue.put_nowait(1)
    app = SimpleNamespace(
        flow_control=SimpleNamespace(is_active=lambda: flow),
        topics=SimpleNamespace(
            _tp_to_callback_lock=asyncio.Lock(), _tp_index={RAW: [SimpleNamespace(queue=queue)]}
        ),
        producer=SimpleNamespace(buffer=SimpleNamespace(size=0, max_messages=100)),
    )
    suspend = asyncio.Event()
    if suspended:
        suspend.set()
    return SimpleNamespace(app=app, suspend_flow=suspend)


def test_a_message_with_room_in_its_queue_goes_directly() -> None:
    assert _ProbingConsumer._delivers_now(_consumer(), RAW) is True


@pytest.mark.parametrize(
    "state",
    [{"queue_full": True}, {"flow": False}, {"suspended": True}],
    ids=["queue full", "flow control suspended", "consumer flow suspended"],
)
def test_a_delivery_that_could_block_keeps_the_interruptible_path(state: dict[str, bool]) -> None:
    assert _ProbingConsumer._delivers_now(_consumer(**state), RAW) is False


def test_unknown_partitions_and_a_full_producer_buffer_keep_it_too() -> None:
    c = _consumer()
    assert _ProbingConsumer._delivers_now(c, TP("raw", 3)) is False
    c.app.producer.buffer.size = 101
    assert _ProbingConsumer._delivers_now(c, RAW) is False
