"""Integration tests: private iCal feeds over HTTP against a live uvicorn (real Regions, real SQLite store).

A patient's feed lists their upcoming bookings; a clinic's feed lists the clinic's bookings
without patient names; tokens are stored hashed, replaced on re-creation and revocable.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator

import httpx
import pytest

from engine.calendar import iso
from server.identity.accounts import Role
from tests.server.conftest import assert_error_shape, bearer
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer

LATER = FIRST_DAY + 3


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def book(client: httpx.AsyncClient, who: dict[str, str], resource: str, cell: int) -> str:
    clinic = resource.rsplit("-", 1)[0]
    r = await client.post(
        "/api/bookings",
        headers=who,
        json={"clinic": clinic, "resource": resource, "service": "checkup", "start": iso(LATER, cell, 15)},
    )
    assert r.status_code == 201, r.text
    booking_id: str = r.json()["booking"]["id"]
    return booking_id


async def test_patient_feed_lists_upcoming_bookings_and_is_revocable(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    user, token = live.user(Role.PATIENT, name="Greta Feedsson")
    who = bearer(token)
    mine = [await book(client, who, "AB-c1-r1", CELL_0900), await book(client, who, "M-c1-r1", CELL_0900 + 4)]
    _, other = live.user(Role.PATIENT)
    theirs = await book(client, bearer(other), "AB-c1-r2", CELL_0900)
    r = await client.post(f"/api/bookings/{mine[1]}/cancel", headers=who)
    assert r.status_code == 200, r.text

    r = await client.post("/api/me/ical-token", headers=who)
    assert r.status_code == 201, r.text
    path = r.json()["path"]
    assert path.startswith("/ical/patient/") and path.endswith(".ics") and r.json()["url"].endswith(path)
    feed = await client.get(path)
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/calendar")
    text = feed.text
    assert text.startswith("BEGIN:VCALENDAR") and text.count("BEGIN:VEVENT") == 1
    assert f"UID:{mine[0]}@tandtid" in text and mine[1] not in text and theirs not in text
    assert "Greta" not in text and user.id not in text
    # only a hash is stored
    token_part = path.removeprefix("/ical/patient/").removesuffix(".ics")
    with sqlite3.connect(live.data_dir / "accounts.sqlite3") as db:
        stored = [row[0] for row in db.execute("SELECT token_hash FROM ical_tokens")]
    assert stored and token_part not in stored

    # a new token replaces the old one; revoking ends the feed
    r = await client.post("/api/me/ical-token", headers=who)
    new_path = r.json()["path"]
    assert_error_shape(await client.get(path), 404, "NOT_FOUND")
    assert (await client.get(new_path)).status_code == 200
    assert (await client.delete("/api/me/ical-token", headers=who)).status_code == 204
    assert_error_shape(await client.get(new_path), 404, "NOT_FOUND")
    assert_error_shape(await client.get(f"/ical/patient/{secrets.token_urlsafe(32)}.ics"), 404, "NOT_FOUND")
    assert_error_shape(await client.post("/api/me/ical-token"), 401, "UNAUTHENTICATED")


async def test_clinic_feed_has_the_clinics_bookings_and_no_patient_names(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    user, token = live.user(Role.PATIENT, name="Olle Hemligsson")
    booking = await book(client, bearer(token), "AB-c2-r1", CELL_0900 + 8)
    elsewhere = await book(client, bearer(token), "AB-c1-r1", CELL_0900 + 8)
    _, staff = live.user(Role.STAFF, "AB-c2")
    r = await client.post("/api/clinic/v1/ical-token", headers=bearer(staff))
    assert r.status_code == 201, r.text
    path = r.json()["path"]
    assert path.startswith("/ical/clinic/")
    # a clinic token is not a patient token
    assert_error_shape(await client.get(path.replace("/clinic/", "/patient/")), 404, "NOT_FOUND")
    text = (await client.get(path)).text
    assert f"UID:{booking}@tandtid" in text and elsewhere not in text
    assert "Tandläkare 1" in text and "X-WR-CALNAME:Testkliniken 2" in text
    assert "Olle" not in text and "Hemligsson" not in text and user.id not in text
    assert (await client.delete("/api/clinic/v1/ical-token", headers=bearer(staff))).status_code == 204
    assert_error_shape(await client.get(path), 404, "NOT_FOUND")
