"""Integration tests: the live HTTP server over a RedisStreamJournal on a real redis-server.

The 200-way booking race with Redis as the journal, and a Redis outage seen over HTTP:
bookings answer 503 UNAVAILABLE (nothing happened), /ready says 503, and after Redis comes
back the server is ready again and every acknowledged booking is still there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.calendar import iso
from engine.events import Booked
from tests.server.conftest import assert_error_shape, bearer
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.redis

DAY = FIRST_DAY + 1


@pytest.fixture
def redis_live(tmp_path: Path, redis_server: RedisServer) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path, redis_url=redis_server.url).start()
    try:
        yield server
    finally:
        server.stop()


def body(cell: int, resource: str = "AB-c1-r1") -> dict[str, str]:
    return {
        "clinic": resource.rsplit("-", 1)[0],
        "resource": resource,
        "service": "checkup",
        "start": iso(DAY, cell, 15),
    }


async def test_two_hundred_concurrent_bookings_over_redis(redis_live: LiveServer) -> None:
    tokens = [bearer(redis_live.user(name=f"Racer {i}")[1]) for i in range(200)]
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=redis_live.url, timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.post("/api/bookings", json=body(CELL_0900), headers=t) for t in tokens)
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1 and statuses.count(409) == 199, sorted(statuses)
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"SLOT_TAKEN"}
    winner = next(r for r in responses if r.status_code == 201).json()["booking"]["id"]
    events = await redis_live.journal_events("AB")
    booked = [
        e
        for e in events
        if isinstance(e, Booked) and e.day == DAY and e.cell == CELL_0900 and e.resource == "AB-c1-r1"
    ]
    assert [e.booking_id for e in booked] == [winner]


async def test_redis_outage_is_503_then_recovers(redis_live: LiveServer, redis_server: RedisServer) -> None:
    _, token = redis_live.user()
    async with httpx.AsyncClient(base_url=redis_live.url, timeout=30) as client:
        r = await client.post("/api/bookings", json=body(CELL_0900 + 8), headers=bearer(token))
        assert r.status_code == 201, r.text
        kept = r.json()["booking"]
        redis_server.kill()
        r = await client.post("/api/bookings", json=body(CELL_0900 + 16), headers=bearer(token))
        assert_error_shape(r, 503, "UNAVAILABLE")
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["journal"] is False
        redis_server.restart()

        async def ready_again() -> bool:
            return (await client.get("/ready")).status_code == 200

        await eventually(ready_again, timeout=30, interval=0.05, what="/ready 200 after redis came back")
        r = await client.get(f"/api/bookings/{kept['id']}", headers=bearer(token))
        assert r.status_code == 200 and r.json()["booking"] == kept
        # the refused booking left nothing: the time is still free and can be booked now
        r = await client.post("/api/bookings", json=body(CELL_0900 + 16), headers=bearer(token))
        assert r.status_code == 201, r.text
