"""Static files (integration, the real app over httpx's ASGI transport): gzip when accepted, a week's cache
for vendored libraries and geography, ETag revalidation (304) for the project's own scripts, and versioned URLs
(``/static/v/<content hash>/…``) in every page, kept for a year, that change when a file changes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server.http.routes.pages import STATIC_DIR
from server.http.static_assets import YEAR, asset_version, static_app, versioned_page
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
            "from server.http.routes.pages import _page; print(_page('index.html').body.decode())",
        ],
        env={**os.environ, "TANDTID_STATIC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "<title>elsewhere</title>"


async def test_the_favicon_is_served_and_every_page_links_it(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url) as c:
        ico = await c.get("/favicon.ico")
        assert ico.status_code == 200 and ico.headers["content-type"] == "image/x-icon"
        assert ico.content[:4] == b"\x00\x00\x01\x00"  # an icon file
        svg = await c.get("/static/favicon.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        for path in ("/", "/clinic/AB-c1", "/me", "/kiosk/AB-c1", "/staff", "/admin"):
            page = (await c.get(path)).text
            assert re.search(
                r'<link rel="icon" href="/static/v/[0-9a-f]{16}/favicon.svg" type="image/svg\+xml">', page
            ), path


async def test_pages_reference_versioned_urls_kept_for_a_year(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url) as c:
        page = await c.get("/")
        assert page.headers["cache-control"] == "no-cache"
        found = re.search(r'<script type="module" src="/static/v/([0-9a-f]{16})/js/map-page.js">', page.text)
        assert found, page.text
        version = found.group(1)
        assert 'href="/static/css/' not in page.text and 'src="/static/vendor/' not in page.text
        for path in ("js/map-page.js", "js/api.js", "vendor/leaflet/leaflet.js", "css/tandtid.css"):
            versioned = await c.get(f"/static/v/{version}/{path}")
            plain = await c.get(f"/static/{path}")  # the unversioned URL still answers, revalidated or a week
            assert versioned.status_code == plain.status_code == 200, path
            assert versioned.headers["cache-control"] == YEAR == "public, max-age=31536000, immutable"
            assert plain.headers["cache-control"] in ("no-cache", "public, max-age=604800")
            assert versioned.content == plain.content
        # a page loaded before a deploy asks with its old version: the current file, not to be kept
        old = await c.get("/static/v/0123456789abcdef/js/api.js")
        assert old.status_code == 200 and old.headers["cache-control"] == "no-cache"
        assert (await c.get(f"/static/v/{version}/js/nope.js")).status_code == 404


async def test_the_version_changes_when_a_file_changes(tmp_path: Path) -> None:
    site = tmp_path / "static"
    shutil.copytree(STATIC_DIR / "js", site / "js")
    (site / "index.html").write_text('<script type="module" src="/static/js/map-page.js"></script>')
    versions = asset_version(site)
    before = versions.current()
    assert versions.current() == before  # nothing changed: the same version
    page = versioned_page((site / "index.html").read_text(), before)
    assert page == f'<script type="module" src="/static/v/{before}/js/map-page.js"></script>'
    transport = httpx.ASGITransport(app=static_app(site))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert (await c.get(f"/v/{before}/js/api.js")).headers["cache-control"] == YEAR
        script = site / "js" / "api.js"
        script.write_text(script.read_text() + "\n// changed\n")
        after = versions.current()
        assert after != before
        fresh = await c.get(f"/v/{after}/js/api.js")
        assert fresh.headers["cache-control"] == YEAR and fresh.text.endswith("// changed\n")
        assert (await c.get(f"/v/{before}/js/api.js")).headers["cache-control"] == "no-cache"


async def test_the_map_page_names_the_tile_server_of_the_settings(
    live: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    async with httpx.AsyncClient(base_url=live.url) as c:
        page = (await c.get("/")).text
    assert '<meta name="tandtid-tiles" content="https://tile.openstreetmap.org/{z}/{x}/{y}.png">' in page
    own = LiveServer(
        tmp_path_factory.mktemp("tiles"), tile_url="https://karta.region.se/{z}/{x}/{y}.png?k=1&s=2"
    )
    own.start()
    try:
        async with httpx.AsyncClient(base_url=own.url) as c:
            page = (await c.get("/")).text
        assert (
            '<meta name="tandtid-tiles" content="https://karta.region.se/{z}/{x}/{y}.png?k=1&amp;s=2">'
            in page
        )
    finally:
        own.stop()
