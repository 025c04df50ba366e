"""Integration tests: two nodes (two live servers, each with its own data directory) on one real
redis-server, as with ``tandtid serve --redis``: what one node creates or revokes -- a calendar
feed token, a clinic API key, a webhook endpoint -- holds on the other at once.
(Sign-ins and sign-outs across nodes: tests/server/test_http_sessions.py.)"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from server.identity.accounts import Role
from tests.server.conftest import assert_error_shape, bearer
from tests.support.live_server import LiveServer
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def nodes(
    tmp_path_factory: pytest.TempPathFactory, module_redis: RedisServer
) -> Iterator[tuple[LiveServer, LiveServer]]:
    a = LiveServer(tmp_path_factory.mktemp("a"), redis_url=module_redis.url).start()
    b = LiveServer(tmp_path_factory.mktemp("b"), redis_url=module_redis.url, catalog=False).start()
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture
async def clients(
    nodes: tuple[LiveServer, LiveServer],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    a, b = nodes
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=30) as on_b,
    ):
        yield on_a, on_b


async def test_a_feed_token_made_on_one_node_is_served_and_revoked_on_the_other(
    nodes: tuple[LiveServer, LiveServer], clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    a, _ = nodes
    on_a, on_b = clients
    _, token = a.user(Role.PATIENT)
    r = await on_a.post("/api/me/ical-token", headers=bearer(token))
    assert r.status_code == 201, r.text
    path = r.json()["path"]
    feed = await on_b.get(path)
    assert feed.status_code == 200 and "BEGIN:VCALENDAR" in feed.text
    assert (await on_b.delete("/api/me/ical-token", headers=bearer(token))).status_code == 204
    assert_error_shape(await on_a.get(path), 404)


async def test_clinic_keys_and_webhook_endpoints_are_the_same_on_every_node(
    nodes: tuple[LiveServer, LiveServer], clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    a, b = nodes
    on_a, on_b = clients
    key = a.accounts.create_clinic_key("AB-c2")
    hook = {"url": "https://clinic.example.se/hooks", "events": ["booking.created"]}
    r = await on_b.post("/api/clinic/v1/webhooks", json=hook, headers=bearer(key))
    assert r.status_code == 201, r.text
    made = r.json()["id"]
    listed = (await on_a.get("/api/clinic/v1/webhooks", headers=bearer(key))).json()["endpoints"]
    assert [e["id"] for e in listed] == [made]
    assert (await on_a.delete(f"/api/clinic/v1/webhooks/{made}", headers=bearer(key))).status_code == 204
    assert (await on_b.get("/api/clinic/v1/webhooks", headers=bearer(key))).json()["endpoints"] == []
    # revoked through B's store: A, which had the key in memory, refuses it
    assert b.accounts.revoke_clinic_keys("AB-c2") == 1

    async def refused_on_a() -> bool:
        return (await on_a.get("/api/clinic/v1/webhooks", headers=bearer(key))).status_code == 401

    await eventually(refused_on_a, what="A to refuse the key revoked on B")


async def test_a_session_or_key_made_on_one_node_is_read_off_the_others_event_loop(
    nodes: tuple[LiveServer, LiveServer], clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """B has never seen a session A opened (or a key A made): B reads it from Redis in a worker
    thread before the route asks for it on B's event loop (LoadIdentityOffLoop), then answers
    from memory."""
    a, b = nodes
    _, on_b = clients
    readers: list[int] = []
    store = b.accounts
    load_session, load_key = store._load_session, store._load_key  # the real reads, watched

    def watched_session(sid: str) -> Any:
        readers.append(threading.get_ident())
        return load_session(sid)

    def watched_key(digest: str) -> Any:
        readers.append(threading.get_ident())
        return load_key(digest)

    store._load_session = watched_session  # type: ignore[method-assign]
    store._load_key = watched_key  # type: ignore[method-assign]
    try:
        _, token = a.user(Role.PATIENT)
        key = a.accounts.create_clinic_key("AB-c3")
        for _ in range(2):
            assert (await on_b.get("/api/auth/me", headers=bearer(token))).status_code == 200
            assert (await on_b.get("/api/clinic/v1/webhooks", headers=bearer(key))).status_code == 200
    finally:
        del store._load_session, store._load_key
    assert b._thread is not None
    assert len(readers) == 2, readers  # one read of each, the second requests from memory
    assert b._thread.ident not in readers  # neither on B's event loop thread
