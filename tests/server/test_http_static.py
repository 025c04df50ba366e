"""Static files (integration, the real app over httpx's ASGI transport): gzip when accepted, a week's cache
for vendored libraries and geography, ETag revalidation (304) for the project's own scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server.http.routes.pages import STATIC_DIR
from server.http.static_assets import static_app
from tests.support.live_server import LiveServer


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


def test_an_installed_server_finds_the_pages_it_is_told_about(tmp_path: Path) -> None:
    """A wheel has no source tree beside it (the Docker image): TANDTID_STATIC_DIR names the pages."""
    (tmp_path / "index.html").write_text("<title>elsewhere</title>", encoding="utf-8")
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from server.http.routes.pages import _page; print(_page('index.html').path)",
        ],
        env={**os.environ, "TANDTID_STATIC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == str(tmp_path / "index.html")


async def test_the_favicon_is_served_and_every_page_links_it(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url) as c:
        ico = await c.get("/favicon.ico")
        assert ico.status_code == 200 and ico.headers["content-type"] == "image/x-icon"
        assert ico.content[:4] == b"\x00\x00\x01\x00"  # an icon file
        svg = await c.get("/static/favicon.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        for path in ("/", "/clinic/AB-c1", "/me", "/kiosk/AB-c1", "/staff", "/admin"):
            page = (await c.get(path)).text
            assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page, path
