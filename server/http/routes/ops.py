"""Operations: liveness, readiness, Prometheus metrics, the OpenAPI document.

Not rate limited (probes must never be starved) and not behind auth: nothing here carries
personal data. ``/metrics`` is meant to be firewalled to the scraper in production.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from server.consumers.process import merged_exposition
from server.health import Health
from server.http.openapi import Endpoint
from server.http.routes.access import regions_of
from server.http.routes.replies import json_response
from server.regions.actor import Lifecycle


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    """200 "ready": every region serves. 200 "degraded": some regions FAILED or are FENCED
    (named in ``regions_failed`` with why; ``tandtid journal check`` tells more), or a journal
    consumer is down (restarting) for some region, while every other region serves, so a
    balancer keeps sending their traffic. ``degraded`` lists every part that is down — regions
    and consumers alike — as ``{part, region, why, ...}``. 503 while any region is still
    recovering, the journal does not answer, or it refuses every write (a full disk:
    ``journal_writable`` false, the ``journal`` part in ``degraded`` says why; bookings get 503).
    ``instance``: the ``TANDTID_INSTANCE`` the process was started with, only when it was set."""
    regions = regions_of(request)
    waiting = [code for code, actor in regions.actors.items() if not actor.serving]
    failed = {
        code: {"lifecycle": actor.lifecycle.value, "why": actor.failure or ""}
        for code, actor in regions.actors.items()
        if actor.lifecycle in (Lifecycle.FAILED, Lifecycle.FENCED)
    }
    health: Health = request.app.state.health
    degraded: list[dict[str, object]] = [
        {"part": "region", "region": code, "why": f"{trouble['lifecycle']}: {trouble['why']}"}
        for code, trouble in failed.items()
    ]
    degraded.extend(health.degraded())
    journal = await regions.journal_ok()  # first: while writes fail, its probe write may clear that
    write_failure = regions.journal.write_failure()
    if write_failure is not None:
        degraded.append({"part": "journal", "region": "*", "why": f"writes fail: {write_failure}"})
    serving = (
        journal
        and write_failure is None
        and len(failed) == len(waiting)
        and len(failed) < len(regions.actors)
    )
    body: dict[str, Any] = {
        "ready": not waiting and journal and write_failure is None,
        "status": ("degraded" if degraded else "ready") if serving else "unavailable",
        "journal": journal,
        "journal_writable": write_failure is None,
        "regions_not_ready": waiting,
        "regions_failed": failed,
        "journal_problems": regions.journal.problems(),
        "degraded": degraded,
    }
    if regions.leased:  # a cluster node: what it writes; it serves reads of every region
        body["regions_owned"] = sorted(regions.owned)
    instance = request.app.state.settings.instance
    if instance:  # the name its starter gave it (TANDTID_INSTANCE): this process, not another on the port
        body["instance"] = instance
    return json_response(body, status=200 if serving else 503)


async def metrics(request: Request) -> Response:
    consumers = getattr(request.app.state, "consumer_process", None)  # their own process: with its figures
    if consumers is None:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
    return Response(merged_exposition(await consumers.metrics_text()), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return json_response(request.app.state.openapi, headers={"Cache-Control": "no-cache"})


ENDPOINTS = [
    Endpoint("GET", "/health", health, "The process is alive", "operations", rate_limited=False),
    Endpoint(
        "GET",
        "/ready",
        ready,
        "200 when every region serves (or, 'degraded', every region but the failed ones named)",
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
