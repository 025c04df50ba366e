"""The clinic API (``/api/clinic/v1/…``): a clinic's own systems and its staff.

A clinic key or a staff session reaches exactly one clinic, the principal's: a resource or
booking of any other clinic is answered as unknown (404). Patient names appear only in the
day view, looked up from the account store at the moment of the request (never journaled).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine import queries
from engine.calendar import date_of, day_of, iso
from engine.commands import Block, Cancel, Command, MarkNoShow, OpenDays, Party, Unblock
from engine.errors import Refused
from engine.events import Event
from engine.model import Clinic, Resource
from engine.state import RegionState
from server.http.errors import invalid, not_found, refusal_response
from server.http.openapi import Endpoint
from server.http.routes.access import (
    booking_as_now,
    first_day,
    locate_start,
    parse_body,
    parse_query,
    path_id,
    region_or_404,
    regions_of,
    require_clinic,
    today,
    within_horizon,
)
from server.http.routes.replies import NO_STORE, json_response
from server.http.schemas import BlockBody, CancelBody, DayQuery, OpenBody
from server.http.views import end_iso
from server.identity.accounts import Accounts


def _own_resource(state: RegionState, clinic_id: str, resource_id: str) -> tuple[Clinic, Resource]:
    clinic = state.clinics.get(clinic_id)
    resource = state.resources.get(resource_id)
    if clinic is None or resource is None or resource.clinic != clinic_id:
        raise not_found("no such resource at your clinic")
    return clinic, resource


async def clinic_day(request: Request) -> Response:
    _, clinic_id = require_clinic(request)
    q = parse_query(request, DayQuery)
    day = day_of(q.date) if q.date is not None else today(request)
    within_horizon(request, day, field="date")
    region = region_or_404(clinic_id)

    def read(state: RegionState) -> dict[str, Any] | None:
        clinic = state.clinics.get(clinic_id)
        if clinic is None:
            return None
        raw = queries.clinic_day(state, clinic_id, day)
        cm = clinic.cell_minutes
        bookings = [
            {
                "id": b["id"],
                "resource": b["resource"],
                "service": b["service"],
                "start": iso(b["day"], b["cell"], cm),
                "end": end_iso(b["day"], b["cell"], b["cells"], cm),
                "status": b["status"],
                "patient": b["patient"],
            }
            for b in raw["bookings"]
        ]
        resources = [
            {
                "id": r["id"],
                "name": r["name"],
                "kind": r["kind"],
                "services": r["services"],
                "cells": r["cells"],
            }
            for r in raw["resources"]
        ]
        return {
            "clinic": clinic_id,
            "date": date_of(day).isoformat(),
            "cell_minutes": cm,
            "resources": resources,
            "bookings": bookings,
        }

    view = await regions_of(request).query(region, read)
    if view is None:
        raise not_found("no such clinic")
    accounts: Accounts = request.app.state.accounts
    patients = {b["patient"] for b in view["bookings"]}
    # A query of the account store (SQLite, or a round trip to Redis): off the event loop.
    names = await asyncio.to_thread(accounts.names, patients) if patients else {}
    for booking in view["bookings"]:
        booking["patient_name"] = names.get(booking.pop("patient"), "")
    return json_response(view, headers=NO_STORE)


async def open_days(request: Request) -> Response:
    _, clinic_id = require_clinic(request)
    body = await parse_body(request, OpenBody)
    region = region_or_404(clinic_id)
    first = first_day(request, body.from_, days=body.days)
    horizon = int(request.app.state.settings.horizon_days)

    def make(state: RegionState) -> Command:
        _own_resource(state, clinic_id, body.resource)
        return OpenDays(body.resource, first, body.days, horizon_days=horizon)

    changed = await regions_of(request).decide(region, make, lambda _state, events: bool(events))
    if isinstance(changed, Refused):
        return refusal_response(request, changed)
    return json_response(
        {"resource": body.resource, "from": body.from_.isoformat(), "days": body.days, "changed": changed}
    )


async def _block_or_unblock(request: Request, unblock: bool) -> Response:
    _, clinic_id = require_clinic(request)
    body = await parse_body(request, BlockBody)
    region = region_or_404(clinic_id)

    def make(state: RegionState) -> Command:
        clinic, _ = _own_resource(state, clinic_id, body.resource)
        day, cell = locate_start(body.start, clinic.cell_minutes)
        if body.minutes % clinic.cell_minutes:
            raise invalid("minutes", f"minutes must be a multiple of {clinic.cell_minutes}")
        return (Unblock if unblock else Block)(body.resource, day, cell, body.minutes // clinic.cell_minutes)

    def reply(state: RegionState, _events: list[Event]) -> str:
        day, cell = locate_start(body.start, state.clinics[clinic_id].cell_minutes)
        return iso(day, cell, state.clinics[clinic_id].cell_minutes)

    start = await regions_of(request).decide(region, make, reply)  # one trip: checked, applied, answered
    if isinstance(start, Refused):
        return refusal_response(request, start)
    return json_response(
        {"resource": body.resource, "start": start, "minutes": body.minutes, "blocked": not unblock}
    )


async def block(request: Request) -> Response:
    return await _block_or_unblock(request, unblock=False)


async def unblock(request: Request) -> Response:
    return await _block_or_unblock(request, unblock=True)


async def cancel_booking(request: Request) -> Response:
    _, clinic_id = require_clinic(request)
    booking_id = path_id(request)
    region = region_or_404(booking_id)
    if region != region_or_404(clinic_id):
        raise not_found("no such booking")
    body = await parse_body(request, CancelBody, required=False)
    regions = regions_of(request)
    # The engine refuses another clinic's booking as NOT_FOUND (mapped to 404).
    await regions.submit(Cancel(booking_id, Party.CLINIC, clinic_id, body.reason or ""))
    return json_response({"booking": await booking_as_now(regions, region, booking_id)})


async def mark_no_show(request: Request) -> Response:
    _, clinic_id = require_clinic(request)
    booking_id = path_id(request)
    region = region_or_404(booking_id)
    if region != region_or_404(clinic_id):
        raise not_found("no such booking")
    regions = regions_of(request)
    # Another clinic's booking is NOT_FOUND; one not started yet or not booked is INVALID (422).
    await regions.submit(MarkNoShow(booking_id, clinic_id))
    return json_response({"booking": await booking_as_now(regions, region, booking_id)})


_BOOKING = {"type": "object", "required": ["booking"], "properties": {"booking": {"type": "object"}}}

ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/clinic/v1/day",
        clinic_day,
        "The clinic's day: cells per resource and bookings",
        "clinic",
        query=DayQuery,
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/open",
        open_days,
        "Open days for a resource",
        "clinic",
        body=OpenBody,
        errors=(404,),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/block",
        block,
        "Block time (lunch, leave)",
        "clinic",
        body=BlockBody,
        errors=(404, 409),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/unblock",
        unblock,
        "Unblock time",
        "clinic",
        body=BlockBody,
        errors=(404, 409),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/bookings/{id}/cancel",
        cancel_booking,
        "Cancel a booking of the clinic (cells go to BUFFER, then FREE), with an optional reason for the patient",
        "clinic",
        body=CancelBody,
        body_required=False,
        ok_schema=_BOOKING,
        errors=(409,),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/bookings/{id}/no-show",
        mark_no_show,
        "Mark that the patient did not come (after the start; the time stays booked)",
        "clinic",
        ok_schema=_BOOKING,
        auth="clinic",
    ),
]
