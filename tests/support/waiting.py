"""Waiting for what a system reaches on its own: ``eventually(check)``, never a timed assertion.

Every timeout in the suite is a multiple of one scalable unit: ``TANDTID_TEST_TIMEOUT_FACTOR``
(default 1; e.g. 3 on a slow or loaded machine; ``TANDTID_TIME_SCALE`` is its older name)
multiplies each of them. A timeout only bounds how long a test waits for a failure to show;
it is never what a test asserts.

    await eventually(lambda: hub.stats()["connections"] == 0, what="the connections to end")
    holds = await eventually(lambda: fetch_holds(client), what="the offer")   # a coroutine function
    eventually_sync(lambda: inbox.count() == 2, what="two e-mails")           # blocking, for sync tests
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

T = TypeVar("T")

TIMEOUT_FACTOR = float(
    os.environ.get("TANDTID_TEST_TIMEOUT_FACTOR") or os.environ.get("TANDTID_TIME_SCALE") or "1"
)
DEFAULT_TIMEOUT_S = 10.0
INTERVAL_S = 0.02


def scaled(seconds: float) -> float:
    """``seconds`` times the suite's timeout factor."""
    return seconds * TIMEOUT_FACTOR


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109 - how long to poll (scaled), not a cancel scope
    interval: float = INTERVAL_S,
    what: str = "the condition",
) -> T:
    """Call ``check`` (a function or a coroutine function) until it returns something truthy and
    return that. AssertionError naming ``what`` after ``scaled(timeout)`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout)
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return cast(T, value)
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.1f}s waiting for {what}")
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = INTERVAL_S,
    what: str = "the condition",
) -> T:
    """``eventually`` for code without an event loop (threads, subprocesses): blocks between calls."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.1f}s waiting for {what}")
        time.sleep(interval)
