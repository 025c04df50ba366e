"""Integration tests: sessions that end, per-account login throttling, and the principal taken
from memory — over HTTP against a live uvicorn with each real account store (SQLite; Redis with
``--redis``), and two nodes sharing one Redis: signed in on one, signed out on the other.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.server.conftest import assert_error_shape, bearer
from tests.support.live_server import LiveServer
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

PASSWORD = "password-123"


@pytest.fixture(scope="module")
def live(live_each_store: LiveServer) -> LiveServer:
    return live_each_store  # every test here runs with the stores in SQLite, then in Redis


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def _register(client: httpx.AsyncClient) -> tuple[str, str]:
    email = f"s-{secrets.token_hex(6)}@example.test"
    r = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "S"})
    assert r.status_code == 201, r.text
    return email, r.json()["token"]


async def _login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/auth/login", json={"email": email, "password": password})


async def test_logout_ends_the_session_for_bearer_and_cookie(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        email, first = await _register(client)
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as browser:
        second = (await _login(browser, email)).json()["token"]
        cookie = browser.cookies["tandtid_session"]
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            assert (await client.get("/api/auth/me", headers=bearer(first))).status_code == 200
            # sign out the bearer session: that token stops working, the other session does not
            assert (await client.post("/api/auth/logout", headers=bearer(first))).status_code == 204
            r = await client.get("/api/auth/me", headers=bearer(first))
            assert_error_shape(r, 401, "UNAUTHENTICATED")
            r = await client.get("/api/bookings", headers=bearer(first))
            assert_error_shape(r, 401, "UNAUTHENTICATED")
            assert (await client.get("/api/auth/me", headers=bearer(second))).status_code == 200
        # the cookie session ends too, even when its cookie is replayed by hand afterwards
        assert (await browser.get("/api/auth/me")).status_code == 200
        assert (await browser.post("/api/auth/logout")).status_code == 204
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as other:
        replay = {"Cookie": f"tandtid_session={cookie}"}
        assert_error_shape(await other.get("/api/auth/me", headers=replay), 401)
        assert_error_shape(await other.get("/api/auth/me", headers=bearer(second)), 401)


async def test_password_change_ends_every_other_session(client: httpx.AsyncClient) -> None:
    email, old = await _register(client)
    other = (await _login(client, email)).json()["token"]
    wrong = {"current_password": "not-the-password", "new_password": "new-password-456"}
    r = await client.post("/api/auth/password", json=wrong, headers=bearer(old))
    assert_error_shape(r, 401, "UNAUTHENTICATED")
    body = {"current_password": PASSWORD, "new_password": "new-password-456"}
    r = await client.post("/api/auth/password", json=body, headers=bearer(old))
    assert r.status_code == 200, r.text
    fresh = r.json()["token"]
    for token in (old, other):
        assert_error_shape(await client.get("/api/auth/me", headers=bearer(token)), 401)
    assert (await client.get("/api/auth/me", headers=bearer(fresh))).status_code == 200
    assert (await _login(client, email)).status_code == 401
    assert (await _login(client, email, "new-password-456")).status_code == 200


async def test_login_is_throttled_per_account(client: httpx.AsyncClient) -> None:
    email, _ = await _register(client)
    neighbour, _ = await _register(client)
    statuses = [(await _login(client, email, "wrong-password")).status_code for _ in range(12)]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    # throttled: even the right password is refused now, without revealing that it was right
    r = await _login(client, email)
    assert_error_shape(r, 429, "RATE_LIMITED")
    assert int(r.headers["Retry-After"]) >= 1
    # another account (same client address) is not affected
    assert (await _login(client, neighbour)).status_code == 200


class StoreReads:
    """Counts the reads the server's account store makes: SQL SELECTs (traced on its SQLite
    connection), or Redis GET/HMGET calls (the server's command statistics)."""

    def __init__(self, live: LiveServer) -> None:
        self.redis = redis.Redis.from_url(live.redis_url) if live.redis_url else None
        self.selects: list[str] = []
        self.base = 0
        if self.redis is None:
            db: sqlite3.Connection = live.accounts._db  # type: ignore[attr-defined]
            db.set_trace_callback(self.selects.append)
            self.db = db

    def _redis_reads(self) -> int:
        assert self.redis is not None
        stats = self.redis.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("get", "hmget", "hget"))

    def clear(self) -> None:
        self.selects.clear()
        self.base = self._redis_reads() if self.redis is not None else 0

    def count(self) -> int:
        if self.redis is not None:
            return self._redis_reads() - self.base
        return len([q for q in self.selects if q.lstrip().upper().startswith("SELECT")])

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        else:
            self.db.set_trace_callback(None)


