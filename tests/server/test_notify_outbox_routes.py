"""Integration: the admin's view of the local outbox over real HTTP (live uvicorn server), with
the outbox in the data directory and then in a real Redis (``--redis``: every node's)."""

from __future__ import annotations

import httpx
import pytest

from engine.records import Booking, BookingStatus
from server.consumers.notify.messages import Mail, compose
from server.identity.accounts import Role
from server.stores import open_outbox
from tests.server.conftest import bearer
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, clinic
from tests.support.live_server import LiveServer


def message(key: str) -> Mail:
    booking = Booking(
        "AB-b1", "p1", "AB-c1", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900, 2, BookingStatus.BOOKED, NOW
    )
    return compose(
        "booked",
        key,
        booking=booking,
        clinic=clinic("AB", 1)[0],
        to_name="Åsa Öberg",
        to_email="someone@example.test",
        sender="Tandtid <no-reply@tandtid.se>",
        now_s=NOW,
    )


@pytest.fixture(scope="module")
def live(live_each_store: LiveServer) -> LiveServer:
    return live_each_store


async def test_admin_reads_the_outbox_and_nobody_else_does(live: LiveServer) -> None:
    outbox = open_outbox(live.settings.data_dir, live.redis_url)
    assert outbox.put(message("AB:7:0:booked"))
    assert not outbox.put(message("AB:7:0:booked"))  # once per key
    _, admin = live.user(Role.ADMIN)
    _, patient = live.user(Role.PATIENT)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        r = await client.get("/api/admin/outbox", headers=bearer(admin))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == 1 and body["messages"][0]["key"] == "AB:7:0:booked"
        name = body["messages"][0]["name"]
        r = await client.get(f"/api/admin/outbox/{name}", headers=bearer(admin))
        assert r.status_code == 200
        assert r.json()["to"] == "Åsa Öberg <someone@example.test>"
        assert r.json()["subject"] == "Bokningsbekräftelse / Booking confirmed – Testkliniken 1"
        assert r.json()["text"].startswith("Hej Åsa Öberg,\r\n\r\nDin tid är bokad.")
        assert r.json()["attachments"] == [{"filename": "AB-b1.ics", "content_type": "text/calendar"}]
        assert (await client.get("/api/admin/outbox", headers=bearer(patient))).status_code == 403
        assert (await client.get("/api/admin/outbox")).status_code == 401
        r = await client.get("/api/admin/outbox/..%2Faccounts.sqlite3", headers=bearer(admin))
        assert r.status_code == 404
    outbox.close()
