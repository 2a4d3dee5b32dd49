"""Resets at a rebalance's start run on the event loop, whatever thread Faust calls from
(aiokafka's rebalance listener runs in the consumer's thread)."""

from __future__ import annotations

import asyncio
import threading

from aurora_streams.faust_adapter import on_event_loop


async def test_on_the_loop_it_runs_at_once() -> None:
    ran: list[int] = []
    on_event_loop(asyncio.get_running_loop(), lambda: ran.append(threading.get_ident()))
    assert ran == [threading.get_ident()]


async def test_from_another_thread_it_runs_on_the_loop_not_in_that_thread() -> None:
    loop = asyncio.get_running_loop()
    ran: list[int] = []
    called_in: list[int] = []
    ran_in_listener: list[list[int]] = []
    done = asyncio.Event()

    def reset() -> None:
        ran.append(threading.get_ident())
        done.set()

    def listener() -> None:  # what aiokafka's thread does at a rebalance's start
        called_in.append(threading.get_ident())
        on_event_loop(loop, reset)
        ran_in_listener.append(list(ran))

    thread = threading.Thread(target=listener)
    thread.start()
    thread.join()
    await asyncio.wait_for(done.wait(), 5)
    # Not run in the listener's thread (between two steps of the loop's), but on the loop.
    assert ran_in_listener == [[]]
    assert ran == [threading.get_ident()] != called_in


def test_before_the_app_started_it_runs_at_once() -> None:
    ran: list[bool] = []
    on_event_loop(None, lambda: ran.append(True))
    assert ran == [True]
