"""Integration: the admin's view of the local outbox over real HTTP (live uvicorn server), with
the outbox in the data directory and then in a real Redis (``--redis``: every node's)."""

from __future__ import annotations

from email.message import EmailMessage

import httpx
import pytest

from server.identity.accounts import Role
from server.stores import open_outbox
from tests.server.conftest import bearer
from tests.support.live_server import LiveServer


def message(key: str) -> EmailMessage:
    m = EmailMessage()
    m["Subject"] = "Bokningsbekräftelse / Booking confirmed"
    m["To"] = "someone@example.test"
    m["X-Tandtid-Key"] = key
    m.set_content("Hej!")
    m.add_attachment(
        b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", maintype="text", subtype="calendar", filename="AB-b1.ics"
    )
    return m


@pytest.fixture(scope="module")
def live(live_each_store: LiveServer) -> LiveServer:
    return live_each_store


async def test_admin_reads_the_outbox_and_nobody_else_does(live: LiveServer) -> None:
    outbox = open_outbox(live.settings.data_dir, live.redis_url)
    assert outbox.put("AB:7:0:booked", message("AB:7:0:booked"))
    assert not outbox.put("AB:7:0:booked", message("AB:7:0:booked"))  # one file per key
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
        assert r.json()["text"].strip() == "Hej!"
        assert r.json()["attachments"] == [{"filename": "AB-b1.ics", "content_type": "text/calendar"}]
        assert (await client.get("/api/admin/outbox", headers=bearer(patient))).status_code == 403
        assert (await client.get("/api/admin/outbox")).status_code == 401
        r = await client.get("/api/admin/outbox/..%2Faccounts.sqlite3", headers=bearer(admin))
        assert r.status_code == 404
    outbox.close()
