"""Unit tests: the HTTP edge pieces on tiny inline Starlette apps (in-process, no network).

EdgeMiddleware's catch-all (500 with the shape, request id logged, nothing of the body; the
outermost layer, with Starlette's own catch-all left out),
the streaming body cap, the token bucket, the fingerprint and views used by the routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.model import Clinic, ClinicKind
from engine.records import Booking
from server.http.app import TandtidApp
from server.http.errors import EdgeMiddleware, exception_handlers
from server.http.views import booking_ics, booking_view
from server.identity.ratelimit import RateLimiter
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW


async def boom(request: Request) -> Response:
    await request.body()
    raise RuntimeError("kaboom with secret detail")


async def echo(request: Request) -> Response:
    return JSONResponse({"n": len(await request.body())})


def app() -> Starlette:
    return TandtidApp(
        routes=[Route("/boom", boom, methods=["POST"]), Route("/echo", echo, methods=["POST"])],
        middleware=[Middleware(EdgeMiddleware, max_body=1000)],
        exception_handlers=exception_handlers(),
    )


def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://edge.test")


async def test_unexpected_exception_is_500_with_the_shape_and_logged_without_the_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with client() as c:
        r = await c.post("/boom", json={"name": "Secret Person"}, headers={"X-Request-ID": "5f2b1c7e-0001"})
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "code": "INTERNAL",
            "message": "something went wrong on our side",
            "request_id": "5f2b1c7e-0001",
        }
    }
    assert r.headers["x-request-id"] == "5f2b1c7e-0001" and r.headers["x-content-type-options"] == "nosniff"
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert errors and "5f2b1c7e-0001" in errors[0].getMessage() and "/boom" in errors[0].getMessage()
    assert all("Secret Person" not in rec.getMessage() for rec in caplog.records)


def test_the_edge_is_the_outermost_layer_with_no_other_catch_all_outside_it() -> None:
    assert isinstance(app().build_middleware_stack(), EdgeMiddleware)
    assert not isinstance(
        Starlette(middleware=[Middleware(EdgeMiddleware)]).build_middleware_stack(), EdgeMiddleware
    )


async def test_body_cap_with_and_without_content_length() -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b"x" * 600
        yield b"x" * 600

    async with client() as c:
        assert (await c.post("/echo", content=b"x" * 1000)).json() == {"n": 1000}
        r = await c.post("/echo", content=b"x" * 1001)
        assert r.status_code == 413 and r.json()["error"]["code"] == "TOO_LARGE"
        r = await c.post("/echo", content=chunks())
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and r.json()["error"]["code"] == "TOO_LARGE"


def test_token_bucket() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0], max_keys=2)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("a") == 0.0  # one token came back
    assert limiter.take("b") == 0.0  # keys are independent
    limiter.take("c")  # bounded: "a" (least recent) is forgotten ...
    assert limiter.take("a") == 0.0  # ... and starts with a full bucket


def test_views_and_ics() -> None:
    clinic = Clinic(
        id="AB-c1",
        name="Tandvård, Söder; Syd",
        region="AB",
        municipality="0180",
        municipality_name="Stockholm",
        address="Götgatan 1, 116 46 Stockholm",
        lat=59.31,
        lon=18.07,
        kind=ClinicKind.PRIVATE,
        services=("checkup",),
        phone="08-123 45 67",
    )
    booking = Booking("AB-bX", "u_1", "AB-c1", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900, 2, "booked", NOW)
    view = booking_view(booking, clinic)
    assert view["start"] == "2026-12-07T09:00:00+01:00" and view["end"] == "2026-12-07T09:30:00+01:00"
    assert view["booked_at"] == "2026-12-07T06:00:00+01:00" and "patient" not in view
    ics = booking_ics(booking, clinic, now_s=NOW)
    assert ics.endswith("\r\n") and "\nBEGIN" not in ics.replace("\r\n", "")
    assert "DTSTART:20261207T080000Z" in ics and "DTEND:20261207T083000Z" in ics
    assert "Tandvård\\, Söder\\; Syd" in ics
    assert all(len(line.encode()) <= 75 for line in ics.split("\r\n"))
