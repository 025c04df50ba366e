"""Integration tests: who may do what, over HTTP against a live server.

Patients cannot see or touch each other's bookings (404, never 403: nothing revealed), clinic
keys and staff reach only their own clinic, patients cannot reach admin routes, forged /
expired / alg:none tokens are 401, cookie writes without the CSRF header are 403.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from engine.calendar import iso
from server.identity.accounts import Role
from server.identity.auth import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from tests.server.conftest import assert_error_shape, bearer
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer

DAY = FIRST_DAY + 2


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def book(client: httpx.AsyncClient, token: str, cell: int, resource: str = "AB-c1-r1") -> str:
    clinic = resource.rsplit("-", 1)[0]
    r = await client.post(
        "/api/bookings",
        headers=bearer(token),
        json={"clinic": clinic, "resource": resource, "service": "checkup", "start": iso(DAY, cell, 15)},
    )
    assert r.status_code == 201, r.text
    booking_id: str = r.json()["booking"]["id"]
    return booking_id


async def test_patient_cannot_see_cancel_or_move_another_patients_booking(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    _, alice = live.user()
    _, bob = live.user()
    booking = await book(client, alice, CELL_0900)
    for method, path, body in [
        ("GET", f"/api/bookings/{booking}", None),
        ("GET", f"/api/bookings/{booking}/ics", None),
        ("POST", f"/api/bookings/{booking}/cancel", None),
        ("POST", f"/api/bookings/{booking}/reschedule", {"resource": "AB-c1-r1", "start": iso(DAY, 40, 15)}),
    ]:
        r = await client.request(method, path, json=body, headers=bearer(bob))
        assert_error_shape(r, 404, "NOT_FOUND")
    # an unknown id looks exactly the same
    unknown = await client.get("/api/bookings/AB-bNoSuchBooking", headers=bearer(bob))
    assert_error_shape(unknown, 404, "NOT_FOUND")
    assert (
        unknown.json()["error"]["message"]
        == (await client.get(f"/api/bookings/{booking}", headers=bearer(bob))).json()["error"]["message"]
    )
    assert (await client.get("/api/bookings", headers=bearer(bob))).json() == {"bookings": []}
    # Alice's booking is untouched
    r = await client.get(f"/api/bookings/{booking}", headers=bearer(alice))
    assert r.status_code == 200 and r.json()["booking"]["status"] == "booked"


async def test_patient_cannot_confirm_or_release_another_patients_hold(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    _, alice = live.user()
    _, bob = live.user()
    r = await client.post(
        "/api/holds",
        headers=bearer(alice),
        json={
            "clinic": "AB-c1",
            "resource": "AB-c1-r2",
            "service": "checkup",
            "start": iso(DAY, CELL_0900 + 4, 15),
        },
    )
    assert r.status_code == 201, r.text
    hold = r.json()["hold"]["id"]
    assert_error_shape(await client.delete(f"/api/holds/{hold}", headers=bearer(bob)), 404, "NOT_FOUND")
    stolen = await client.post("/api/bookings", json={"hold": hold}, headers=bearer(bob))
    assert stolen.status_code in (404, 410) and stolen.json()["error"]["code"] in (
        "NOT_FOUND",
        "HOLD_EXPIRED",
    )
    assert (await client.delete(f"/api/holds/{hold}", headers=bearer(alice))).status_code == 204


async def test_clinic_key_reaches_only_its_own_clinic(client: httpx.AsyncClient, live: LiveServer) -> None:
    key_1 = live.accounts.create_clinic_key("AB-c1")
    key_2 = live.accounts.create_clinic_key("AB-c2")
    _, patient = live.user()
    booking_at_c1 = await book(client, patient, CELL_0900 + 8)
    # clinic 2 cannot cancel clinic 1's booking, nor touch its resources
    assert_error_shape(
        await client.post(f"/api/clinic/v1/bookings/{booking_at_c1}/cancel", headers=bearer(key_2)),
        404,
        "NOT_FOUND",
    )
    for path, body in [
        ("/api/clinic/v1/block", {"resource": "AB-c1-r1", "start": iso(DAY, 40, 15), "minutes": 30}),
        ("/api/clinic/v1/unblock", {"resource": "AB-c1-r1", "start": iso(DAY, 40, 15), "minutes": 30}),
        ("/api/clinic/v1/open", {"resource": "AB-c1-r1", "from": "2026-12-20", "days": 2}),
        ("/api/clinic/v1/block", {"resource": "M-c1-r1", "start": iso(DAY, 40, 15), "minutes": 30}),
    ]:
        assert_error_shape(await client.post(path, json=body, headers=bearer(key_2)), 404, "NOT_FOUND")
    # its day view is its own clinic, whatever it asks for
    day = (
        await client.get("/api/clinic/v1/day", params={"date": "2026-12-09"}, headers=bearer(key_2))
    ).json()
    assert day["clinic"] == "AB-c2" and all(r["id"].startswith("AB-c2-") for r in day["resources"])
    # clinic 1 sees the booking with the patient's name, and can cancel it
    day = (
        await client.get("/api/clinic/v1/day", params={"date": "2026-12-09"}, headers=bearer(key_1))
    ).json()
    assert any(b["id"] == booking_at_c1 and b["patient_name"] == "Test Person" for b in day["bookings"])
    r = await client.post(f"/api/clinic/v1/bookings/{booking_at_c1}/cancel", headers=bearer(key_1))
    assert r.status_code == 200 and r.json()["booking"]["status"] == "cancelled"
    # a revoked key is just a bad credential
    live.accounts.revoke_clinic_keys("AB-c2")
    assert_error_shape(await client.get("/api/clinic/v1/day", headers=bearer(key_2)), 401, "UNAUTHENTICATED")


async def test_staff_session_is_scoped_to_its_clinic(client: httpx.AsyncClient, live: LiveServer) -> None:
    _, staff = live.user(Role.STAFF, "AB-c2")
    r = await client.post(
        "/api/clinic/v1/block",
        headers=bearer(staff),
        json={"resource": "AB-c1-r1", "start": iso(DAY, 60, 15), "minutes": 15},
    )
    assert_error_shape(r, 404, "NOT_FOUND")
    r = await client.post(
        "/api/clinic/v1/block",
        headers=bearer(staff),
        json={"resource": "AB-c2-r1", "start": iso(DAY, 60, 15), "minutes": 15},
    )
    assert r.status_code == 200, r.text


async def test_roles_and_admin_routes(client: httpx.AsyncClient, live: LiveServer) -> None:
    _, patient = live.user()
    _, admin = live.user(Role.ADMIN)
    for path in ("/api/admin/clinics", "/api/admin/state", "/api/admin/bookings?clinic=AB-c1"):
        assert_error_shape(await client.get(path, headers=bearer(patient)), 403, "FORBIDDEN")
        assert_error_shape(await client.get(path), 401, "UNAUTHENTICATED")
        assert (await client.get(path, headers=bearer(admin))).status_code == 200
    assert_error_shape(
        await client.post("/api/admin/bookings/AB-bx/cancel", headers=bearer(patient)), 403, "FORBIDDEN"
    )
    # a patient is not a clinic
    assert_error_shape(await client.get("/api/clinic/v1/day", headers=bearer(patient)), 403, "FORBIDDEN")
    # a clinic key is not a patient
    key = live.accounts.create_clinic_key("AB-c1")
    assert_error_shape(await client.get("/api/bookings", headers=bearer(key)), 403, "FORBIDDEN")
    state = (await client.get("/api/admin/state", headers=bearer(admin))).json()
    assert {r["code"] for r in state["regions"]} >= {"AB", "M"}
    assert all(r["ready"] for r in state["regions"])


async def test_an_admin_creates_a_clinic_key_that_works_once_shown(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    _, patient = live.user()
    _, admin = live.user(Role.ADMIN)
    path = "/api/admin/clinics/AB-c1/keys"
    assert_error_shape(await client.post(path), 401, "UNAUTHENTICATED")
    assert_error_shape(await client.post(path, headers=bearer(patient)), 403, "FORBIDDEN")
    for unknown in ("AB-nope", "nothing"):
        r = await client.post(f"/api/admin/clinics/{unknown}/keys", headers=bearer(admin))
        assert_error_shape(r, 404, "NOT_FOUND")
    r = await client.post(path, headers=bearer(admin))
    assert r.status_code == 201, r.text
    assert r.json()["clinic"] == "AB-c1"
    day = await client.get("/api/clinic/v1/day", headers=bearer(r.json()["key"]))
    assert day.status_code == 200, day.text


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_forged_expired_and_unsigned_tokens_are_401(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    user, good = live.user()
    now = int(time.time())
    claims = {
        "sub": user.id,
        "sid": jwt.decode(good, options={"verify_signature": False})["sid"],  # a live session
        "role": "patient",
        "clinic": None,
        "iat": now,
        "exp": now + 3600,
        "typ": "session",
    }
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    other_secret = jwt.encode(claims, "another-secret-entirely-0123456789", algorithm="HS256")
    alg_none = _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(claims) + "."
    expired = live.app_signer().issue(user, "no-such-session", now=now - 30 * 24 * 3600)
    for token in (tampered, other_secret, alg_none, expired, "garbage", "tt_live_not-a-key"):
        r = await client.get("/api/bookings", headers=bearer(token))
        assert_error_shape(r, 401, "UNAUTHENTICATED")
    assert (await client.get("/api/bookings", headers=bearer(good))).status_code == 200


async def test_cookie_writes_need_the_csrf_header(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as browser:
        r = await browser.post(
            "/api/auth/register",
            json={"email": "cookie-user@example.test", "password": "correct horse", "name": "Cookie User"},
        )
        assert r.status_code == 201
        assert browser.cookies.get(SESSION_COOKIE) and browser.cookies.get(CSRF_COOKIE)
        assert "httponly" in r.headers.get_list("set-cookie")[0].lower()
        body = {
            "clinic": "AB-c1",
            "resource": "AB-c1-r1",
            "service": "checkup",
            "start": iso(DAY, CELL_0900 + 24, 15),
        }
        assert_error_shape(await browser.post("/api/holds", json=body), 403, "CSRF")
        assert_error_shape(
            await browser.post("/api/holds", json=body, headers={CSRF_HEADER: "wrong"}), 403, "CSRF"
        )
        ok = await browser.post("/api/holds", json=body, headers={CSRF_HEADER: browser.cookies[CSRF_COOKIE]})
        assert ok.status_code == 201, ok.text
        # reads need no CSRF header
        assert (await browser.get("/api/auth/me")).json()["user"]["email"] == "cookie-user@example.test"
        r = await browser.post("/api/auth/logout")
        assert r.status_code == 204
        browser.cookies.clear()
        assert_error_shape(await browser.get("/api/auth/me"), 401, "UNAUTHENTICATED")
