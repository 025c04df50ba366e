"""Integration tests: inputs that cannot hurt, over HTTP against a live uvicorn.

Dates beyond the horizon, coerced types, idempotency keys across regions, control
characters in names, client-chosen ids in logs and the journal, private responses kept out
of caches, and a full disk answered 503.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from engine.calendar import iso
from tests.server.conftest import assert_error_shape, bearer
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer

DAY = FIRST_DAY + 2
FAR = "2028-06-01"  # the live server's clock is 2026-12-07: far past the 400-day horizon


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


@pytest.fixture
def key(live: LiveServer) -> str:
    return live.accounts.create_clinic_key("AB-c2")


async def test_dates_beyond_the_horizon_are_422_not_500(
    client: httpx.AsyncClient, live: LiveServer, key: str
) -> None:
    for path in ("/api/clinics/AB-c1/availability", "/api/regions/AB/summary", "/api/clinics"):
        for when in ("9999-12-31", FAR):
            r = await client.get(path, params={"from": when, "days": "31"})
            assert assert_error_shape(r, 422, "INVALID")["field"] == "from", (path, when)
    r = await client.get("/api/clinic/v1/day", params={"date": "9999-12-31"}, headers=bearer(key))
    assert assert_error_shape(r, 422, "INVALID")["field"] == "date"
    for body in (
        {"resource": "AB-c2-r1", "from": "9999-10-01", "days": 90},
        {"resource": "AB-c2-r1", "from": FAR, "days": 1},
        {"resource": "AB-c2-r1", "from": "2027-12-30", "days": 90},  # starts inside, ends outside
    ):
        r = await client.post("/api/clinic/v1/open", json=body, headers=bearer(key))
        assert assert_error_shape(r, 422, "INVALID")["field"] in ("from", "days"), body
    ok = {"resource": "AB-c2-r1", "from": "2027-06-01", "days": 5}
    assert (await client.post("/api/clinic/v1/open", json=ok, headers=bearer(key))).status_code == 200
    _, token = live.user()
    body = {"clinic": "AB-c1", "service": "checkup", "from": "9999-12-31", "days": 14}
    r = await client.post("/api/waitlist", json=body, headers=bearer(token))
    assert assert_error_shape(r, 422, "INVALID")["field"] == "from"


async def test_wrong_types_are_refused_not_coerced(
    client: httpx.AsyncClient, live: LiveServer, key: str
) -> None:
    for days in (True, "5", "5.0", 5.5, None):
        body = {"resource": "AB-c2-r1", "from": "2026-12-20", "days": days}
        r = await client.post("/api/clinic/v1/open", json=body, headers=bearer(key))
        assert assert_error_shape(r, 422, "INVALID")["field"] == "days", days
    _, token = live.user()
    start = int(datetime.fromisoformat(iso(DAY, CELL_0900, 15)).timestamp())  # a real cell start, as a number
    hold = {"clinic": "AB-c1", "resource": "AB-c1-r1", "service": "checkup", "start": start}
    r = await client.post("/api/holds", json=hold, headers=bearer(token))
    assert assert_error_shape(r, 422, "INVALID")["field"] == "start"
    r = await client.post("/api/bookings", json=hold, headers=bearer(token))
    assert assert_error_shape(r, 422, "INVALID")["field"] == "start"
    for date in ("0", "1796000000", "20261208"):
        r = await client.get("/api/clinic/v1/day", params={"date": date}, headers=bearer(key))
        assert assert_error_shape(r, 422, "INVALID")["field"] == "date", date
    r = await client.get("/api/clinics/AB-c1/availability", params={"from": "0"})
    assert assert_error_shape(r, 422, "INVALID")["field"] == "from"


async def test_an_idempotency_key_is_the_patients_across_regions(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    _, token = live.user()
    idem = {**bearer(token), "Idempotency-Key": "retry-" + secrets.token_hex(4)}
    in_ab = {
        "clinic": "AB-c1",
        "resource": "AB-c1-r2",
        "service": "checkup",
        "start": iso(DAY, CELL_0900, 15),
    }
    in_m = {"clinic": "M-c1", "resource": "M-c1-r1", "service": "checkup", "start": iso(DAY, CELL_0900, 15)}
    first = await client.post("/api/bookings", json=in_ab, headers=idem)
    assert first.status_code == 201, first.text
    again = await client.post("/api/bookings", json=in_ab, headers=idem)
    assert again.status_code == 201 and again.json()["booking"]["id"] == first.json()["booking"]["id"]
    r = await client.post("/api/bookings", json=in_m, headers=idem)
    assert_error_shape(r, 409, "IDEMPOTENCY_MISMATCH")
    mine = (await client.get("/api/bookings", headers=bearer(token))).json()["bookings"]
    assert [b["id"] for b in mine] == [first.json()["booking"]["id"]]


async def test_control_characters_are_refused_in_names(client: httpx.AsyncClient) -> None:
    for name in ("Anna\x00", "Anna\x1b[31m", "Anna \u202eannA", "Anna\r\nBcc: x@example.se", "\tAnna\x7f"):
        body = {"email": f"c-{secrets.token_hex(5)}@example.test", "password": "password-123", "name": name}
        r = await client.post("/api/auth/register", json=body)
        assert assert_error_shape(r, 422, "INVALID")["field"] == "name", repr(name)
    body = {
        "email": f"c-{secrets.token_hex(5)}@example.test",
        "password": "password-123",
        "name": "Åsa Öberg-Ärlig",
    }
    assert (await client.post("/api/auth/register", json=body)).status_code == 201


async def test_client_chosen_ids_are_logged_only_when_safe_and_never_journaled_raw(
    client: httpx.AsyncClient, live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    personal_rid = "anna.svensson-19850101"
    personal_key = "Anna Svensson 850101-1234"
    safe_rid = "0f8e2c7a-5b1d-4e3f-9a6b-2c4d6e8f0a1b"
    _, token = live.user()
    r = await client.get("/api/holds", headers={**bearer(token), "X-Request-ID": personal_rid})
    assert r.status_code == 200 and r.headers["x-request-id"] != personal_rid
    r = await client.get("/api/holds", headers={**bearer(token), "X-Request-ID": safe_rid})
    assert r.headers["x-request-id"] == safe_rid
    body = {
        "clinic": "AB-c1",
        "resource": "AB-c1-r1",
        "service": "cleaning",
        "start": iso(DAY + 1, CELL_0900, 15),
    }
    headers = {**bearer(token), "Idempotency-Key": personal_key, "X-Request-ID": personal_rid}
    first = await client.post("/api/bookings", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post("/api/bookings", json=body, headers=headers)
    assert again.json()["booking"]["id"] == first.json()["booking"]["id"]
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert safe_rid in logged
    assert personal_rid not in logged and personal_key not in logged
    journaled = repr(await live.journal_events("AB"))
    assert first.json()["booking"]["id"] in journaled
    assert personal_key not in journaled and "850101" not in journaled


async def test_private_answers_are_not_stored_by_caches(client: httpx.AsyncClient, live: LiveServer) -> None:
    _, token = live.user()
    body = {"clinic": "AB-c2", "resource": "AB-c2-r2", "service": "checkup", "start": iso(DAY, CELL_0900, 15)}
    booked = await client.post("/api/bookings", json=body, headers=bearer(token))
    assert booked.status_code == 201, booked.text
    for path in ("/api/bookings", f"/api/bookings/{booked.json()['booking']['id']}", "/api/auth/me"):
        r = await client.get(path, headers=bearer(token))
        assert r.status_code == 200 and r.headers.get("cache-control") == "no-store", (path, r.headers)


async def test_register_on_a_full_disk_is_503(client: httpx.AsyncClient, live: LiveServer) -> None:
    db = live.accounts._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own 'database or disk is full'
    try:
        statuses = []
        for _ in range(60):
            body = {
                "email": f"f-{secrets.token_hex(8)}@example.test",
                "password": "password-123",
                "name": "F" * 200,
            }
            r = await client.post("/api/auth/register", json=body)
            statuses.append(r.status_code)
            if r.status_code != 201:
                assert_error_shape(r, 503, "UNAVAILABLE")
                assert r.headers["retry-after"]
                break
        assert statuses[-1] == 503, statuses
    finally:
        db.execute("PRAGMA max_page_count = 1073741823")
