"""Integration tests (a real uvicorn, httpx): an unknown path answers a browser with the HTML 404 page and
every API client with the JSON error, as before."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.server.conftest import assert_error_shape
from tests.support.live_server import LiveServer

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def test_a_browser_gets_the_html_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/no-such-page", headers={"Accept": BROWSER})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    assert "<title" in r.text and 'href="/"' in r.text and "/css/tandtid.css" in r.text
    deeper = await client.get("/clinic/x/y", headers={"Accept": BROWSER})
    assert deeper.status_code == 404 and deeper.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/api/nope", BROWSER),  # the API's paths never answer with a page
        ("/static/nope.js", BROWSER),
        ("/no-such-page", "application/json"),
        ("/no-such-page", "*/*"),
        ("/no-such-page", "application/json, text/html;q=0.5"),
    ],
)
async def test_api_clients_keep_the_json_error(client: httpx.AsyncClient, path: str, accept: str) -> None:
    r = await client.get(path, headers={"Accept": accept})
    assert r.headers["content-type"].startswith("application/json")
    assert_error_shape(r, 404, "NOT_FOUND")


async def test_a_post_to_an_unknown_path_is_json(client: httpx.AsyncClient) -> None:
    r = await client.post("/no-such-page", headers={"Accept": BROWSER})
    assert_error_shape(r, 404, "NOT_FOUND")
