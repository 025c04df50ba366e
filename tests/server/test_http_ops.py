"""Integration tests: the operational edge of the live server.

/health, /ready, /metrics (labelled by route template, never by id), /openapi.json matches
the route table, security headers and X-Request-ID on every answer, pages and static files,
rate limiting (429 with the error shape), and no personal data in the server's log.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from engine.calendar import iso
from server.http.app import ENDPOINTS
from tests.server.conftest import assert_error_shape, bearer
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer

STATIC = Path(__file__).resolve().parents[2] / "static"


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    r = await client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {
        "ready": True,
        "status": "ready",
        "journal": True,
        "journal_writable": True,
        "regions_not_ready": [],
        "regions_failed": {},
        "journal_problems": {},
        "degraded": [],
    }


async def test_every_answer_has_security_headers_and_a_request_id(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/api/regions", "/api/clinics/AB-c999", "/nope"):
        r = await client.get(path)
        assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"]
        assert "server" not in r.headers
        if path.startswith("/api/"):  # data, never a page: nothing may load or run in it
            assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    r = await client.get("/health", headers={"X-Request-ID": "0af7651916cd43dd8448eb211c80319c"})
    assert r.headers["x-request-id"] == "0af7651916cd43dd8448eb211c80319c"
    r = await client.get("/health", headers={"X-Request-ID": "trace-42.a_b"})  # words may be personal
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])
    r = await client.get("/health", headers={"X-Request-ID": "evil\tvalue<script>" + "x" * 100})
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])


async def test_metrics_are_labelled_by_route_template(client: httpx.AsyncClient, live: LiveServer) -> None:
    _, token = live.user()
    await client.get("/api/clinics/AB-c1")
    await client.get("/api/bookings/AB-bSecretId123", headers=bearer(token))
    text = (await client.get("/metrics")).text
    assert 'route="/api/clinics/{id}"' in text
    assert 'route="/api/bookings/{id}"' in text
    assert "AB-bSecretId123" not in text and 'AB-c1"' not in text
    assert "tandtid_http_request_seconds_bucket" in text
    rounds = re.search(r"^tandtid_journal_rounds (\S+)$", text, re.M)  # group commit's durable writes
    assert rounds is not None and float(rounds.group(1)) >= 0


async def test_openapi_documents_exactly_the_route_table(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    declared = {(ep.method, ep.openapi_path()) for ep in ENDPOINTS if ep.in_schema}
    assert documented == declared
    booking = doc["paths"]["/api/bookings"]["post"]
    assert set(booking["responses"]) >= {"201", "401", "409", "410", "422", "503"}
    assert booking["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("BookingBody")
    assert any(p["name"] == "Idempotency-Key" for p in booking["parameters"])


async def test_pages_and_static_files(client: httpx.AsyncClient) -> None:
    pages = {
        "/": "index.html",
        "/clinic/AB-c1": "clinic.html",
        "/me": "me.html",
        "/kiosk/AB-c1": "kiosk.html",
        "/staff": "staff.html",
        "/admin": "admin.html",
    }
    for path, name in pages.items():
        r = await client.get(path)
        if (STATIC / name).is_file():
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            # the file, its references to /static versioned (tests/server/test_http_static.py)
            assert re.sub(r"/static/v/[0-9a-f]{16}/", "/static/", r.text) == (STATIC / name).read_text()
        else:
            assert_error_shape(r, 404, "NOT_FOUND")
    r = await client.get("/static/vendor/leaflet/leaflet.css")
    assert r.status_code == 200 and "leaflet" in r.text
    assert (await client.get("/static/../server/http/app.py")).status_code == 404


async def test_no_personal_data_in_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name, email = "Gunhild Personsson", "gunhild.personsson@example.test"
    r = await client.post(
        "/api/auth/register", json={"email": email, "password": "hemligt-losen", "name": name}
    )
    assert r.status_code == 201
    token = r.json()["token"]
    r = await client.post(
        "/api/bookings",
        headers=bearer(token),
        json={
            "clinic": "AB-c2",
            "resource": "AB-c2-r2",
            "service": "checkup",
            "start": iso(FIRST_DAY + 4, CELL_0900, 15),
        },
    )
    assert r.status_code == 201, r.text
    await client.post("/api/auth/register", json={"email": email, "password": "hemligt-losen", "name": name})
    await client.post("/api/auth/login", json={"email": email, "password": "wrong-password"})
    await client.get(f"/api/clinics?near=59.1,18.1&q={email}")
    # the test's own HTTP client logs its URLs; everything else is the server's
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(record.getMessage() + (record.exc_text or "") for record in server_records)
    assert "tandtid.access" in {record.name for record in server_records}  # the log was captured at all
    for secret in (name, email, "Gunhild", "personsson", "hemligt", token):
        assert secret.lower() not in logged.lower()


@pytest.fixture
def strict_live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path, rate_per_s=1.0, rate_burst=5).start()
    try:
        yield server
    finally:
        server.stop()


async def test_rate_limit_gives_429_with_the_shape(strict_live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=strict_live.url, timeout=30) as c:
        statuses = [(await c.get("/api/services")).status_code for _ in range(12)]
        assert statuses[:5] == [200] * 5
        assert 429 in statuses
        r = await c.get("/api/services")
        error = assert_error_shape(r, 429, "RATE_LIMITED")
        assert error["message"] and int(r.headers["retry-after"]) >= 1
        # probes are never starved
        assert (await c.get("/ready")).status_code == 200


async def test_the_live_hub_is_mounted_at_ws(live: LiveServer) -> None:
    import json as _json

    import websockets

    async with websockets.connect(live.url.replace("http", "ws") + "/ws") as ws:
        await ws.send(_json.dumps({"op": "subscribe", "topic": "region:AB", "from": "2026-12-07", "days": 2}))
        message = _json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "snapshot" and message["topic"] == "region:AB"
    assert set(message["data"]["clinics"]) == {"AB-c1", "AB-c2"}
