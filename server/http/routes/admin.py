"""Operator routes (``/api/admin/…``, role admin): every clinic, any booking, the system's state."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.commands import Cancel, Party, SuspendClinic
from engine.state import RegionState
from server.http.openapi import Endpoint
from server.http.routes.access import (
    booking_as_now,
    clinic_in_path,
    first_day,
    parse_body,
    parse_query,
    path_id,
    region_or_404,
    regions_of,
    require_admin,
    submit_own,
    today,
)
from server.http.routes.public import clinic_summary
from server.http.routes.replies import json_response, shown_once
from server.http.schemas import AdminBookingsQuery, CancelBody, SuspendBody
from server.http.views import booking_view
from server.identity.accounts import Accounts
from server.live.hub import Hub
from server.regions.actor import Unavailable

HOT_CLINICS = 10


async def all_clinics(request: Request) -> Response:
    require_admin(request)
    regions = regions_of(request)
    day = today(request)

    def read(state: RegionState) -> list[dict[str, Any]]:
        rows = []
        for clinic in state.clinics.values():
            row = clinic_summary(clinic)
            row["resources"] = len(state.resources_of(clinic.id))
            row["free_today"] = state.free_count(clinic.id, day)
            rows.append(row)
        return rows

    found = await regions.query_all(read)
    return json_response(sorted(found, key=lambda r: r["id"]))


async def clinic_bookings(request: Request) -> Response:
    require_admin(request)
    q = parse_query(request, AdminBookingsQuery)
    region = region_or_404(q.clinic)
    start = first_day(request, q.from_, days=q.days, allow_past=True)

    def read(state: RegionState) -> list[dict[str, Any]] | None:
        clinic = state.clinics.get(q.clinic)
        if clinic is None:
            return None
        out = []
        for day in range(start, start + q.days):
            for booking in state.bookings_on(q.clinic, day):
                view = booking_view(booking, clinic)
                view["patient"] = booking.patient  # opaque id, for support; never a name here
                out.append(view)
        return out

    views = await regions_of(request).query(region, read)
    if views is None:
        return json_response({"bookings": []})
    return json_response({"bookings": views})


async def cancel_booking(request: Request) -> Response:
    admin = require_admin(request)
    booking_id = path_id(request)
    region = region_or_404(booking_id)
    body = await parse_body(request, CancelBody, required=False)
    regions = regions_of(request)
    await regions.submit(Cancel(booking_id, Party.ADMIN, admin, body.reason or ""))
    return json_response({"booking": await booking_as_now(regions, region, booking_id)})


async def suspend_clinic(request: Request) -> Response:
    """Suspend a clinic (no new holds or bookings: 409 SUSPENDED; its bookings stay) or lift it."""
    require_admin(request)
    clinic_id = path_id(request)
    body = await parse_body(request, SuspendBody)
    region = region_or_404(clinic_id)
    await submit_own(request, SuspendClinic(clinic_id, body.suspended), "no such clinic")

    def read(state: RegionState) -> dict[str, Any]:
        clinic = state.clinics[clinic_id]
        return clinic_summary(clinic) | {"suspended": clinic.suspended}

    return json_response({"clinic": await regions_of(request).query(region, read)})


async def create_clinic_key(request: Request) -> Response:
    """A new API key for a clinic, in the reply only: the server keeps its hash."""
    require_admin(request)
    clinic = await clinic_in_path(request)
    accounts: Accounts = request.app.state.accounts
    key = await asyncio.to_thread(accounts.create_clinic_key, clinic)
    return shown_once({"clinic": clinic}, key, field="key")


async def system_state(request: Request) -> Response:
    require_admin(request)
    regions = regions_of(request)
    day = today(request)

    def read(state: RegionState) -> tuple[int, int, list[tuple[int, str, str]]]:
        busy = [(len(state.bookings_on(c.id, day)), c.id, c.name) for c in state.clinics.values()]
        busy.sort(key=lambda t: (-t[0], t[1]))
        return state.booking_count(), state.hold_count(), busy[:HOT_CLINICS]

    codes = list(regions.actors)
    outcomes = await asyncio.gather(*(regions.query(code, read) for code in codes), return_exceptions=True)
    results: list[tuple[int, int, list[tuple[int, str, str]]]] = []
    for outcome in outcomes:
        if isinstance(outcome, Unavailable):  # a failed or fenced region: its row says so
            results.append((0, 0, []))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.append(outcome)
    rows: list[dict[str, Any]] = []
    hot: list[dict[str, Any]] = []
    for code, (bookings, holds, busy) in zip(codes, results, strict=True):
        actor = regions.actors[code]
        rows.append(
            {
                "code": code,
                "ready": actor.ready,
                "lifecycle": actor.lifecycle.value,
                "position": actor.position,
                "queue_depth": actor.queue_depth,
                "bookings": bookings,
                "holds": holds,
            }
        )
        hot.extend(
            {"id": cid, "name": name, "region": code, "bookings_today": n} for n, cid, name in busy if n
        )
    hot.sort(key=lambda h: (-h["bookings_today"], h["id"]))
    hub: Hub = request.app.state.hub
    stats = hub.stats()
    return json_response(
        {
            "regions": rows,
            "connections": int(stats.get("connections", 0)),
            "hub": stats,
            "hot_clinics": hot[:HOT_CLINICS],
        }
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/admin/clinics",
        all_clinics,
        "Every clinic",
        "admin",
        auth="admin",
        ok_schema={"type": "array", "items": {"type": "object"}},
    ),
    Endpoint(
        "GET",
        "/api/admin/bookings",
        clinic_bookings,
        "A clinic's bookings (from, days)",
        "admin",
        query=AdminBookingsQuery,
        auth="admin",
    ),
    Endpoint(
        "POST",
        "/api/admin/bookings/{id}/cancel",
        cancel_booking,
        "Cancel any booking, with an optional reason for the patient",
        "admin",
        body=CancelBody,
        body_required=False,
        errors=(409,),
        auth="admin",
    ),
    Endpoint(
        "POST",
        "/api/admin/clinics/{id}/suspend",
        suspend_clinic,
        "Suspend a clinic (it takes no new bookings; its bookings stay) or lift the suspension",
        "admin",
        body=SuspendBody,
        auth="admin",
        ok_schema={"type": "object", "required": ["clinic"]},
        errors=(404,),
    ),
    Endpoint(
        "POST",
        "/api/admin/clinics/{id}/keys",
        create_clinic_key,
        "A new API key for a clinic (shown once)",
        "admin",
        auth="admin",
        ok=201,
        errors=(404,),
    ),
    Endpoint(
        "GET", "/api/admin/state", system_state, "Regions, connections, hot clinics", "admin", auth="admin"
    ),
]
