"""Integration tests: booking through HTTP against a live uvicorn (real Regions, FileJournal).

Public reads, hold -> confirm, hold expiry -> 410, Idempotency-Key retry and mismatch,
cancel / reschedule, .ics, and 200 concurrent bookings of one time: exactly one wins.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from engine.calendar import iso
from engine.events import Booked
from server.identity.accounts import Role
from tests.server.conftest import assert_error_shape, bearer
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer

LATER = FIRST_DAY + 3  # far enough ahead for the 24 h cancel notice
START_0900 = iso(LATER, CELL_0900, 15)


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def patient(client: httpx.AsyncClient, name: str = "Patient Test") -> dict[str, str]:
    import secrets

    r = await client.post(
        "/api/auth/register",
        json={"email": f"p-{secrets.token_hex(6)}@example.test", "password": "correct horse", "name": name},
    )
    assert r.status_code == 201, r.text
    return bearer(r.json()["token"])


def direct(resource: str = "AB-c1-r1", start: str = START_0900, clinic: str = "AB-c1") -> dict[str, str]:
    return {"clinic": clinic, "resource": resource, "service": "checkup", "start": start}


async def test_public_reads(client: httpx.AsyncClient) -> None:
    regions = (await client.get("/api/regions")).json()
    assert {r["code"] for r in regions} >= {"AB", "M"}
    assert next(r for r in regions if r["code"] == "AB")["clinics"] == 2
    services = (await client.get("/api/services")).json()
    assert {"id": "checkup", "name": "Undersökning", "name_en": "Check-up", "minutes": 30} in services
    clinic = (await client.get("/api/clinics/AB-c1")).json()
    assert [r["id"] for r in clinic["resources"]] == ["AB-c1-r1", "AB-c1-r2"]
    assert clinic["cell_minutes"] == 15
    found = (
        await client.get(
            "/api/clinics", params={"region": "AB", "service": "checkup", "from": "2026-12-07", "days": 3}
        )
    ).json()
    assert {c["id"] for c in found} == {"AB-c1", "AB-c2"}
    assert all(c["next_free"] for c in found)
    avail = (
        await client.get(
            "/api/clinics/AB-c1/availability", params={"service": "filling", "from": "2026-12-10", "days": 1}
        )
    ).json()
    times = avail["days"][0]["times"]
    # one entry per start time, naming every resource free then
    assert times[0] == {
        "start": "2026-12-10T08:00:00+01:00",
        "resource": "AB-c1-r1",
        "resources": ["AB-c1-r1", "AB-c1-r2"],
    }
    assert len({t["start"] for t in times}) == len(times)
    summary = (await client.get("/api/regions/AB/summary", params={"from": "2026-12-07", "days": 2})).json()
    assert set(summary["clinics"]) == {"AB-c1", "AB-c2"} and len(summary["clinics"]["AB-c1"]) == 2
    assert summary["service"] == "checkup" and len(summary["starts"]["AB-c1"]) == 2
    # the map's figure: the times a filling can be booked, as many as the availability lists
    fillings = (
        await client.get(
            "/api/regions/AB/summary", params={"service": "filling", "from": "2026-12-10", "days": 1}
        )
    ).json()
    assert fillings["service"] == "filling" and fillings["starts"]["AB-c1"] == [len(times)]
    near = (await client.get("/api/clinics", params={"near": "55.6,13.0", "limit": 1})).json()
    assert near[0]["id"] == "M-c1" or near[0]["distance_km"] >= 0


async def test_hold_then_confirm(client: httpx.AsyncClient) -> None:
    who = await patient(client)
    start = iso(LATER, CELL_0900 + 8, 15)
    r = await client.post("/api/holds", json=direct("AB-c2-r1", start, "AB-c2"), headers=who)
    assert r.status_code == 201, r.text
    hold = r.json()["hold"]
    assert hold["start"] == start and hold["end"] == iso(LATER, CELL_0900 + 10, 15)
    r = await client.post("/api/bookings", json={"hold": hold["id"]}, headers=who)
    assert r.status_code == 201, r.text
    booking = r.json()["booking"]
    assert booking["start"] == start and booking["status"] == "booked"
    assert booking["clinic_name"] == "Testkliniken 2"
    mine = (await client.get("/api/bookings", headers=who)).json()["bookings"]
    assert [b["id"] for b in mine] == [booking["id"]]
    ics = await client.get(f"/api/bookings/{booking['id']}/ics", headers=who)
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    assert "BEGIN:VEVENT" in ics.text and f"UID:{booking['id']}@tandtid" in ics.text


async def test_hold_expiry_gives_410(client: httpx.AsyncClient, live: LiveServer) -> None:
    who = await patient(client)
    start = iso(LATER, CELL_0900 + 16, 15)
    r = await client.post("/api/holds", json=direct("AB-c2-r2", start, "AB-c2"), headers=who)
    assert r.status_code == 201, r.text
    hold_id = r.json()["hold"]["id"]
    live.clock.advance(live.settings.hold_ttl_s + 1)
    try:
        r = await client.post("/api/bookings", json={"hold": hold_id}, headers=who)
    finally:
        live.clock.advance(-(live.settings.hold_ttl_s + 1))
    assert_error_shape(r, 410, "HOLD_EXPIRED")


async def test_idempotency_key_retry_and_mismatch(client: httpx.AsyncClient) -> None:
    who = await patient(client)
    body = direct("AB-c1-r2", iso(LATER, CELL_0900 + 16, 15))
    headers = {**who, "Idempotency-Key": "retry-1"}
    first = await client.post("/api/bookings", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post("/api/bookings", json=body, headers=headers)
    assert again.status_code == 201 and again.json() == first.json()
    other = await client.post(
        "/api/bookings", json={**body, "start": iso(LATER, CELL_0900 + 20, 15)}, headers=headers
    )
    assert_error_shape(other, 409, "IDEMPOTENCY_MISMATCH")
    mine = (await client.get("/api/bookings", headers=who)).json()["bookings"]
    assert len(mine) == 1


async def test_cancel_and_reschedule(client: httpx.AsyncClient) -> None:
    who = await patient(client)
    r = await client.post(
        "/api/bookings", json=direct("AB-c1-r1", iso(LATER, CELL_0900 + 24, 15)), headers=who
    )
    assert r.status_code == 201, r.text
    booking_id = r.json()["booking"]["id"]
    moved_to = iso(LATER + 1, CELL_0900, 15)
    r = await client.post(
        f"/api/bookings/{booking_id}/reschedule",
        json={"resource": "AB-c1-r2", "start": moved_to},
        headers=who,
    )
    assert r.status_code == 200, r.text
    assert r.json()["booking"]["start"] == moved_to and r.json()["booking"]["resource"] == "AB-c1-r2"
    r = await client.post(f"/api/bookings/{booking_id}/cancel", headers=who)
    assert r.status_code == 200 and r.json()["booking"]["status"] == "cancelled"
    r = await client.post(f"/api/bookings/{booking_id}/cancel", headers=who)
    assert_error_shape(r, 422, "INVALID")


async def test_a_clinic_cancels_with_a_reason_the_patient_is_shown(
    client: httpx.AsyncClient, live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The clinic's (or support's) reason reaches the patient's booking; it is validated, and it never
    reaches a log line or a metric. A patient's own cancellation carries none."""
    caplog.set_level(logging.DEBUG)
    who = await patient(client)
    ids = []
    for resource, cell in (("AB-c2-r1", CELL_0900), ("AB-c2-r1", CELL_0900 + 4), ("AB-c2-r2", CELL_0900)):
        r = await client.post(
            "/api/bookings", json=direct(resource, iso(LATER - 1, cell, 15), "AB-c2"), headers=who
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["booking"]["id"])
    key = bearer(live.accounts.create_clinic_key("AB-c2"))
    cancel = f"/api/clinic/v1/bookings/{ids[0]}/cancel"
    for bad in ("x" * 301, "two\nlines", "   ", 5, ["x"]):
        r = await client.post(cancel, json={"reason": bad}, headers=key)
        assert assert_error_shape(r, 422, "INVALID")["field"] == "reason", bad
    assert_error_shape(await client.post(cancel, json={"why": "x"}, headers=key), 422, "INVALID")
    assert (await client.get(f"/api/bookings/{ids[0]}", headers=who)).json()["booking"]["status"] == "booked"

    reason = "Tandläkaren är sjuk – ring oss på 08-123 45 67 för en ny tid"
    r = await client.post(cancel, json={"reason": f"  {reason} "}, headers=key)
    assert r.status_code == 200, r.text
    assert r.json()["booking"]["cancel_reason"] == reason
    _, admin = live.user(Role.ADMIN)
    r = await client.post(
        f"/api/admin/bookings/{ids[1]}/cancel", json={"reason": "Stängt"}, headers=bearer(admin)
    )
    assert r.status_code == 200 and r.json()["booking"]["cancel_reason"] == "Stängt"
    r = await client.post(f"/api/bookings/{ids[2]}/cancel", json={"reason": "mine"}, headers=who)
    assert r.status_code == 200 and "cancel_reason" not in r.json()["booking"]  # the patient's own: none

    mine = {b["id"]: b for b in (await client.get("/api/bookings", headers=who)).json()["bookings"]}
    assert (mine[ids[0]]["cancelled_by"], mine[ids[0]]["cancel_reason"]) == ("clinic", reason)
    assert (mine[ids[1]]["cancelled_by"], mine[ids[1]]["cancel_reason"]) == ("admin", "Stängt")
    assert mine[ids[2]]["cancelled_by"] == "patient" and "cancel_reason" not in mine[ids[2]]
    metrics = (await client.get("/metrics")).text
    assert "/api/clinic/v1/bookings/{id}/cancel" in caplog.text  # the access log was captured ...
    for text in (caplog.text, metrics):
        assert "Tandläkaren" not in text and "Stängt" not in text  # ... without the reason


