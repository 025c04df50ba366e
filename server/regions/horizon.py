"""The rolling horizon: once a day the server opens every clinic's days ahead from its hours.

``RollingHorizon`` sends ``OpenAhead(region, horizon_days)`` to every region this node serves
(its actor is ready: with leases, the regions it holds) when it starts and again whenever the
day (Europe/Stockholm, from the regions' clock) has turned since the last complete round. The
engine decides what to open (``engine.setup``: every clinic with ``open_ahead_days`` gets the
days up to today + that many, from its hours) and the actor journals it like any command, so a
restart, a second node or a round sent twice opens nothing twice: a day already opened is not
opened again, and a round that finds nothing to open journals nothing.

A region that cannot take the command (unavailable, overloaded, fenced) is tried again at the
next look (every ``poll_s`` seconds, or at once after :meth:`wake`); the round counts as done
for the day only when every ready region took it. Each round's outcome is logged with counts
only and counted in ``tandtid_horizon_rounds_total{outcome}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from engine.calendar import day_of_epoch
from engine.commands import OpenAhead
from server.metrics import HORIZON_ROUNDS
from server.regions.routing import Regions

log = logging.getLogger("tandtid.horizon")

POLL_S = 60.0  # how often the day is looked at; the round itself runs once a day


class RollingHorizon:
    """Call :meth:`start` once the regions are ready and :meth:`stop` before they stop."""

    def __init__(
        self, regions: Regions, clock: Callable[[], float], horizon_days: int, poll_s: float = POLL_S
    ) -> None:
        self.regions = regions
        self.clock = clock
        self.horizon_days = horizon_days
        self.poll_s = poll_s
        self.done_day: int | None = None  # the last day every ready region took its round
        self.opened = 0  # resource-day ranges opened by this process's rounds (DaysOpened events)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rolling-horizon")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Look at the day now (tests that move the clock; an operator's nudge)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # a bug must not end the daily task; it is logged and retried
                log.exception("rolling horizon round failed; retrying at the next look")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()

    async def round(self) -> bool:
        """Open the days ahead in every ready region if today has not had its round; True when
        today's round is complete (now or before)."""
        today = day_of_epoch(int(self.clock()))
        if self.done_day == today:
            return True
        codes = [code for code, actor in self.regions.actors.items() if actor.ready]
        outcomes = await asyncio.gather(
            *(self.regions.submit(OpenAhead(code, self.horizon_days)) for code in codes),
            return_exceptions=True,
        )
        failed = 0
        opened = 0
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                failed += 1
            else:
                opened += len(outcome)
        self.opened += opened
        if failed or not codes:
            HORIZON_ROUNDS.labels(outcome="retry").inc()
            log.warning(
                "rolling horizon: %d of %d regions did not take the round; retrying", failed, len(codes)
            )
            return False
        HORIZON_ROUNDS.labels(outcome="done").inc()
        log.info("rolling horizon: %d regions, %d resource ranges opened", len(codes), opened)
        self.done_day = today
        return True
