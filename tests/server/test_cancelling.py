"""cancel_until_done: a task that swallows a cancel (as asyncio.wait_for inside redis-py does on
Python 3.11 when the cancel meets its reply) is cancelled again until it ends; one cancel and an
await would wait for ever."""

from __future__ import annotations

import asyncio

from server.cancelling import cancel_until_done
from tests.support.waiting import scaled


async def test_a_task_that_swallows_a_cancel_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # goes on as if never cancelled

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done and swallowed == 1  # one cancel did not end it
    await asyncio.wait_for(cancel_until_done(task), scaled(10))
    assert task.cancelled() and swallowed == 1


async def test_a_finished_task_is_left_as_it_ended() -> None:
    task = asyncio.create_task(asyncio.sleep(0, result=7))
    await task
    await cancel_until_done(task)
    assert task.result() == 7
