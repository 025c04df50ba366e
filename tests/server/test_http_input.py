"""Integration tests: bad input over HTTP against a live server (schemathesis: test_http_openapi_run).

Malformed JSON, wrong types, unknown fields, huge bodies, unknown ids, naive / off-grid /
past times: every one is a 4xx with the one error shape, never a 5xx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from engine.calendar import iso
from tests.server.conftest import assert_error_shape, bearer
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer

DAY = FIRST_DAY + 1


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


@pytest.fixture
def token(live: LiveServer) -> str:
    return live.user()[1]


def hold_body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "clinic": "AB-c1",
        "resource": "AB-c1-r1",
        "service": "checkup",
        "start": iso(DAY, CELL_0900, 15),
    }
    body.update(changes)
    return body


async def test_malformed_and_wrongly_typed_bodies(client: httpx.AsyncClient, token: str) -> None:
    h = {**bearer(token), "Content-Type": "application/json"}
    for raw in (b"{", b"not json", b"[1, 2]", b"", b"null", b'"text"', b"\xff\xfe"):
        for path in ("/api/holds", "/api/bookings", "/api/auth/login", "/api/auth/register"):
            r = await client.post(path, content=raw, headers=h)
            error = assert_error_shape(r, 422, "INVALID")
            assert error["field"] == "body"
    cases = [
        (hold_body(service="whitening"), "service"),
        (hold_body(start=12), "start"),
        (hold_body(start="tomorrow"), "start"),
        (hold_body(clinic=["AB-c1"]), "clinic"),
        (hold_body(extra="field"), "extra"),
        ({"clinic": "AB-c1"}, "resource"),
    ]
    for body, field in cases:
        r = await client.post("/api/holds", json=body, headers=bearer(token))
        assert assert_error_shape(r, 422, "INVALID")["field"] == field, (body, r.text)
    r = await client.post("/api/bookings", json={"hold": "AB-h1", "clinic": "AB-c1"}, headers=bearer(token))
    assert_error_shape(r, 422, "INVALID")
    r = await client.post("/api/auth/register", json={"email": "nope", "password": "12345678", "name": "x"})
    assert assert_error_shape(r, 422, "INVALID")["field"] == "email"
    r = await client.post("/api/auth/register", json={"email": "a@b.se", "password": "short", "name": "x"})
    assert assert_error_shape(r, 422, "INVALID")["field"] == "password"


async def test_times_must_be_aware_on_the_grid_and_in_the_future(
    client: httpx.AsyncClient, token: str, live: LiveServer
) -> None:
    naive = iso(DAY, CELL_0900, 15)[:-6]
    off_grid = iso(DAY, CELL_0900, 15).replace(":00:00+", ":07:00+")
    for start, field in ((naive, "start"), (off_grid, "start")):
        r = await client.post("/api/holds", json=hold_body(start=start), headers=bearer(token))
        assert assert_error_shape(r, 422, "INVALID")["field"] == field
    # a day before any opened day is simply not open
    r = await client.post(
        "/api/holds", json=hold_body(start=iso(FIRST_DAY - 1, CELL_0900, 15)), headers=bearer(token)
    )
    assert_error_shape(r, 422, "OUTSIDE_HOURS")
    # an open time that has passed (move the server's clock from 06:00 to 10:00 on FIRST_DAY)
    live.clock.advance(4 * 3600)
    try:
        for path in ("/api/holds", "/api/bookings"):
            r = await client.post(
                path, json=hold_body(start=iso(FIRST_DAY, CELL_0900, 15)), headers=bearer(token)
            )
            assert_error_shape(r, 422, "IN_PAST")
    finally:
        live.clock.advance(-4 * 3600)
    r = await client.post("/api/holds", json=hold_body(start=iso(DAY, 4 * 20, 15)), headers=bearer(token))
    assert_error_shape(r, 422, "OUTSIDE_HOURS")
    # past dates on the reads that take one
    for path in ("/api/clinics/AB-c1/availability", "/api/regions/AB/summary", "/api/clinics"):
        r = await client.get(path, params={"from": "2020-01-01"})
        assert assert_error_shape(r, 422, "INVALID")["field"] == "from"
        r = await client.get(path, params={"from": "2026-13-45"})
        assert assert_error_shape(r, 422, "INVALID")["field"] == "from"
    r = await client.get("/api/clinics/AB-c1/availability", params={"days": "32"})
    assert assert_error_shape(r, 422, "INVALID")["field"] == "days"
    r = await client.get("/api/clinics", params={"days": "91"})
    assert assert_error_shape(r, 422, "INVALID")["field"] == "days"


async def test_unknown_ids_are_404(client: httpx.AsyncClient, token: str) -> None:
    for path in (
        "/api/clinics/AB-c999",
        "/api/clinics/XX-c1",
        "/api/clinics/nothing",
        "/api/clinics/AB-c999/availability",
        "/api/regions/QQ/summary",
        "/api/bookings/AB-bnope",
        "/api/bookings/nope",
        "/api/bookings/AB-bnope/ics",
        "/no/such/route",
    ):
        r = await client.get(path, headers=bearer(token))
        assert_error_shape(r, 404, "NOT_FOUND")
    r = await client.post("/api/holds", json=hold_body(clinic="AB-c999"), headers=bearer(token))
    assert_error_shape(r, 404, "NOT_FOUND")
    r = await client.post("/api/holds", json=hold_body(resource="AB-c2-r1"), headers=bearer(token))
    assert assert_error_shape(r, 422, "INVALID")["field"] == "resource"
    assert_error_shape(await client.delete("/api/holds/AB-hnope", headers=bearer(token)), 404, "NOT_FOUND")
    r = await client.post("/api/bookings/AB-bnope/cancel", headers=bearer(token))
    assert_error_shape(r, 404, "NOT_FOUND")
    r = await client.put("/api/bookings", headers=bearer(token))
    assert_error_shape(r, 405)


async def test_huge_bodies_are_413(client: httpx.AsyncClient, token: str, live: LiveServer) -> None:
    huge = b'{"name": "' + b"x" * (live.settings.max_body_bytes + 10) + b'"}'
    r = await client.post("/api/auth/register", content=huge, headers={"Content-Type": "application/json"})
    assert_error_shape(r, 413, "TOO_LARGE")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap is counted as it streams
        for _ in range(20):
            yield b" " * 8192

    r = await client.post("/api/holds", content=chunks(), headers=bearer(token))
    assert_error_shape(r, 413, "TOO_LARGE")
