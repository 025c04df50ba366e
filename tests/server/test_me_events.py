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

from engine.calendar import iso
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
