"""Integration tests (real uvicorn, real file journal) for server.regions.horizon: the server opens every
clinic's days ahead by itself once a day, journaled, and never twice.

The clock is pinned (the live server's ``MovableClock``): a day is passed by moving it, and the daily
task is woken instead of waited for.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from engine.calendar import day_of_epoch
from engine.events import DaysOpened
from server.regions.horizon import RollingHorizon
from tests.server.conftest import bearer
from tests.server.test_http_clinic_setup import registered
from tests.support.live_server import LiveServer
from tests.support.waiting import eventually

DAY_S = 24 * 3600
EVERY_DAY = {str(d): [{"from": "08:00", "to": "16:00"}] for d in range(1, 8)}


def horizon_of(live: LiveServer) -> RollingHorizon:
    assert live.server is not None
    horizon: RollingHorizon = live.server.config.app.state.horizon
    return horizon


def wake(live: LiveServer) -> None:
    """Wake the daily task on the server's own loop (it lives there)."""
    assert live.loop is not None
    live.loop.call_soon_threadsafe(horizon_of(live).wake)


async def round_again(live: LiveServer) -> bool:
    """Run a round on the server's loop as if the day had not had one."""
    horizon = horizon_of(live)

    async def again() -> bool:
        horizon.done_day = None
        return await horizon.round()

    return await asyncio.wrap_future(live.call(again()))


async def opened(live: LiveServer, resource: str) -> list[DaysOpened]:
    return [
        e for e in await live.journal_events("AB") if isinstance(e, DaysOpened) and e.resource == resource
    ]


def last_day(events: list[Any]) -> int:
    return max(e.first_day + e.days - 1 for e in events)


async def test_each_day_the_server_opens_the_next_day_once_also_across_a_restart(tmp_path: Path) -> None:
    live = LiveServer(tmp_path).start()
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            clinic, key = await registered(client, live)  # open_ahead_days 14
            r = await client.post(
                "/api/clinic/v1/resources",
                headers=bearer(key),
                json={"kind": "dentist", "name": "Tandläkare Al", "services": ["checkup"]},
            )
            assert r.status_code == 201, r.text
            dentist = r.json()["clinic"]["resources"][0]["id"]
            r = await client.post("/api/clinic/v1/hours", headers=bearer(key), json={"week": EVERY_DAY})
            assert r.status_code == 200, r.text
        today = day_of_epoch(int(live.clock()))
        assert last_day(await opened(live, dentist)) == today + 14

        horizon = horizon_of(live)
        await eventually(lambda: horizon.done_day == today, what="the start's round")
        live.clock.advance(DAY_S)
        wake(live)
        await eventually(lambda: horizon.done_day == today + 1, what="the next day's round")
        events = await opened(live, dentist)
        assert last_day(events) == today + 15
        assert events[-1] == DaysOpened(dentist, today + 15, 1)  # just the new day, not the ones before

        # the same day again (a second node, an operator's nudge): nothing more is journaled
        assert await round_again(live)
        assert await opened(live, dentist) == events
    finally:
        live.stop()

    # a restart on the same day: its first round finds nothing to open
    again = LiveServer(tmp_path, catalog=False)
    again.clock.advance(DAY_S)
    again.start()
    try:
        await eventually(lambda: horizon_of(again).done_day == today + 1, what="the restart's round")
        assert await opened(again, dentist) == events
        again.clock.advance(DAY_S)  # and the day after, the next day opens
        wake(again)
        await eventually(lambda: horizon_of(again).done_day == today + 2, what="the day after's round")
        assert last_day(await opened(again, dentist)) == today + 16
    finally:
        again.stop()
