"""Private iCal feeds: a patient's upcoming bookings, a clinic's upcoming bookings.

The token in the URL is the only credential (``server.identity.calendar_tokens``): anyone holding the URL can
read the feed, so it is created and revoked by its owner and a clinic feed carries no patient
names or ids (service, resource and booking id only). An unknown or revoked token is 404.
The access log records the route template, never the token.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.calendar import cell_epoch, day_of_epoch
from engine.model import SERVICES_BY_ID, Clinic
from engine.records import Booking, BookingStatus
from engine.state import RegionState
from server.http.errors import not_found
from server.http.openapi import Endpoint
from server.http.routes.access import now_s, region_or_404, regions_of, require_clinic, require_user
from server.http.routes.replies import NO_STORE, json_response, no_content
from server.http.views import feed_ics
from server.identity.calendar_tokens import FeedKind, FeedTokenStore

CLINIC_FEED_DAYS = 90
_ICS = "text/calendar; charset=utf-8"


def _tokens(request: Request) -> FeedTokenStore:
    tokens: FeedTokenStore = request.app.state.feed_tokens
    return tokens


async def _feed_owner(request: Request, kind: FeedKind) -> str:
    """Whose feed the token in the path opens (a patient, a clinic); 404 for no live token."""
    token = str(request.path_params["token"])
    owner = await asyncio.to_thread(_tokens(request).owner, kind, token)
    if owner is None:
        raise not_found("no such feed")
    return owner


def _service(booking: Booking) -> str:
    service = SERVICES_BY_ID.get(booking.service)
    return service.name if service else booking.service


def _upcoming(booking: Booking, clinic: Clinic, now: int) -> bool:
    return (
        booking.status == BookingStatus.BOOKED
        and cell_epoch(booking.day, booking.cell, clinic.cell_minutes) >= now
    )


def _feed_response(text: str) -> Response:
    return Response(text, media_type=_ICS, headers={"Cache-Control": "private, max-age=300"})


async def patient_feed(request: Request) -> Response:
    patient = await _feed_owner(request, FeedKind.PATIENT)
    regions = regions_of(request)
    now = now_s(request)

    def read(state: RegionState) -> list[tuple[Booking, Clinic, str]]:
        out = []
        for b in state.bookings_of(patient):
            clinic = state.clinics[b.clinic]
            if _upcoming(b, clinic, now):
                out.append((b, clinic, f"{_service(b)} – {clinic.name}"))
        return out

    def absent(state: RegionState) -> bool:  # a patient's bookings are only ever added
        return not state.may_have_bookings_of(patient)

    found = await regions.query_all(read, absent=absent)
    items = sorted(found, key=lambda i: (cell_epoch(i[0].day, i[0].cell, i[1].cell_minutes), i[0].id))
    return _feed_response(feed_ics(items, name="Tandtid", now_s=now))


async def clinic_feed(request: Request) -> Response:
    clinic_id = await _feed_owner(request, FeedKind.CLINIC)
    now = now_s(request)
    today = day_of_epoch(now)

    def read(state: RegionState) -> tuple[str, list[tuple[Booking, Clinic, str]]]:
        clinic = state.clinics.get(clinic_id)
        if clinic is None:
            return "", []
        names = {r.id: r.name for r in state.resources_of(clinic_id)}
        items = [
            (b, clinic, f"{_service(b)} – {names.get(b.resource, b.resource)} ({b.id})")
            for day in range(today, today + CLINIC_FEED_DAYS)
            for b in state.bookings_on(clinic_id, day)
            if _upcoming(b, clinic, now)
        ]
        return clinic.name, items

    name, items = await regions_of(request).query(region_or_404(clinic_id), read)
    return _feed_response(feed_ics(items, name=name or "Tandtid", now_s=now))


def _created(request: Request, kind: FeedKind, token: str) -> Response:
    path = f"/ical/{kind.value}/{token}.ics"
    return json_response(
        {"url": str(request.base_url).rstrip("/") + path, "path": path},
        status=201,
        headers=NO_STORE,
    )


async def create_my_token(request: Request) -> Response:
    user_id = require_user(request)
    token = await asyncio.to_thread(_tokens(request).create, FeedKind.PATIENT, user_id)
    return _created(request, FeedKind.PATIENT, token)


async def revoke_my_token(request: Request) -> Response:
    user_id = require_user(request)
    await asyncio.to_thread(_tokens(request).revoke, FeedKind.PATIENT, user_id)
    return no_content()


async def create_clinic_token(request: Request) -> Response:
    _, clinic_id = require_clinic(request)
    token = await asyncio.to_thread(_tokens(request).create, FeedKind.CLINIC, clinic_id)
    return _created(request, FeedKind.CLINIC, token)


async def revoke_clinic_token(request: Request) -> Response:
    _, clinic_id = require_clinic(request)
    await asyncio.to_thread(_tokens(request).revoke, FeedKind.CLINIC, clinic_id)
    return no_content()


_FEED_URL: dict[str, Any] = {
    "type": "object",
    "required": ["url", "path"],
    "properties": {"url": {"type": "string"}, "path": {"type": "string"}},
}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/me/ical-token",
        create_my_token,
        "A private calendar feed URL of the patient's bookings (replaces the previous one)",
        "patients",
        ok=201,
        ok_schema=_FEED_URL,
        auth="user",
    ),
    Endpoint(
        "DELETE",
        "/api/me/ical-token",
        revoke_my_token,
        "Revoke the patient's calendar feed URL",
        "patients",
        ok=204,
        auth="user",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/ical-token",
        create_clinic_token,
        "A private calendar feed URL of the clinic's bookings (no patient names)",
        "clinic",
        ok=201,
        ok_schema=_FEED_URL,
        auth="clinic",
    ),
    Endpoint(
        "DELETE",
        "/api/clinic/v1/ical-token",
        revoke_clinic_token,
        "Revoke the clinic's calendar feed URL",
        "clinic",
        ok=204,
        auth="clinic",
    ),
    Endpoint(
        "GET",
        "/ical/patient/{token}.ics",
        patient_feed,
        "A patient's calendar feed (the token is the key)",
        "feeds",
        ok_media="text/calendar",
        ok_schema={"type": "string"},
        errors=(404,),
    ),
    Endpoint(
        "GET",
        "/ical/clinic/{token}.ics",
        clinic_feed,
        "A clinic's calendar feed (the token is the key)",
        "feeds",
        ok_media="text/calendar",
        ok_schema={"type": "string"},
        errors=(404,),
    ),
]
