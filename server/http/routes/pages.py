"""The browser pages: HTML shells from ``static/`` (the pages fetch their data from the API).

Served with ``no-cache`` so a deploy is picked up at once, their references to ``/static`` versioned
(``server.http.static_assets``: ``/static/v/<content hash>/…``, kept by browsers for a year) and the map's
street tiles (``<meta name="tandtid-tiles">``) from ``Settings.tile_url``.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from server.http.errors import not_found
from server.http.openapi import Endpoint
from server.http.static_assets import asset_version, versioned_page

# The source tree's static/ (a checkout or an editable install); an installed wheel has no source tree,
# so an image that copies static/ elsewhere names it (the Dockerfile sets /app/static).
STATIC_DIR = Path(os.environ.get("TANDTID_STATIC_DIR") or Path(__file__).resolve().parents[3] / "static")


_TILES = re.compile(r'<meta name="tandtid-tiles" content="[^"]*">')


def _page(name: str, status: int = 200, request: Request | None = None) -> HTMLResponse:
    """The page, its ``/static`` references versioned; with ``request``, the tile URL of the app's settings."""
    path = STATIC_DIR / name
    if not path.is_file():
        raise not_found(f"page {name} is not installed")
    page = versioned_page(path.read_text(encoding="utf-8"), asset_version(STATIC_DIR).current())
    settings = getattr(request.app.state, "settings", None) if request is not None else None
    if settings is not None:
        meta = f'<meta name="tandtid-tiles" content="{html.escape(settings.tile_url)}">'
        page = _TILES.sub(lambda _: meta, page)
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-cache"})


# Unknown paths under these keep the API's JSON error, whatever the client accepts.
_NEVER_PAGES = ("/api", "/ws", "/static", "/metrics", "/ready", "/health")


def _quality(accept: str, media: str) -> float:
    """The q a client's Accept header gives ``media`` exactly (0 when it does not name it)."""
    best = 0.0
    for item in accept.split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        if kind.lower() != media:
            continue
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best


def not_found_page(request: Request) -> Response | None:
    """static/404.html for a browser navigating to a path that is no page (GET or HEAD asking for HTML
    above JSON, outside the API's paths), else None: API clients keep the JSON error."""
    path = request.url.path
    if request.method not in ("GET", "HEAD") or any(
        path == p or path.startswith(p + "/") for p in _NEVER_PAGES
    ):
        return None
    accept = request.headers.get("accept", "")
    if _quality(accept, "text/html") <= _quality(accept, "application/json"):
        return None
    if not (STATIC_DIR / "404.html").is_file():
        return None
    return _page("404.html", status=404, request=request)


async def index_page(request: Request) -> Response:
    return _page("index.html", request=request)


async def clinic_page(request: Request) -> Response:
    return _page("clinic.html", request=request)


async def me_page(request: Request) -> Response:
    return _page("me.html", request=request)


async def kiosk_page(request: Request) -> Response:
    return _page("kiosk.html", request=request)


async def staff_page(request: Request) -> Response:
    return _page("staff.html", request=request)


async def admin_page(request: Request) -> Response:
    return _page("admin.html", request=request)


async def favicon(request: Request) -> Response:
    """For clients that ask for /favicon.ico without reading the pages' <link rel="icon"> (the SVG)."""
    path = STATIC_DIR / "favicon.ico"
    if not path.is_file():
        raise not_found("no favicon installed")
    return FileResponse(path, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"})


ENDPOINTS = [
    Endpoint("GET", "/", index_page, "The map", "pages", in_schema=False),
    Endpoint("GET", "/clinic/{id}", clinic_page, "A clinic's page", "pages", in_schema=False),
    Endpoint("GET", "/me", me_page, "My bookings", "pages", in_schema=False),
    Endpoint("GET", "/kiosk/{id}", kiosk_page, "A clinic's kiosk", "pages", in_schema=False),
    Endpoint("GET", "/staff", staff_page, "Clinic staff", "pages", in_schema=False),
    Endpoint("GET", "/admin", admin_page, "Admin dashboard", "pages", in_schema=False),
    Endpoint("GET", "/favicon.ico", favicon, "The site's icon", "pages", in_schema=False),
]
