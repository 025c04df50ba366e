"""Integration tests (real uvicorn, real SQLite account store): a clinic's roles, its accounts and its key.

Staff run the day but cannot change the setup (403 saying whom to ask); the clinic admin can, and
manages the accounts of its own clinic only: add (a made password shown once), change role (the
live session carries it at once), remove (its sessions end at once); rotate and revoke the API key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from server.identity.accounts import Role
from tests.server.conftest import assert_error_shape, bearer
from tests.support.live_server import LiveServer

SETUP_CHANGE = {"phone": "08-555 12"}


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def test_staff_read_the_setup_but_only_the_clinic_admin_or_key_changes_it(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    _, staff = live.user(Role.STAFF, "AB-c1")
    _, boss = live.user(Role.CLINIC_ADMIN, "AB-c1")
    key = live.accounts.create_clinic_key("AB-c1")
    r = await client.get("/api/clinic/v1/setup", headers=bearer(staff))
    assert r.status_code == 200, r.text
    r = await client.post("/api/clinic/v1/setup/details", headers=bearer(staff), json=SETUP_CHANGE)
    error = assert_error_shape(r, 403, "FORBIDDEN")
    assert "clinic admin" in error["message"]
    for path, body in (
        ("/api/clinic/v1/hours", {"week": {}}),
        ("/api/clinic/v1/resources", {"kind": "chair", "name": "Stol", "services": ["checkup"]}),
        ("/api/clinic/v1/day-hours", {"date": "2030-01-01", "hours": None}),
    ):
        assert_error_shape(await client.post(path, headers=bearer(staff), json=body), 403, "FORBIDDEN")
    for who in (boss, key):
        r = await client.post("/api/clinic/v1/setup/details", headers=bearer(who), json=SETUP_CHANGE)
        assert r.status_code == 200, r.text
        assert r.json()["clinic"]["phone"] == "08-555 12"
    # the day is everyone's: staff and the clinic admin both read it
    for who in (staff, boss):
        assert (await client.get("/api/clinic/v1/day", headers=bearer(who))).status_code == 200


async def test_the_clinic_admin_manages_its_own_clinics_accounts(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    boss_user, boss = live.user(Role.CLINIC_ADMIN, "AB-c2")
    _, staff = live.user(Role.STAFF, "AB-c2")
    _, other_boss = live.user(Role.CLINIC_ADMIN, "M-c1")
    key = live.accounts.create_clinic_key("AB-c2")
    for who in (staff, key):
        assert_error_shape(await client.get("/api/clinic/v1/accounts", headers=bearer(who)), 403, "FORBIDDEN")

    r = await client.post(
        "/api/clinic/v1/accounts",
        headers=bearer(boss),
        json={"email": "new.staff@example.test", "name": "Ny"},
    )
    assert r.status_code == 201, r.text
    made = r.json()
    new = made["account"]
    assert new["role"] == "staff" and len(made["password"]) >= 12
    r = await client.post(
        "/api/auth/login", json={"email": "new.staff@example.test", "password": made["password"]}
    )
    assert r.status_code == 200, r.text
    new_token = r.json()["token"]
    assert r.json()["user"]["clinic"] == "AB-c2"
    # staff: the setup is not theirs
    assert_error_shape(
        await client.post("/api/clinic/v1/setup/details", headers=bearer(new_token), json=SETUP_CHANGE), 403
    )
    # a password given is not echoed
    r = await client.post(
        "/api/clinic/v1/accounts",
        headers=bearer(boss),
        json={"email": "b2@example.test", "name": "B", "role": "clinic_admin", "password": "long-enough-1"},
    )
    assert r.status_code == 201 and "password" not in r.json(), r.text
    assert_error_shape(
        await client.post(
            "/api/clinic/v1/accounts", headers=bearer(boss), json={"email": "b2@example.test", "name": "B"}
        ),
        409,
        "EMAIL_TAKEN",
    )

    listed = (await client.get("/api/clinic/v1/accounts", headers=bearer(boss))).json()["accounts"]
    assert {a["email"] for a in listed} >= {boss_user.email, "new.staff@example.test", "b2@example.test"}
    other = (await client.get("/api/clinic/v1/accounts", headers=bearer(other_boss))).json()["accounts"]
    assert new["id"] not in {a["id"] for a in other}

    # role: the live session carries it at once
    r = await client.post(
        f"/api/clinic/v1/accounts/{new['id']}/role", headers=bearer(boss), json={"role": "clinic_admin"}
    )
    assert r.status_code == 200 and r.json()["account"]["role"] == "clinic_admin", r.text
    r = await client.post("/api/clinic/v1/setup/details", headers=bearer(new_token), json=SETUP_CHANGE)
    assert r.status_code == 200, r.text
    assert (await client.get("/api/auth/me", headers=bearer(new_token))).json()["user"][
        "role"
    ] == "clinic_admin"

    # another clinic's admin cannot see, change or remove it
    assert_error_shape(
        await client.post(
            f"/api/clinic/v1/accounts/{new['id']}/role", headers=bearer(other_boss), json={"role": "staff"}
        ),
        404,
    )
    assert_error_shape(
        await client.delete(f"/api/clinic/v1/accounts/{new['id']}", headers=bearer(other_boss)), 404
    )
    # nor can a clinic admin demote or remove themselves
    assert_error_shape(
        await client.post(
            f"/api/clinic/v1/accounts/{boss_user.id}/role", headers=bearer(boss), json={"role": "staff"}
        ),
        422,
    )
    assert_error_shape(
        await client.delete(f"/api/clinic/v1/accounts/{boss_user.id}", headers=bearer(boss)), 422
    )

    # removing ends its sessions at once
    r = await client.delete(f"/api/clinic/v1/accounts/{new['id']}", headers=bearer(boss))
    assert r.status_code == 204, r.text
    assert_error_shape(await client.get("/api/clinic/v1/day", headers=bearer(new_token)), 401)
    r = await client.post(
        "/api/auth/login", json={"email": "new.staff@example.test", "password": made["password"]}
    )
    assert r.status_code == 401
    assert_error_shape(await client.delete(f"/api/clinic/v1/accounts/{new['id']}", headers=bearer(boss)), 404)


async def test_the_clinic_admin_rotates_and_revokes_the_api_key(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    _, boss = live.user(Role.CLINIC_ADMIN, "M-c1")
    _, staff = live.user(Role.STAFF, "M-c1")
    old = live.accounts.create_clinic_key("M-c1")
    assert_error_shape(await client.post("/api/clinic/v1/key", headers=bearer(staff)), 403)
    assert_error_shape(await client.post("/api/clinic/v1/key", headers=bearer(old)), 403)  # not by itself
    r = await client.get("/api/clinic/v1/key", headers=bearer(boss))
    assert r.status_code == 200 and r.json()["key"]["active"] is True, r.text

    r = await client.post("/api/clinic/v1/key", headers=bearer(boss))
    assert r.status_code == 201, r.text
    new = r.json()["secret"]
    assert new.startswith("tt_live_") and r.json()["key"]["active"] is True
    assert_error_shape(await client.get("/api/clinic/v1/setup", headers=bearer(old)), 401)
    r = await client.get("/api/clinic/v1/setup", headers=bearer(new))
    assert r.status_code == 200 and r.json()["clinic"]["id"] == "M-c1"

    assert (await client.delete("/api/clinic/v1/key", headers=bearer(boss))).status_code == 204
    assert_error_shape(await client.get("/api/clinic/v1/setup", headers=bearer(new)), 401)
    r = await client.get("/api/clinic/v1/key", headers=bearer(boss))
    assert r.json()["key"] == {"active": False, "created_at": None}


async def test_the_platform_admin_gives_a_clinic_its_first_clinic_admin(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    _, admin = live.user(Role.ADMIN)
    _, boss = live.user(Role.CLINIC_ADMIN, "AB-c1")
    body = {"email": "first.admin@example.test", "name": "Första", "role": "clinic_admin"}
    assert_error_shape(
        await client.post("/api/admin/clinics/AB-c1/accounts", headers=bearer(boss), json=body), 403
    )
    assert_error_shape(
        await client.post("/api/admin/clinics/AB-c99999/accounts", headers=bearer(admin), json=body), 404
    )
    r = await client.post("/api/admin/clinics/AB-c1/accounts", headers=bearer(admin), json=body)
    assert r.status_code == 201, r.text
    r = await client.post("/api/auth/login", json={"email": body["email"], "password": r.json()["password"]})
    assert r.status_code == 200, r.text
    assert r.json()["user"]["role"] == "clinic_admin" and r.json()["user"]["clinic"] == "AB-c1"
