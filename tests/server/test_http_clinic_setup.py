"""Integration tests: a clinic set up through the API on a live server (real uvicorn).

An admin registers a clinic; with a key it adds a dentist and hours and is bookable at once;
hours that would strand a booking answer 409 HAS_BOOKINGS with the booking's id, and the
same change with ``cancel`` cancels it; another clinic's key cannot reach the setup.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from engine.calendar import date_of
from engine.cells import CLOSED, FREE
from server.identity.accounts import Role
from tests.server.conftest import assert_error_shape, bearer
from tests.support.catalog import FIRST_DATE, FIRST_DAY
from tests.support.live_server import LiveServer
from tests.support.waiting import scaled

WEEKDAYS = {str(d): [{"from": "08:00", "to": "12:00"}, {"from": "13:00", "to": "17:00"}] for d in range(1, 6)}
NEW_CLINIC: dict[str, Any] = {
    "name": "Tandvården Nya",
    "region": "AB",
    "municipality": "0180",
    "municipality_name": "Stockholm",
    "address": "Nygatan 3",
    "lat": 59.31,
    "lon": 18.07,
    "phone": "08-123 45",
    "kind": "private",
    "services": ["checkup", "cleaning"],
    "open_ahead_days": 14,
}


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def registered(client: httpx.AsyncClient, live: LiveServer) -> tuple[str, str]:
    """A new clinic through the admin API and a key for it: (clinic id, key)."""
    _, admin = live.user(Role.ADMIN)
    r = await client.post("/api/admin/clinics", headers=bearer(admin), json=NEW_CLINIC)
    assert r.status_code == 201, r.text
    clinic = r.json()["clinic"]
    assert clinic["resources"] == [] and all(ivs == [] for ivs in clinic["week"].values())
    r = await client.post(f"/api/admin/clinics/{clinic['id']}/keys", headers=bearer(admin))
    assert r.status_code == 201, r.text
    return clinic["id"], r.json()["key"]


async def times_on(client: httpx.AsyncClient, clinic: str, date: str, service: str = "checkup") -> list[Any]:
    r = await client.get(
        f"/api/clinics/{clinic}/availability", params={"from": date, "days": 1, "service": service}
    )
    assert r.status_code == 200, r.text
    times: list[Any] = r.json()["days"][0]["times"]
    return times


async def test_a_registered_clinic_with_a_dentist_and_hours_is_bookable_at_once(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    clinic, key = await registered(client, live)
    date = FIRST_DATE.isoformat()
    assert await times_on(client, clinic, date) == []
    r = await client.post(
        "/api/clinic/v1/resources",
        headers=bearer(key),
        json={"kind": "dentist", "name": "Tandläkare Ek", "services": ["checkup", "cleaning"]},
    )
    assert r.status_code == 201, r.text
    [dentist] = r.json()["clinic"]["resources"]
    assert await times_on(client, clinic, date) == []  # no hours yet
    r = await client.post("/api/clinic/v1/hours", headers=bearer(key), json={"week": WEEKDAYS})
    assert r.status_code == 200, r.text
    times = await times_on(client, clinic, date)
    assert times and times[0]["start"].startswith(f"{date}T08:00") and times[0]["resource"] == dentist["id"]
    # a patient books it
    _, patient = live.user()
    r = await client.post(
        "/api/bookings",
        headers=bearer(patient),
        json={"clinic": clinic, "resource": dentist["id"], "service": "checkup", "start": times[0]["start"]},
    )
    assert r.status_code == 201, r.text
    booking = r.json()["booking"]["id"]
    # mornings only now: the 08:00 booking is in the way
    later = {str(d): [{"from": "12:00", "to": "17:00"}] for d in range(1, 6)}
    r = await client.post("/api/clinic/v1/hours", headers=bearer(key), json={"week": later})
    error = assert_error_shape(r, 409, "HAS_BOOKINGS")
    assert error["bookings"] == [booking]
    r = await client.post(
        "/api/clinic/v1/hours", headers=bearer(key), json={"week": later, "cancel": [booking]}
    )
    assert r.status_code == 200, r.text
    r = await client.get(f"/api/bookings/{booking}", headers=bearer(patient))
    assert r.json()["booking"]["status"] == "cancelled"
    assert (await times_on(client, clinic, date))[0]["start"].startswith(f"{date}T12:00")
    # a holiday closes the day
    r = await client.post("/api/clinic/v1/day-hours", headers=bearer(key), json={"date": date, "hours": []})
    assert r.status_code == 200, r.text
    assert r.json()["clinic"]["exceptions"] == [{"date": date, "hours": []}]
    assert await times_on(client, clinic, date) == []
    # the details change; retiring the dentist closes the rest
    r = await client.post(
        "/api/clinic/v1/setup/details", headers=bearer(key), json={"name": "Nya Tandvården"}
    )
    assert r.json()["clinic"]["name"] == "Nya Tandvården"
    r = await client.post(f"/api/clinic/v1/resources/{dentist['id']}/retire", headers=bearer(key), json={})
    assert r.status_code == 200, r.text
    assert r.json()["clinic"]["resources"][0]["retired"] is True
    next_day = FIRST_DATE.replace(day=FIRST_DATE.day + 1).isoformat()
    assert await times_on(client, clinic, next_day) == []


async def test_setup_refusals(client: httpx.AsyncClient, live: LiveServer) -> None:
    clinic, key = await registered(client, live)
    other, other_key = await registered(client, live)
    r = await client.post(
        "/api/clinic/v1/resources", headers=bearer(key), json={"kind": "dentist", "name": "A", "services": []}
    )
    rid = r.json()["clinic"]["resources"][0]["id"]
    assert_error_shape(
        await client.post(f"/api/clinic/v1/resources/{rid}/retire", headers=bearer(other_key), json={}),
        404,
        "NOT_FOUND",
    )
    assert_error_shape(
        await client.post(
            f"/api/clinic/v1/resources/{rid}",
            headers=bearer(other_key),
            json={"kind": "dentist", "name": "B", "services": []},
        ),
        404,
        "NOT_FOUND",
    )
    bad_hours = {"week": {"1": [{"from": "12:00", "to": "08:00"}]}}
    assert_error_shape(
        await client.post("/api/clinic/v1/hours", headers=bearer(key), json=bad_hours), 422, "INVALID"
    )
    overlap = {"week": {"1": [{"from": "08:00", "to": "12:00"}, {"from": "11:00", "to": "13:00"}]}}
    assert_error_shape(
        await client.post("/api/clinic/v1/hours", headers=bearer(key), json=overlap), 422, "INVALID"
    )
    assert_error_shape(
        await client.post(
            "/api/clinic/v1/day-hours", headers=bearer(key), json={"date": "2020-01-01", "hours": []}
        ),
        422,
        "IN_PAST",
    )
    _, patient = live.user()
    assert_error_shape(
        await client.post("/api/admin/clinics", headers=bearer(patient), json=NEW_CLINIC), 403, "FORBIDDEN"
    )
    assert_error_shape(await client.get("/api/clinic/v1/setup"), 401, "UNAUTHENTICATED")
    r = await client.get("/api/clinic/v1/setup", headers=bearer(other_key))
    assert r.status_code == 200 and r.json()["clinic"]["id"] == other


async def next_on(ws: ClientConnection, *topics: str) -> list[dict[str, Any]]:
    """The next message on each of ``topics``, in that order (whichever came first)."""
    found: dict[str, dict[str, Any]] = {}
    while len(found) < len(topics):
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), scaled(10.0)))
        if message.get("topic") in topics:
            assert message["topic"] not in found, "two messages on one topic for one change"
            found[message["topic"]] = message
    return [found[t] for t in topics]


async def subscribed(ws: ClientConnection, topic: str, first: str, days: int) -> dict[str, Any]:
    """Subscribe to ``topic`` and return its snapshot. A region too busy to answer at once says
    UNAVAILABLE first and sends the snapshot when it answers (``server.live.fanout``)."""
    await ws.send(orjson.dumps({"op": "subscribe", "topic": topic, "from": first, "days": days}).decode())
    while True:
        [message] = await next_on(ws, topic)
        if message["type"] == "snapshot":
            return message
        assert message["type"] == "error" and message["code"] == "UNAVAILABLE", message


async def test_setup_changes_reach_the_screens_watching_the_clinic_live(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    key = live.accounts.create_clinic_key("AB-c2")
    first = FIRST_DATE.isoformat()
    async with connect(live.url.replace("http", "ws") + "/ws") as ws:
        for topic in ("clinic:AB-c2", "region:AB"):
            await ws.send(
                orjson.dumps({"op": "subscribe", "topic": topic, "from": first, "days": 2}).decode()
            )
        clinic, region = await next_on(ws, "clinic:AB-c2", "region:AB")
        assert clinic["type"] == region["type"] == "snapshot"
        free_before = region["data"]["clinics"]["AB-c2"][0]
        evening = 17 * 4  # 17:00 in 15-minute cells

        # a late evening on the first day: 17:00-20:00 opens on both dentists, live
        r = await client.post(
            "/api/clinic/v1/day-hours",
            headers=bearer(key),
            json={
                "date": first,
                "hours": [{"from": "08:00", "to": "12:00"}, {"from": "13:00", "to": "20:00"}],
            },
        )
        assert r.status_code == 200, r.text
        diff, counts = await next_on(ws, "clinic:AB-c2", "region:AB")
        assert diff["type"] == "diff" and diff["seq"] == clinic["seq"] + 1
        assert sorted(diff["data"]["cells"]) == [
            ["AB-c2-r1", first, evening, 12, FREE],
            ["AB-c2-r2", first, evening, 12, FREE],
        ]
        # 08-12 and 13-20 now: a 30-minute check-up starts at 15 + 27 times, once however many dentists
        [[clinic_id, day, free, starts]] = counts["data"]["counts"]
        assert (clinic_id, day, free) == ("AB-c2", first, free_before + 2 * 12)
        assert starts["checkup"] == 15 + 27

        # weekly hours of afternoons only: the second day's 08:00-12:00 closes, live
        week = {str(d): [{"from": "13:00", "to": "17:00"}] for d in range(1, 6)}
        r = await client.post("/api/clinic/v1/hours", headers=bearer(key), json={"week": week})
        assert r.status_code == 200, r.text
        second = date_of(FIRST_DAY + 1).isoformat()
        diff, counts = await next_on(ws, "clinic:AB-c2", "region:AB")
        # (one frame for the whole clinic, every day the change touched: each screen takes its own days)
        assert sorted(c for c in diff["data"]["cells"] if c[1] == second) == [
            ["AB-c2-r1", second, 8 * 4, 16, CLOSED],
            ["AB-c2-r2", second, 8 * 4, 16, CLOSED],
        ]
        # afternoons only: 13-17, a check-up starts at 15 times
        assert [["AB-c2", second, 2 * 16, 15]] == [
            [c, d, f, s["checkup"]] for c, d, f, s in counts["data"]["counts"] if d == second
        ]


async def test_a_suspended_clinic_is_marked_and_refuses_new_bookings_but_keeps_its_own(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    _, admin = live.user(Role.ADMIN)
    _, patient = live.user()
    _, boss = live.user(Role.CLINIC_ADMIN, "M-c1")

    def at(hour: int) -> dict[str, str]:
        start = f"{FIRST_DATE.isoformat()}T{hour:02d}:00:00+01:00"
        return {"clinic": "M-c1", "resource": "M-c1-r1", "service": "checkup", "start": start}

    r = await client.post("/api/bookings", headers=bearer(patient), json=at(9))
    assert r.status_code == 201, r.text
    kept = r.json()["booking"]["id"]
    body = {"suspended": True}
    assert_error_shape(
        await client.post("/api/admin/clinics/M-c1/suspend", headers=bearer(boss), json=body), 403
    )
    assert_error_shape(
        await client.post("/api/admin/clinics/M-c99/suspend", headers=bearer(admin), json=body), 404
    )
    r = await client.post("/api/admin/clinics/M-c1/suspend", headers=bearer(admin), json=body)
    assert r.status_code == 200 and r.json()["clinic"]["suspended"] is True, r.text

    assert (await client.get("/api/clinics/M-c1")).json()["suspended"] is True
    assert "suspended" not in (await client.get("/api/clinics/AB-c1")).json()
    error = assert_error_shape(
        await client.post("/api/bookings", headers=bearer(patient), json=at(10)), 409, "SUSPENDED"
    )
    assert "no new bookings" in error["message"]
    assert_error_shape(
        await client.post("/api/holds", headers=bearer(patient), json=at(11)), 409, "SUSPENDED"
    )
    r = await client.get(f"/api/bookings/{kept}", headers=bearer(patient))
    assert r.json()["booking"]["status"] == "booked"  # kept

    r = await client.post("/api/admin/clinics/M-c1/suspend", headers=bearer(admin), json={"suspended": False})
    assert r.status_code == 200 and r.json()["clinic"]["suspended"] is False
    assert "suspended" not in (await client.get("/api/clinics/M-c1")).json()
    r = await client.post("/api/bookings", headers=bearer(patient), json=at(10))
    assert r.status_code == 201, r.text


async def test_a_hygienist_with_her_own_hours_is_bookable_only_then_and_watchers_see_it_live(
    client: httpx.AsyncClient, live: LiveServer
) -> None:
    """A clinic on weekday hours gives its hygienist her own (Monday and Wednesday 08:00-10:00):
    her cleaning times are only then, the dentist keeps the clinic's, and a screen watching the
    clinic gets the change in its next frame; her own late evening arrives the same way."""
    clinic, key = await registered(client, live)
    staff = bearer(key)
    r = await client.post(
        "/api/clinic/v1/resources",
        headers=staff,
        json={"kind": "dentist", "name": "Ek", "services": ["checkup"]},
    )
    dentist = r.json()["clinic"]["resources"][0]["id"]
    r = await client.post(
        "/api/clinic/v1/resources",
        headers=staff,
        json={"kind": "hygienist", "name": "Sara", "services": ["cleaning"]},
    )
    assert r.status_code == 201, r.text
    hygienist = r.json()["clinic"]["resources"][1]["id"]
    r = await client.post("/api/clinic/v1/hours", headers=staff, json={"week": WEEKDAYS})
    assert r.status_code == 200, r.text
    monday, tuesday = FIRST_DATE.isoformat(), date_of(FIRST_DAY + 1).isoformat()
    assert (await times_on(client, clinic, monday, "cleaning"))[-1]["start"].startswith(f"{monday}T16:15")

    async with connect(live.url.replace("http", "ws") + "/ws") as ws:
        topic = f"clinic:{clinic}"
        snapshot = await subscribed(ws, topic, monday, 2)

        own = {"1": [{"from": "08:00", "to": "10:00"}], "3": [{"from": "08:00", "to": "10:00"}]}
        r = await client.post(
            f"/api/clinic/v1/resources/{hygienist}/hours", headers=staff, json={"week": own}
        )
        assert r.status_code == 200, r.text
        by_id = {res["id"]: res for res in r.json()["clinic"]["resources"]}
        assert by_id[hygienist]["week"]["1"] == [{"from": "08:00", "to": "10:00"}]
        assert by_id[hygienist]["week"]["2"] == [] and by_id[dentist]["week"] is None
        [diff] = await next_on(ws, topic)
        assert diff["type"] == "diff" and diff["seq"] == snapshot["seq"] + 1, diff
        assert {c[0] for c in diff["data"]["cells"]} == {hygienist}  # the dentist's cells stay
        assert sorted(c for c in diff["data"]["cells"] if c[1] == monday) == [
            [hygienist, monday, 10 * 4, 8, CLOSED],
            [hygienist, monday, 13 * 4, 16, CLOSED],
        ]
        cleaning = await times_on(client, clinic, monday, "cleaning")
        assert [t["start"][11:16] for t in cleaning] == ["08:00", "08:15", "08:30", "08:45", "09:00", "09:15"]
        assert all(t["resource"] == hygienist for t in cleaning)
        assert await times_on(client, clinic, tuesday, "cleaning") == []
        assert (await times_on(client, clinic, monday, "checkup"))[-1]["start"].startswith(f"{monday}T16:30")

        # her own late evening on Tuesday: 17:00-20:00 opens for her alone, live
        evening = {"date": tuesday, "hours": [{"from": "17:00", "to": "20:00"}]}
        r = await client.post(f"/api/clinic/v1/resources/{hygienist}/day-hours", headers=staff, json=evening)
        assert r.status_code == 200, r.text
        [diff] = await next_on(ws, topic)
        assert diff["data"]["cells"] == [[hygienist, tuesday, 17 * 4, 12, FREE]]
        tuesday_times = await times_on(client, clinic, tuesday, "cleaning")
        assert tuesday_times[0]["start"].startswith(f"{tuesday}T17:00") and len(tuesday_times) == 10

    # a patient books her Monday 08:00; closing her Mondays then asks for it first
    _, patient = live.user()
    r = await client.post(
        "/api/bookings",
        headers=bearer(patient),
        json={"clinic": clinic, "resource": hygienist, "service": "cleaning", "start": cleaning[0]["start"]},
    )
    assert r.status_code == 201, r.text
    booking = r.json()["booking"]["id"]
    wednesdays = {"week": {"3": [{"from": "08:00", "to": "10:00"}]}}
    r = await client.post(f"/api/clinic/v1/resources/{hygienist}/hours", headers=staff, json=wednesdays)
    assert assert_error_shape(r, 409, "HAS_BOOKINGS")["bookings"] == [booking]
    r = await client.post(
        f"/api/clinic/v1/resources/{hygienist}/hours", headers=staff, json={**wednesdays, "cancel": [booking]}
    )
    assert r.status_code == 200, r.text
    assert await times_on(client, clinic, monday, "cleaning") == []
    # the same as the clinic's again
    r = await client.post(f"/api/clinic/v1/resources/{hygienist}/hours", headers=staff, json={"week": None})
    assert r.status_code == 200 and r.json()["clinic"]["resources"][1]["week"] is None
    assert (await times_on(client, clinic, monday, "cleaning"))[-1]["start"].startswith(f"{monday}T16:15")


async def test_resource_hours_refusals(client: httpx.AsyncClient, live: LiveServer) -> None:
    clinic, key = await registered(client, live)
    _, other_key = await registered(client, live)
    r = await client.post(
        "/api/clinic/v1/resources",
        headers=bearer(key),
        json={"kind": "chair", "name": "Stol", "services": []},
    )
    rid = r.json()["clinic"]["resources"][0]["id"]
    week = {"week": {"2": [{"from": "08:00", "to": "12:00"}]}}
    for path in (f"/api/clinic/v1/resources/{rid}/hours", f"/api/clinic/v1/resources/{clinic}-r999/hours"):
        assert_error_shape(
            await client.post(path, headers=bearer(other_key) if rid in path else bearer(key), json=week),
            404,
            "NOT_FOUND",
        )
    for bad in (
        {},  # week must be sent (null for the clinic's)
        {"week": {"8": []}},
        {"week": {"2": [{"from": "12:00", "to": "08:00"}]}},
        {"week": None, "extra": 1},
    ):
        assert_error_shape(
            await client.post(f"/api/clinic/v1/resources/{rid}/hours", headers=bearer(key), json=bad),
            422,
            "INVALID",
        )
    assert_error_shape(
        await client.post(
            f"/api/clinic/v1/resources/{rid}/day-hours",
            headers=bearer(key),
            json={"date": "2020-01-01", "hours": []},
        ),
        422,
        "IN_PAST",
    )
    _, staff = live.user(Role.STAFF, clinic)
    assert_error_shape(
        await client.post(f"/api/clinic/v1/resources/{rid}/hours", headers=bearer(staff), json=week),
        403,
        "FORBIDDEN",
    )
    await client.post(f"/api/clinic/v1/resources/{rid}/retire", headers=bearer(key), json={})
    assert_error_shape(
        await client.post(f"/api/clinic/v1/resources/{rid}/hours", headers=bearer(key), json=week),
        422,
        "INVALID",
    )
