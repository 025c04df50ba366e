"""Contract tests for server.http.idempotency (the "in progress" marks of keyed bookings): in this
process, and in a real redis-server shared by two nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from server.http.idempotency import InFlight, RedisInFlight
from server.stores import open_in_flight
from tests.support.redis_server import RedisServer
from tests.support.stores import StoreBackend
from tests.support.waiting import eventually


@pytest.fixture
async def marks(backend: StoreBackend) -> AsyncIterator[InFlight]:
    found = open_in_flight(backend.redis_url)
    yield found
    await found.close()


async def test_a_twin_is_refused_until_the_first_is_decided(marks: InFlight) -> None:
    first = await marks.claim("u_a", "digest-1")
    assert first is not None
    assert await marks.claim("u_a", "digest-1") is None
    assert await marks.claim("u_a", "digest-2") is not None  # another key
    assert await marks.claim("u_b", "digest-1") is not None  # another patient's same key
    await marks.release("u_a", "digest-1", first)
    assert await marks.claim("u_a", "digest-1") is not None


async def test_two_nodes_share_the_marks_and_a_dead_nodes_mark_expires(module_redis: RedisServer) -> None:
    url = module_redis.url
    a, b = RedisInFlight(url), RedisInFlight(url)
    dying = RedisInFlight(url, ttl_s=0.2)  # a node whose marks expire soon (it will die holding one)
    try:
        claim = await a.claim("u_x", "digest-9")
        assert claim is not None
        client = redis.Redis.from_url(url, decode_responses=True)
        names = client.keys("tandtid:{idempotency}:*")
        client.close()
        assert names and all("u_x" not in n and "digest" not in n for n in names)  # no personal data
        assert await b.claim("u_x", "digest-9") is None  # the twin went to the other node
        await b.release("u_x", "digest-9", "not-the-claim")  # only its holder releases a mark
        assert await b.claim("u_x", "digest-9") is None
        await a.release("u_x", "digest-9", claim)
        # a node dies holding a mark (stops renewing, never releases it): the mark expires by itself
        held = await dying.claim("u_y", "digest-8")
        assert held is not None
        await dying.close()
        again = await eventually(lambda: b.claim("u_y", "digest-8"), what="the dead node's mark to expire")
        await a.release("u_y", "digest-8", held)  # a late release of the old claim does not free b's
        assert await a.claim("u_y", "digest-8") is None
        await b.release("u_y", "digest-8", again)
    finally:
        await a.close()
        await b.close()


async def test_a_mark_in_flight_is_renewed_past_its_ttl_and_gone_when_released(
    module_redis: RedisServer,
) -> None:
    url = module_redis.url
    holder, twin = RedisInFlight(url, ttl_s=0.6), RedisInFlight(url)
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    try:
        claim = await holder.claim("u_z", "digest-7")
        assert claim is not None
        name = RedisInFlight._key("u_z", "digest-7")
        assert 0 < await client.pttl(name) <= 600  # short: a dead holder blocks retries briefly
        # Renewed while held (every 200 ms): its remaining life falls, then rises again, many times
        # over its TTL, and it never lapses meanwhile.
        for _ in range(4):
            await eventually(lambda: _pttl_between(client, name, 1, 450), what="the mark's life to fall")
            await eventually(lambda: _pttl_between(client, name, 500, 600), what="the mark to be renewed")
        assert await twin.claim("u_z", "digest-7") is None
        await holder.release("u_z", "digest-7", claim)
        assert not await client.exists(name)
        assert await twin.claim("u_z", "digest-7") is not None
    finally:
        await client.aclose()
        await holder.close()
        await twin.close()


async def _pttl_between(client: redis.asyncio.Redis, name: str, low: int, high: int) -> bool:
    left = int(await client.pttl(name))
    assert left > 0, "the mark lapsed while its request was in flight"
    return low <= left <= high