@pytest.fixture
def user_queries(live: LiveServer) -> Iterator[StoreReads]:
    reads = StoreReads(live)
    try:
        yield reads
    finally:
        reads.close()


async def test_the_principal_comes_from_memory_not_a_query_per_request(
    client: httpx.AsyncClient, user_queries: StoreReads
) -> None:
    _, token = await _register(client)
    assert (await client.get("/api/bookings", headers=bearer(token))).status_code == 200
    user_queries.clear()
    for _ in range(20):
        assert (await client.get("/api/bookings", headers=bearer(token))).status_code == 200
        assert (await client.get("/api/holds", headers=bearer(token))).status_code == 200
    # another connection's commit (e.g. a table created at start) may make the cache re-read once
    assert user_queries.count() <= 1, user_queries.selects


async def test_a_clinic_key_is_checked_from_memory_and_revocation_is_seen(
    client: httpx.AsyncClient, live: LiveServer, user_queries: StoreReads
) -> None:
    key = live.accounts.create_clinic_key("AB-c2")
    day = {"date": "2026-12-08"}
    assert (await client.get("/api/clinic/v1/day", params=day, headers=bearer(key))).status_code == 200
    user_queries.clear()
    for _ in range(20):
        assert (await client.get("/api/clinic/v1/day", params=day, headers=bearer(key))).status_code == 200
    # another connection's commit (e.g. a table created at start) may make the cache re-read once
    assert user_queries.count() <= 1, user_queries.selects
    live.accounts.revoke_clinic_keys("AB-c2")
    r = await client.get("/api/clinic/v1/day", params=day, headers=bearer(key))
    assert_error_shape(r, 401, "UNAUTHENTICATED")


async def test_two_nodes_share_sign_ins_and_sign_outs(tmp_path: Path, module_redis: RedisServer) -> None:
    """Two servers on one Redis, each with its own data directory and account store: a patient
    registered on A signs in on B; a sign-out on A is refused on B, which had the session in
    memory; a password changed on B ends A's sessions."""
    a = LiveServer(tmp_path / "a", redis_url=module_redis.url).start()
    b = LiveServer(tmp_path / "b", redis_url=module_redis.url, catalog=False).start()
    try:
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=30) as on_a,
            httpx.AsyncClient(base_url=b.url, timeout=30) as on_b,
        ):
            email, from_a = await _register(on_a)
            r = await _login(on_b, email)
            assert r.status_code == 200, r.text
            from_b = r.json()["token"]
            for client, token in ((on_a, from_b), (on_b, from_a), (on_b, from_b)):
                assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200
            # B knows both sessions now (in memory); A signs B's session out
            assert (await on_a.post("/api/auth/logout", headers=bearer(from_b))).status_code == 204

            async def refused_on_b() -> bool:
                return (await on_b.get("/api/auth/me", headers=bearer(from_b))).status_code == 401

            await eventually(refused_on_b, what="B to refuse the session signed out on A")
            assert (await on_b.get("/api/auth/me", headers=bearer(from_a))).status_code == 200
            assert_error_shape(await _register_again(on_b, email), 409, "EMAIL_TAKEN")
            body = {"current_password": PASSWORD, "new_password": "new-password-456"}
            r = await on_b.post("/api/auth/password", json=body, headers=bearer(from_a))
            assert r.status_code == 200, r.text

            async def ended_on_a() -> bool:
                return (await on_a.get("/api/auth/me", headers=bearer(from_a))).status_code == 401

            await eventually(ended_on_a, what="A to refuse a session ended by a password change on B")
            assert (await on_a.get("/api/auth/me", headers=bearer(r.json()["token"]))).status_code == 200
            # wrong passwords spread over both nodes add up: the throttle is one bucket in Redis
            failures = [(await _login(c, email, "wrong-password")).status_code for c in (on_a, on_b) * 5]
            assert failures == [401] * 10
            assert_error_shape(await _login(on_a, email, "new-password-456"), 429, "RATE_LIMITED")
            assert_error_shape(await _login(on_b, email, "new-password-456"), 429, "RATE_LIMITED")
    finally:
        b.stop()
        a.stop()


async def _register_again(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "T"})
