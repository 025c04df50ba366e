"""Integration tests: the wait-list over HTTP and the live hub against a live uvicorn (real Regions, FileJournal).

Three patients wait, a booking is cancelled: only the first sees an offer (as a hold, and as a
"me" event on its socket); the offer expires (the server's clock moves); the second gets it and
books; the third is told nothing. The offer e-mail is composed from the real journal. No-show.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from engine.calendar import date_of, iso
from engine.events import OfferMade
from server.consumers.feed import Projection
from server.consumers.notify.messages import compose
from server.identity.accounts import Role
from tests.server.conftest import assert_error_shape, bearer
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer
from tests.support.waiting import eventually, scaled

TIMEOUT = scaled(10.0)  # how long a frame may take to arrive (TANDTID_TEST_TIMEOUT_FACTOR scales it)
LATER = FIRST_DAY + 3  # far enough ahead for the 24 h cancel notice
LATER_DATE = date_of(LATER).isoformat()
START_0900 = iso(LATER, CELL_0900, 15)


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def patient(client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    r = await client.post(
        "/api/auth/register",
        json={
            "email": f"p-{secrets.token_hex(6)}@example.test",
            "password": "correct horse",
            "name": "Väntande",
        },
    )
    assert r.status_code == 201, r.text
    return bearer(r.json()["token"]), r.json()["token"]


def wait_body(**kw: Any) -> dict[str, Any]:
    return {
        "clinic": "AB-c1",
        "service": "checkup",
        "from": LATER_DATE,
        "days": 1,
        "from_time": "08:00",
        "to_time": "12:00",
        **kw,
    }


async def holds(client: httpx.AsyncClient, who: dict[str, str]) -> list[dict[str, Any]]:
    r = await client.get("/api/holds", headers=who)
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["holds"]
    return result


async def test_three_wait_one_offer_at_a_time(client: httpx.AsyncClient, live: LiveServer) -> None:
    p0, _ = await patient(client)
    (p1, token1), (p2, _), (p3, _) = [await patient(client) for _ in range(3)]
    r = await client.post(
        "/api/bookings",
        headers=p0,
        json={"clinic": "AB-c1", "resource": "AB-c1-r1", "service": "checkup", "start": START_0900},
    )
    assert r.status_code == 201, r.text
    booking_id = r.json()["booking"]["id"]
    entries = []
    for who in (p1, p2, p3):
        r = await client.post("/api/waitlist", headers=who, json=wait_body())
        assert r.status_code == 201, r.text
        entry = r.json()["entry"]
        assert entry["clinic"] == "AB-c1" and entry["from"] == LATER_DATE and entry["offer"] is None
        assert (entry["from_time"], entry["to_time"]) == ("08:00", "12:00")
        entries.append(entry)

    async with connect(
        live.url.replace("http", "ws") + "/ws", additional_headers={"Authorization": f"Bearer {token1}"}
    ) as ws:
        await ws.send(orjson.dumps({"op": "ping"}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) == {"type": "pong"}
        r = await client.post(f"/api/bookings/{booking_id}/cancel", headers=p0)
        assert r.status_code == 200, r.text
        event = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert event["topic"] == "me" and event["data"]["kind"] == "offer"
    offered = event["data"]["hold"]
    assert offered["offer"] is True and offered["start"] == START_0900 and offered["resource"] == "AB-c1-r1"

    (hold,) = await holds(client, p1)
    assert hold == offered
    assert await holds(client, p2) == [] and await holds(client, p3) == []
    listed = (await client.get("/api/waitlist", headers=p1)).json()["entries"]
    assert [e["id"] for e in listed] == [entries[0]["id"]] and listed[0]["offer"]["id"] == hold["id"]
    # somebody else cannot take the offered time, nor confirm the offer
    r = await client.post("/api/bookings", headers=p3, json={"hold": hold["id"]})
    assert_error_shape(r, 410, "HOLD_EXPIRED")
    r = await client.post(
        "/api/bookings",
        headers=p3,
        json={"clinic": "AB-c1", "resource": "AB-c1-r1", "service": "checkup", "start": START_0900},
    )
    assert_error_shape(r, 409, "SLOT_TAKEN")

    live.clock.advance(10 * 60)  # the offer window passes: the actor's tick hands it on
    (hold2,) = await eventually(lambda: holds(client, p2), what="the offer to pass to the second patient")
    assert hold2["offer"] is True and hold2["start"] == START_0900
    assert (
        await holds(client, p1) == []
        and (await client.get("/api/waitlist", headers=p1)).json()["entries"] == []
    )
    r = await client.post("/api/bookings", headers=p2, json={"hold": hold2["id"]})
    assert r.status_code == 201, r.text
    assert r.json()["booking"]["start"] == START_0900
    assert (await client.get("/api/waitlist", headers=p2)).json()["entries"] == []

    # the third was told nothing and still waits
    assert await holds(client, p3) == []
    (third,) = (await client.get("/api/waitlist", headers=p3)).json()["entries"]
    assert third["offer"] is None
    r = await client.delete(f"/api/waitlist/{third['id']}", headers=p2)
    assert_error_shape(r, 404, "NOT_FOUND")
    r = await client.delete(f"/api/waitlist/{third['id']}", headers=p3)
    assert r.status_code == 204
    assert (await client.get("/api/waitlist", headers=p3)).json()["entries"] == []

    # the offers are journaled facts: the notifier's projection turns them into offer e-mails
    projection = Projection()
    facts = [
        f
        for i, e in enumerate(await live.journal_events("AB"))
        if (f := projection.apply("AB", i + 1, 0, e)) is not None and f.kind == "offer"
    ]
    assert [f.booking.id for f in facts] == [hold["id"], hold2["id"]]
    mail = compose(
        "offer",
        facts[0].key,
        booking=facts[0].booking,
        clinic=facts[0].clinic,
        to_name="Väntande",
        to_email="p1@example.test",
        sender="tandtid@example.test",
        now_s=facts[0].at,
    )
    message = message_from_bytes(mail.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert "A time has opened up" in message["Subject"]
    assert b"STATUS:TENTATIVE" in next(iter(message.iter_attachments())).get_payload(decode=True)
    assert sum(isinstance(e, OfferMade) for e in await live.journal_events("AB")) == 2


async def test_join_input_is_checked(client: httpx.AsyncClient) -> None:
    who, _ = await patient(client)
    cases = [
        (wait_body(municipality="0180"), 422, "INVALID"),
        ({k: v for k, v in wait_body().items() if k != "clinic"}, 422, "INVALID"),
        (wait_body(from_time="12:00", to_time="08:00"), 422, "INVALID"),
        (wait_body(to_time="25:00"), 422, "INVALID"),
        (wait_body(**{"from": "2020-01-01"}), 422, "INVALID"),
        (wait_body(clinic="AB-c9"), 404, "NOT_FOUND"),
        (wait_body(clinic=None, municipality="9999"), 404, "NOT_FOUND"),
    ]
    for body, status, code in cases:
        assert_error_shape(await client.post("/api/waitlist", headers=who, json=body), status, code)
    r = await client.post("/api/waitlist", headers=who, json=wait_body(clinic=None, municipality="0180"))
    assert r.status_code == 201, r.text
    assert r.json()["entry"]["municipality"] == "0180" and r.json()["entry"]["id"].startswith("AB-w")
    client.cookies.clear()  # registering set session cookies; without any credentials:
    assert_error_shape(await client.post("/api/waitlist", json=wait_body()), 401, "UNAUTHENTICATED")


async def test_staff_mark_a_no_show_after_the_start_only(client: httpx.AsyncClient, live: LiveServer) -> None:
    who, _ = await patient(client)
    _, staff = live.user(Role.STAFF, "AB-c1")
    _, other_staff = live.user(Role.STAFF, "AB-c2")
    day = FIRST_DAY + 4  # a Friday
    r = await client.post(
        "/api/bookings",
        headers=who,
        json={
            "clinic": "AB-c1",
            "resource": "AB-c1-r2",
            "service": "checkup",
            "start": iso(day, CELL_0900, 15),
        },
    )
    assert r.status_code == 201, r.text
    booking_id = r.json()["booking"]["id"]
    url = f"/api/clinic/v1/bookings/{booking_id}/no-show"
    assert_error_shape(await client.post(url, headers=bearer(staff)), 422, "INVALID")  # not started yet
    assert_error_shape(await client.post(url, headers=bearer(other_staff)), 404, "NOT_FOUND")
    live.clock.now = float(iso_epoch(day) + 9 * 3600 + 600)
    r = await client.post(url, headers=bearer(staff))
    assert r.status_code == 200, r.text
    assert r.json()["booking"]["status"] == "no_show"
    assert (await client.get(f"/api/bookings/{booking_id}", headers=who)).json()["booking"][
        "status"
    ] == "no_show"


def iso_epoch(day: int) -> int:
    """Epoch seconds of local midnight of ``day``."""
    from datetime import datetime

    from engine.calendar import TZ

    d = date_of(day)
    return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp())
