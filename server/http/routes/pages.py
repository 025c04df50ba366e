"""The browser pages: HTML shells from ``static/`` (the pages fetch their data from the API).

Served with ``no-cache`` so a deploy is picked up at once; the assets under ``/static`` are
served by the mount of ``server.http.static_assets`` (gzip, a week's cache for vendored files, ETag
revalidation for the project's own).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from server.http.errors import not_found
from server.http.openapi import Endpoint

# The source tree's static/ (a checkout or an editable install); an installed wheel has no source tree,
# so an image that copies static/ elsewhere names it (the Dockerfile sets /app/static).
STATIC_DIR = Path(os.environ.get("TANDTID_STATIC_DIR") or Path(__file__).resolve().parents[3] / "static")


def _page(name: str, status: int = 200) -> Response:
    path = STATIC_DIR / name
    if not path.is_file():
        raise not_found(f"page {name} is not installed")
    return FileResponse(
        path, status_code=status, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
    )


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
    return _page("404.html", status=404)


async def index_page(request: Request) -> Response:
    return _page("index.html")


async def clinic_page(request: Request) -> Response:
    return _page("clinic.html")


async def me_page(request: Request) -> Response:
    return _page("me.html")


async def kiosk_page(request: Request) -> Response:
    return _page("kiosk.html")


async def staff_page(request: Request) -> Response:
    return _page("staff.html")


async def admin_page(request: Request) -> Response:
    return _page("admin.html")


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
