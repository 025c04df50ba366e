"""A signed-in patient's wait-list entries: join, list, leave.

The engine keeps the line (``engine.waitlist``); these routes only validate, choose the
entry id (``"<REGION>-w" + 8 random bytes``, unguessable) and show entries. An offer made
to an entry is a hold: it shows here under ``offer`` and in ``GET /api/holds``, and is
confirmed with ``POST /api/bookings {"hold": id}`` like any hold.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.calendar import date_of
from engine.commands import JoinWaitlist, LeaveWaitlist
from engine.state import RegionState
from engine.waitlist import WaitEntry
from server.demo import geography
from server.http import ids
from server.http.errors import not_found
from server.http.openapi import Endpoint
from server.http.routes.access import (
    first_day,
    parse_body,
    path_id,
    region_or_404,
    regions_of,
    require_user,
    submit_own,
)
from server.http.routes.replies import json_response, no_content
from server.http.schemas import WaitlistBody, minute_of
from server.http.views import epoch_iso, hold_view


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def entry_view(state: RegionState, entry: WaitEntry) -> dict[str, Any]:
    hold = state.hold(entry.offer) if entry.offer else None
    return {
        "id": entry.id,
        "clinic": entry.clinic or None,
        "municipality": entry.municipality or None,
        "service": entry.service,
        "from": date_of(entry.first_day).isoformat(),
        "days": entry.days,
        "from_time": _clock(entry.from_minute),
        "to_time": _clock(entry.to_minute),
        "joined_at": epoch_iso(entry.joined_at),
        "offer": hold_view(hold, state.clinics[hold.clinic]) if hold is not None else None,
    }


async def join_waitlist(request: Request) -> Response:
    patient = require_user(request)
    body = await parse_body(request, WaitlistBody)
    if body.clinic is not None:
        region = region_or_404(body.clinic)
    else:  # the schema holds exactly one of clinic and municipality
        try:
            region = geography.municipality(body.municipality or "").region
        except KeyError:
            raise not_found("no such municipality") from None
    day = first_day(request, body.from_, days=body.days)
    entry_id = ids.waitlist_id(region)
    regions = regions_of(request)
    await regions.submit(
        JoinWaitlist(
            entry_id,
            patient,
            body.clinic or "",
            body.municipality or "",
            body.service,
            day,
            body.days,
            minute_of(body.from_time),
            minute_of(body.to_time),
        )
    )

    def read(state: RegionState) -> dict[str, Any] | None:
        entry = state.waitlist.entries.get(entry_id)
        return entry_view(state, entry) if entry is not None else None

    view = await regions.query(region, read)
    if view is None:  # offered and already gone (a tiny offer window): the hold tells the rest
        raise not_found("the wait-list entry is no longer open")
    return json_response({"entry": view}, status=201, headers={"Location": f"/api/waitlist/{entry_id}"})


async def list_waitlist(request: Request) -> Response:
    patient = require_user(request)
    regions = regions_of(request)

    def read(state: RegionState) -> list[dict[str, Any]]:
        return [entry_view(state, e) for e in state.waitlist.of_patient(patient)]

    found = await regions.query_available(read)
    views = sorted(found.items, key=lambda v: (v["joined_at"], v["id"]))
    return json_response(found.body("entries", views))


async def leave_waitlist(request: Request) -> Response:
    patient = require_user(request)
    entry_id = path_id(request)
    region_or_404(entry_id)
    await submit_own(request, LeaveWaitlist(entry_id, patient), "no such wait-list entry")
    return no_content()


_ENTRY = {"type": "object", "required": ["entry"], "properties": {"entry": {"type": "object"}}}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/waitlist",
        join_waitlist,
        "Wait for a time at a clinic or in a municipality",
        "patients",
        body=WaitlistBody,
        ok=201,
        ok_schema=_ENTRY,
        errors=(404, 409),
        auth="user",
    ),
    Endpoint(
        "GET",
        "/api/waitlist",
        list_waitlist,
        "The signed-in patient's wait-list entries",
        "patients",
        auth="user",
    ),
    Endpoint(
        "DELETE",
        "/api/waitlist/{id}",
        leave_waitlist,
        "Leave the wait-list (an open offer passes on)",
        "patients",
        ok=204,
        auth="user",
    ),
]
