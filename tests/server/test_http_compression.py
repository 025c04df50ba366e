"""Integration tests: API replies are gzip-compressed on a real uvicorn serving the real app.

A big JSON reply (a clinic's availability) travels compressed when the client accepts gzip and
decodes to the same JSON; a page too; a tiny one is sent as it is; the WebSocket beside it is not touched.
Responses are read raw (httpx decodes gzip itself, which would hide what travelled).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import websockets

from engine.calendar import date_of
from server.http.app import COMPRESS_MIN_BYTES
from tests.support.catalog import FIRST_DAY
from tests.support.live_server import LiveServer

AVAILABILITY = "/api/clinics/AB-c1/availability"
PARAMS = {"service": "checkup", "from": date_of(FIRST_DAY).isoformat(), "days": 7}


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def raw_get(
    client: httpx.AsyncClient, path: str, encoding: str, params: dict[str, object] | None = None
) -> tuple[httpx.Response, bytes]:
    """The response and the bytes as they travelled (not decoded)."""
    request = client.build_request("GET", path, params=params, headers={"Accept-Encoding": encoding})
    response = await client.send(request, stream=True)
    try:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    return response, body


async def test_a_big_json_reply_is_compressed(client: httpx.AsyncClient) -> None:
    plain, plain_body = await raw_get(client, AVAILABILITY, "identity", PARAMS)
    assert plain.status_code == 200
    assert "content-encoding" not in plain.headers
    assert len(plain_body) > COMPRESS_MIN_BYTES * 4, len(plain_body)  # big enough to matter

    packed, packed_body = await raw_get(client, AVAILABILITY, "gzip, deflate, br", PARAMS)
    assert packed.status_code == 200
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["content-type"].startswith("application/json")
    assert "accept-encoding" in packed.headers["vary"].lower()
    assert int(packed.headers["content-length"]) == len(packed_body) < len(plain_body) / 4
    assert orjson.loads(gzip.decompress(packed_body)) == orjson.loads(plain_body)
    # the edge's headers are still there
    assert packed.headers["x-request-id"]
    assert packed.headers["cache-control"]


async def test_a_page_is_compressed(client: httpx.AsyncClient) -> None:
    plain, plain_body = await raw_get(client, "/", "identity")
    assert plain.status_code == 200
    assert "content-encoding" not in plain.headers
    assert plain_body.startswith(b"<!")

    packed, packed_body = await raw_get(client, "/", "gzip")
    assert packed.status_code == 200
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["content-type"].startswith("text/html")
    assert "accept-encoding" in packed.headers["vary"].lower()
    assert len(packed_body) < len(plain_body)
    assert gzip.decompress(packed_body) == plain_body


async def test_a_tiny_json_reply_is_not(client: httpx.AsyncClient) -> None:
    response, body = await raw_get(client, "/api/auth/me", "gzip")
    assert response.headers["content-type"].startswith("application/json")
    assert len(body) < COMPRESS_MIN_BYTES
    assert "content-encoding" not in response.headers
    assert json.loads(body)["error"]["code"] == "UNAUTHENTICATED"


async def test_the_websocket_is_untouched(live: LiveServer) -> None:
    url = live.url.replace("http", "ws") + "/ws"
    async with websockets.connect(url, additional_headers={"Accept-Encoding": "gzip"}) as ws:
        topic = {"op": "subscribe", "topic": "region:AB", "from": PARAMS["from"], "days": 7}
        await ws.send(json.dumps(topic))
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["type"] == "snapshot"
    assert set(message["data"]["clinics"]) == {"AB-c1", "AB-c2"}
