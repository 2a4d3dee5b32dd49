"""The raw intake between the consumer's fetch loop and the normalize agent: batches in
arrival order, bounded, cleared (with a new generation) when a rebalance starts."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import pytest

from aurora_streams.agents.intake import RawIntake


class _Message(NamedTuple):
    name: Any
    value: bytes = b"v"


def _names(taken: tuple[int, list[_Message]]) -> tuple[int, list[Any]]:
    generation, batch = taken
    return generation, [m.name for m in batch]


class _Flow:
    """Faust's flow control: ``acquire`` waits while suspended."""

    def __init__(self, active: bool = True) -> None:
        self._resumed = asyncio.Event()
        if active:
            self._resumed.set()

    async def acquire(self) -> None:
        await self._resumed.wait()

    def resume(self) -> None:
        self._resumed.set()


async def test_a_batch_is_taken_in_arrival_order_and_at_most_max() -> None:
    intake = RawIntake(maxsize=100)
    for i in range(7):
        intake.put(_Message(i))
    assert _names(await intake.take(5, within_s=10)) == (0, [0, 1, 2, 3, 4])
    assert _names(await intake.take(5, within_s=0.01)) == (0, [5, 6])
    assert len(intake) == 0


async def test_take_waits_for_a_first_message_then_returns_when_the_batch_fills() -> None:
    intake = RawIntake(maxsize=100)
    taking = asyncio.create_task(intake.take(3, within_s=60))
    await asyncio.sleep(0.01)
    assert not taking.done()  # nothing yet: it waits however long
    intake.put(_Message("a"))
    await asyncio.sleep(0.01)
    assert not taking.done()  # one of three: it waits up to within_s for more
    intake.put(_Message("b"))
    intake.put(_Message("c"))
    # Full: returns without waiting out the minute.
    assert _names(await asyncio.wait_for(taking, 5)) == (0, ["a", "b", "c"])


async def test_a_partial_batch_is_returned_when_the_wait_ends() -> None:
    intake = RawIntake(maxsize=100)
    intake.put(_Message("a"))
    assert _names(await intake.take(1000, within_s=0.02)) == (0, ["a"])


async def test_clear_drops_what_was_not_taken_and_starts_a_generation() -> None:
    intake = RawIntake(maxsize=100)
    intake.put(_Message("before"))
    generation, batch = _names(await intake.take(10, within_s=0.01))
    intake.put(_Message("fetched before the rebalance"))
    intake.clear()
    assert len(intake) == 0
    assert intake.generation == generation + 1  # the batch taken before is void now
    assert batch == ["before"]
    intake.put(_Message("after"))
    assert _names(await intake.take(10, within_s=0.01)) == (generation + 1, ["after"])


async def test_put_when_ready_waits_for_flow_control_and_for_room() -> None:
    intake = RawIntake(maxsize=2)
    flow = _Flow(active=False)
    putting = asyncio.create_task(intake.put_when_ready(_Message("x"), flow))
    await asyncio.sleep(0.01)
    assert len(intake) == 0  # a rebalance is under way
    intake.put(_Message("a"))
    intake.put(_Message("b"))
    assert intake.full()
    flow.resume()
    await asyncio.sleep(0.01)
    assert not putting.done()  # no room
    assert _names(await intake.take(1, within_s=0.01)) == (0, ["a"])
    await asyncio.wait_for(putting, 5)
    assert _names(await intake.take(10, within_s=0.01)) == (0, ["b", "x"])


async def test_a_cancelled_put_appends_nothing() -> None:
    intake = RawIntake(maxsize=1)
    intake.put(_Message("a"))
    putting = asyncio.create_task(intake.put_when_ready(_Message("x"), _Flow()))
    await asyncio.sleep(0.01)
    putting.cancel()  # the rebalance won the race (Consumer.wait_first)
    with pytest.raises(asyncio.CancelledError):
        await putting
    intake.clear()
    assert len(intake) == 0
    intake.put(_Message("b"))
    assert _names(await intake.take(10, within_s=0.01)) == (1, ["b"])


async def test_a_cleared_intake_has_room_again() -> None:
    intake = RawIntake(maxsize=1)
    intake.put(_Message("a"))
    putting = asyncio.create_task(intake.put_when_ready(_Message("x"), _Flow()))
    await asyncio.sleep(0.01)
    intake.clear()
    await asyncio.wait_for(putting, 5)
    assert _names(await intake.take(10, within_s=0.01)) == (1, ["x"])


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        RawIntake(maxsize=0)


async def test_a_batch_ends_at_max_bytes_with_at_least_one_message() -> None:
    intake = RawIntake(maxsize=100)
    for i, size in enumerate((400, 400, 400, 5000, 10)):
        intake.put(_Message(i, b"x" * size))
    assert _names(await intake.take(100, within_s=10, max_bytes=1000)) == (0, [0, 1, 2])
    assert _names(await intake.take(100, within_s=10, max_bytes=1000)) == (0, [3])  # larger alone
    assert _names(await intake.take(100, within_s=0.01, max_bytes=1000)) == (0, [4])


async def test_take_returns_when_max_bytes_arrive() -> None:
    intake = RawIntake(maxsize=100)
    taking = asyncio.create_task(intake.take(100, within_s=60, max_bytes=1000))
    intake.put(_Message("a", b"x" * 600))
    await asyncio.sleep(0.01)
    assert not taking.done()
    intake.put(_Message("b", b"x" * 600))
    intake.put(_Message("c", b"x" * 10))
    assert _names(await asyncio.wait_for(taking, 5)) == (0, ["a", "b"])
    assert _names(await intake.take(100, within_s=0.01, max_bytes=1000)) == (0, ["c"])


async def test_a_rebalance_that_clears_a_filling_batch_never_yields_an_empty_one() -> None:
    """take() had its first message, then waited to fill the batch; a rebalance cleared the
    intake meanwhile, and take() returned an empty batch that stopped the worker (exit 70,
    in 3 of 4 rebalances between live workers). It waits for the next message instead."""
    intake = RawIntake(maxsize=100)
    taking = asyncio.ensure_future(intake.take(10, 0.2))
    intake.put(_Message(0, "old"))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # take() now waits to fill the batch
    intake.clear()
    await asyncio.sleep(0.3)  # past within_s
    assert not taking.done(), f"took {taking.result() if taking.done() else None}"
    intake.put(_Message(1, "new"))  # type: ignore[arg-type]
    generation, batch = await asyncio.wait_for(taking, 2)
    assert generation == intake.generation and [m.value for m in batch] == ["new"]
