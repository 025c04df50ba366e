"""Event-loop lag: how late a timer fires, as a Prometheus histogram (``tandtid_event_loop_lag_seconds``).

A task sleeps ``interval`` seconds again and again and observes how much later than asked it
woke up. Anything that holds the loop (a long query, a snapshot on the actor, a GC pause)
shows up as lag, so the histogram's tail is the stall every request on the loop could meet.
Start one per process (``LoopLag().start()``, in the app's lifespan) and ``await stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from server import metrics


class LoopLag:
    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        observe, clock, interval = metrics.EVENT_LOOP_LAG.observe, time.perf_counter, self.interval
        while True:
            asked = clock() + interval
            await asyncio.sleep(interval)
            observe(max(0.0, clock() - asked))