async def test_patient_cannot_cancel_inside_the_notice_period(client: httpx.AsyncClient) -> None:
    who = await patient(client)
    r = await client.post(
        "/api/bookings", json=direct("AB-c1-r1", iso(FIRST_DAY, CELL_0900 + 4, 15)), headers=who
    )
    assert r.status_code == 201, r.text
    r = await client.post(f"/api/bookings/{r.json()['booking']['id']}/cancel", headers=who)
    error = assert_error_shape(r, 409, "TOO_LATE")
    assert "call the clinic" in error["message"]


async def test_two_hundred_concurrent_bookings_of_one_time(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    tokens = [
        bearer(
            live.session_token(
                live.accounts.create_user(f"race-{i}@example.test", "password-123", f"Racer {i}")
            )
        )
        for i in range(200)
    ]
    start = iso(LATER + 1, CELL_0900, 15)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=live.url, timeout=60, limits=limits) as many:
        responses = await asyncio.gather(
            *(many.post("/api/bookings", json=direct("AB-c2-r1", start, "AB-c2"), headers=t) for t in tokens)
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == 199, statuses
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "SLOT_TAKEN"
    winner = next(r for r in responses if r.status_code == 201).json()["booking"]
    # via the API (an admin's view of the clinic's bookings) ...
    _, admin = live.user(Role.ADMIN)
    listed = (
        await client.get(
            "/api/admin/bookings",
            params={"clinic": "AB-c2", "from": "2026-12-11", "days": 1},
            headers=bearer(admin),
        )
    ).json()
    at_start = [b for b in listed["bookings"] if b["start"] == start and b["resource"] == "AB-c2-r1"]
    assert [b["id"] for b in at_start] == [winner["id"]]
    # ... and via the journal: exactly one Booked event for those cells
    events = await live.journal_events("AB")
    booked = [
        e
        for e in events
        if isinstance(e, Booked) and e.resource == "AB-c2-r1" and e.day == LATER + 1 and e.cell == CELL_0900
    ]
    assert [e.booking_id for e in booked] == [winner["id"]]
