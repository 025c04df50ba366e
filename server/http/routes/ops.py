"""Operations: liveness, readiness, Prometheus metrics, the OpenAPI document.

Not rate limited (probes must never be starved) and not behind auth: nothing here carries
personal data. ``/metrics`` is meant to be firewalled to the scraper in production.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from server.http.openapi import Endpoint
from server.http.routes.access import regions_of
from server.http.routes.replies import json_response


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    regions = regions_of(request)
    waiting = [code for code, actor in regions.actors.items() if not actor.ready]
    journal = await regions.journal_ok()
    body: dict[str, Any] = {
        "ready": not waiting and journal,
        "journal": journal,
        "regions_not_ready": waiting,
    }
    return json_response(body, status=200 if body["ready"] else 503)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return json_response(request.app.state.openapi, headers={"Cache-Control": "no-cache"})


ENDPOINTS = [
    Endpoint("GET", "/health", health, "The process is alive", "operations", rate_limited=False),
    Endpoint(
        "GET",
        "/ready",
        ready,
        "200 when every region is recovered and its journal answers",
        "operations",
        rate_limited=False,
    ),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        "operations",
        ok_media="text/plain",
        ok_schema={"type": "string"},
        rate_limited=False,
    ),
    Endpoint("GET", "/openapi.json", openapi, "This document", "operations"),
]
