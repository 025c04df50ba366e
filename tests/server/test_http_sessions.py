"""Integration tests: sessions that end, per-account login throttling, and the principal taken
from memory — over HTTP against a live uvicorn with the real account store.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.server.conftest import assert_error_shape, bearer
from tests.support.live_server import LiveServer

PASSWORD = "password-123"


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


@pytest.fixture
def user_queries(live: LiveServer) -> Iterator[list[str]]:
    """Every SQL statement the server's account store runs while the test does its requests."""
    seen: list[str] = []
    db: sqlite3.Connection = live.accounts._db
    db.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        db.set_trace_callback(None)


async def test_the_principal_comes_from_memory_not_a_query_per_request(
    client: httpx.AsyncClient, user_queries: list[str]
) -> None:
    _, token = await _register(client)
    assert (await client.get("/api/bookings", headers=bearer(token))).status_code == 200
    user_queries.clear()
    for _ in range(20):
        assert (await client.get("/api/bookings", headers=bearer(token))).status_code == 200
        assert (await client.get("/api/holds", headers=bearer(token))).status_code == 200
    # another connection's commit (e.g. a table created at start) may make the cache re-read once
    selects = [q for q in user_queries if q.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 1, selects


async def test_a_clinic_key_is_checked_from_memory_and_revocation_is_seen(
    client: httpx.AsyncClient, live: LiveServer, user_queries: list[str]
) -> None:
    key = live.accounts.create_clinic_key("AB-c2")
    day = {"date": "2026-12-08"}
    assert (await client.get("/api/clinic/v1/day", params=day, headers=bearer(key))).status_code == 200
    user_queries.clear()
    for _ in range(20):
        assert (await client.get("/api/clinic/v1/day", params=day, headers=bearer(key))).status_code == 200
    # another connection's commit (e.g. a table created at start) may make the cache re-read once
    selects = [q for q in user_queries if q.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 1, selects
    live.accounts.revoke_clinic_keys("AB-c2")
    r = await client.get("/api/clinic/v1/day", params=day, headers=bearer(key))
    assert_error_shape(r, 401, "UNAUTHENTICATED")
