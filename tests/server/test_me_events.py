"""Integration tests: a signed-in patient's "me" events on /ws against a live uvicorn (real app, real Regions).

The booking an event carries is the one the HTTP API shows for it, field for field.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from engine.calendar import iso
from server.identity.accounts import AccountStore
from server.live.connection import CLOSE_SIGNED_OUT
from tests.server.conftest import bearer
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer
from tests.support.waiting import scaled

TIMEOUT = scaled(10.0)
LATER = FIRST_DAY + 3  # far enough ahead for the 24 h cancel notice


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return message


async def test_me_events_show_the_booking_as_the_http_api_does(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        r = await client.post(
            "/api/auth/register",
            json={
                "email": f"p-{secrets.token_hex(6)}@example.test",
                "password": "correct horse",
                "name": "Me",
            },
        )
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        async with connect(
            live.url.replace("http", "ws") + "/ws", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.send(orjson.dumps({"op": "ping"}).decode())
            assert await recv(ws) == {"type": "pong"}  # the socket is registered before we book
            start = iso(LATER, CELL_0900 + 8, 15)
            r = await client.post(
                "/api/bookings",
                headers=bearer(token),
                json={"clinic": "AB-c2", "resource": "AB-c2-r1", "service": "filling", "start": start},
            )
            assert r.status_code == 201, r.text
            booking_id = r.json()["booking"]["id"]
            confirmed = await recv(ws)
            shown = (await client.get(f"/api/bookings/{booking_id}", headers=bearer(token))).json()
            assert confirmed["data"] == {"kind": "booking_confirmed", "booking": shown["booking"]}

            r = await client.post(f"/api/bookings/{booking_id}/cancel", headers=bearer(token))
            assert r.status_code == 200, r.text
            cancelled = await recv(ws)
            shown = (await client.get(f"/api/bookings/{booking_id}", headers=bearer(token))).json()
            assert cancelled["data"] == {"kind": "booking_cancelled", "booking": shown["booking"]}
            assert cancelled["data"]["booking"]["status"] == "cancelled"


PASSWORD = "correct horse"


async def two_sessions(client: httpx.AsyncClient) -> tuple[str, str]:
    """A new patient signed in twice (register, then log in): the two sessions' tokens."""
    email = f"p-{secrets.token_hex(6)}@example.test"
    r = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "Ut"})
    assert r.status_code == 201, r.text
    first: str = r.json()["token"]
    r = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    second: str = r.json()["token"]
    return first, second


def live_socket(live: LiveServer, token: str) -> Any:
    return connect(live.url.replace("http", "ws") + "/ws", additional_headers=bearer(token))


async def closed_with(ws: ClientConnection) -> int | None:
    """The close code once the server closes ``ws`` (a pong or an event before it is a failure)."""
    try:
        message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    raise AssertionError(f"still open, got {message!r}")


async def pong(ws: ClientConnection) -> bool:
    await ws.send(orjson.dumps({"op": "ping"}).decode())
    return await recv(ws) == {"type": "pong"}


async def test_signing_out_closes_that_sessions_sockets_at_once(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        first, second = await two_sessions(client)
        async with live_socket(live, first) as leaving, live_socket(live, second) as staying:
            assert await pong(leaving) and await pong(staying)
            assert (await client.post("/api/auth/logout", headers=bearer(first))).status_code == 204
            assert await closed_with(leaving) == CLOSE_SIGNED_OUT
            assert await pong(staying)  # the other session's socket lives on, and gets its events
            start = iso(LATER, CELL_0900 + 8, 15)
            r = await client.post(
                "/api/bookings",
                headers=bearer(second),
                json={"clinic": "AB-c2", "resource": "AB-c2-r1", "service": "filling", "start": start},
            )
            assert r.status_code == 201, r.text
            assert (await recv(staying))["data"]["kind"] == "booking_confirmed"


async def test_a_password_change_closes_every_socket_of_the_account(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        first, second = await two_sessions(client)
        async with live_socket(live, first) as one, live_socket(live, second) as other:
            assert await pong(one) and await pong(other)
            r = await client.post(
                "/api/auth/password",
                headers=bearer(second),
                json={"current_password": PASSWORD, "new_password": "a brand new secret"},
            )
            assert r.status_code == 200, r.text
            assert await closed_with(one) == CLOSE_SIGNED_OUT
            assert await closed_with(other) == CLOSE_SIGNED_OUT
            async with live_socket(live, r.json()["token"]) as fresh:
                assert await pong(fresh)


async def test_a_session_ended_by_another_process_closes_its_socket(live: LiveServer) -> None:
    """Another process (another node, the admin CLI) ends the session in the shared store:
    the hub's session sweep closes the socket within a sweep or two."""
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        token, _other = await two_sessions(client)
        async with live_socket(live, token) as ws:
            assert await pong(ws)
            elsewhere = AccountStore(live.data_dir / "accounts.sqlite3")
            try:
                sid = live.app_signer().verify(token)
                assert sid is not None
                elsewhere.end_session(sid["sid"])
            finally:
                elsewhere.close()
            closed = await asyncio.wait_for(ws.wait_closed(), scaled(20.0))
            assert closed is None and ws.close_code == CLOSE_SIGNED_OUT
