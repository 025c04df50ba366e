"""Static files (integration, the real app over httpx's ASGI transport): gzip when accepted, a week's cache
for vendored libraries and geography, ETag revalidation (304) for the project's own scripts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from server.http.routes.pages import STATIC_DIR
from server.http.static_assets import static_app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=static_app(STATIC_DIR))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def test_scripts_are_compressed_and_revalidated(client: httpx.AsyncClient) -> None:
    r = await client.get("/js/map-page.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["cache-control"] == "no-cache"
    assert "import" in r.text
    again = await client.get("/js/map-page.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


async def test_vendored_files_are_kept_for_a_week(client: httpx.AsyncClient) -> None:
    for path in ("/vendor/leaflet/leaflet.js", "/geo/se_outline.geojson"):
        r = await client.get(path, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200
        assert r.headers["cache-control"] == "public, max-age=604800"
        assert r.headers["content-encoding"] == "gzip"


async def test_no_compression_unless_asked(client: httpx.AsyncClient) -> None:
    r = await client.get("/js/map-page.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers
