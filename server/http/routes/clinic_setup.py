"""Clinic setup over HTTP: a clinic's own details, resources and hours (``/api/clinic/v1/…``,
its key or a staff session) and registering a clinic (``/api/admin/clinics``, admin).

Hours are the clinic's (``/hours``, ``/day-hours``) and, for a resource that works other hours
(a hygienist on Tuesday mornings), its own (``/resources/{id}/hours``, ``/resources/{id}/day-hours``);
a resource without them follows the clinic's (``engine.rows.OpeningMasks`` says how they meet).

Every change is an engine command (``engine.setup``), journaled like a booking, so every
screen watching the clinic sees the new times live. After each change the clinic's days
ahead are opened from its hours (``OpenAhead`` up to ``open_ahead_days``, within the
server's horizon). A change that would strand bookings answers 409 HAS_BOOKINGS with their
ids in ``error.bookings``; sending it again with those ids in ``cancel`` cancels them (the
patients are told as for any clinic cancellation).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.calendar import date_of, day_of
from engine.commands import (
    EditClinic,
    OpenAhead,
    PutResource,
    RegisterClinic,
    RetireResource,
    SetDayHours,
    SetHours,
)
from engine.model import Clinic, ClinicKind, OpeningHours, Resource, ResourceKind
from engine.state import RegionState
from server.http import ids
from server.http.errors import invalid, not_found
from server.http.openapi import Endpoint
from server.http.routes.access import (
    parse_body,
    path_id,
    region_or_404,
    regions_of,
    require_admin,
    require_clinic,
    require_clinic_admin,
    within_horizon,
)
from server.http.routes.replies import NO_STORE, json_response
from server.http.schemas import (
    ClinicDetailsBody,
    DayHoursBody,
    HoursBody,
    Interval,
    RegisterClinicBody,
    ResourceBody,
    ResourceHoursBody,
    RetireBody,
    minute_of,
)


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _intervals(ivs: tuple[tuple[int, int], ...]) -> list[dict[str, str]]:
    return [{"from": _clock(a), "to": _clock(b)} for a, b in ivs]


def _minutes(ivs: list[Interval]) -> tuple[tuple[int, int], ...]:
    return tuple((minute_of(iv.from_), minute_of(iv.to)) for iv in ivs)


def _week(hours: OpeningHours) -> dict[str, list[dict[str, str]]]:
    return {str(d): _intervals(hours.get(d, ())) for d in range(1, 8)}


def _exceptions(days: dict[int, tuple[tuple[int, int], ...]]) -> list[dict[str, Any]]:
    return [{"date": date_of(d).isoformat(), "hours": _intervals(ivs)} for d, ivs in sorted(days.items())]


def setup_view(state: RegionState, clinic: Clinic) -> dict[str, Any]:
    """Everything a clinic sets up, as the API shows it."""
    return {
        "id": clinic.id,
        "name": clinic.name,
        "region": clinic.region,
        "municipality": clinic.municipality,
        "municipality_name": clinic.municipality_name,
        "address": clinic.address,
        "lat": clinic.lat,
        "lon": clinic.lon,
        "phone": clinic.phone,
        "kind": str(clinic.kind),
        "services": list(clinic.services),
        "cell_minutes": clinic.cell_minutes,
        "cancel_notice_hours": clinic.cancel_notice_hours,
        "offer_minutes": clinic.offer_minutes,
        "max_bookings_per_patient": clinic.max_bookings_per_patient,
        "open_ahead_days": clinic.open_ahead_days,
        "week": _week(clinic.hours),
        "exceptions": _exceptions(clinic.exceptions),
        "resources": [
            {
                "id": r.id,
                "kind": str(r.kind),
                "name": r.name,
                "services": list(r.services),
                "retired": r.retired,
                # its own hours: week null = the clinic's; exceptions: its own days only
                "week": None if r.hours is None else _week(r.hours),
                "exceptions": _exceptions(r.exceptions),
            }
            for r in state.resources_of(clinic.id)
        ],
    }


async def _reply(request: Request, clinic_id: str, status: int = 200) -> Response:
    """Open the days ahead from the (new) setup, then answer with the whole setup."""
    region = region_or_404(clinic_id)
    regions = regions_of(request)
    horizon = int(request.app.state.settings.horizon_days)
    await regions.submit(OpenAhead(region, horizon, clinic_id))

    def read(state: RegionState) -> dict[str, Any] | None:
        clinic = state.clinics.get(clinic_id)
        return setup_view(state, clinic) if clinic is not None else None

    view = await regions.query(region, read)
    if view is None:
        raise not_found("no such clinic")
    return json_response({"clinic": view}, status=status, headers=NO_STORE)


async def get_setup(request: Request) -> Response:
    _, clinic_id = require_clinic(request)
    region = region_or_404(clinic_id)

    def read(state: RegionState) -> dict[str, Any] | None:
        clinic = state.clinics.get(clinic_id)
        return setup_view(state, clinic) if clinic is not None else None

    view = await regions_of(request).query(region, read)
    if view is None:
        raise not_found("no such clinic")
    return json_response({"clinic": view}, headers=NO_STORE)


async def edit_details(request: Request) -> Response:
    _, clinic_id = require_clinic_admin(request)
    body = await parse_body(request, ClinicDetailsBody)
    await regions_of(request).submit(
        EditClinic(
            clinic_id,
            name=body.name,
            address=body.address,
            lat=body.lat,
            lon=body.lon,
            phone=body.phone,
            kind=ClinicKind(body.kind) if body.kind else None,
            services=tuple(body.services) if body.services is not None else None,
            cancel_notice_hours=body.cancel_notice_hours,
            offer_minutes=body.offer_minutes,
            max_bookings_per_patient=body.max_bookings_per_patient,
            open_ahead_days=body.open_ahead_days,
        )
    )
    return await _reply(request, clinic_id)


async def add_resource(request: Request) -> Response:
    return await _put_resource(request, None)


async def edit_resource(request: Request) -> Response:
    return await _put_resource(request, path_id(request))


async def _put_resource(request: Request, rid: str | None) -> Response:
    _, clinic_id = require_clinic_admin(request)
    body = await parse_body(request, ResourceBody)
    region = region_or_404(clinic_id)
    regions = regions_of(request)
    if rid is None:
        rid, status = ids.resource_id(clinic_id), 201
    else:
        status = 200
        known = await regions.query(region, lambda s: s.resources.get(rid))
        if known is None or known.clinic != clinic_id:
            raise not_found("no such resource at your clinic")
    resource = Resource(rid, clinic_id, ResourceKind(body.kind), body.name, tuple(body.services))
    await regions.submit(PutResource(resource))
    return await _reply(request, clinic_id, status)


async def _own_resource(request: Request, clinic_id: str) -> str:
    """The resource the path names, 404 unless it is the clinic's."""
    rid = path_id(request)
    known = await regions_of(request).query(region_or_404(clinic_id), lambda s: s.resources.get(rid))
    if known is None or known.clinic != clinic_id:
        raise not_found("no such resource at your clinic")
    return rid


async def retire_resource(request: Request) -> Response:
    _, clinic_id = require_clinic_admin(request)
    body = await parse_body(request, RetireBody)
    rid = await _own_resource(request, clinic_id)
    await regions_of(request).submit(RetireResource(rid, tuple(body.cancel)))
    return await _reply(request, clinic_id)


async def set_resource_hours(request: Request) -> Response:
    _, clinic_id = require_clinic_admin(request)
    body = await parse_body(request, ResourceHoursBody)
    rid = await _own_resource(request, clinic_id)
    week = None if body.week is None else {int(d): _minutes(ivs) for d, ivs in body.week.items()}
    await regions_of(request).submit(SetHours(clinic_id, week, tuple(body.cancel), rid))
    return await _reply(request, clinic_id)


async def set_resource_day_hours(request: Request) -> Response:
    _, clinic_id = require_clinic_admin(request)
    body = await parse_body(request, DayHoursBody)
    rid = await _own_resource(request, clinic_id)
    day = day_of(body.date)
    within_horizon(request, day, field="date")
    hours = None if body.hours is None else _minutes(body.hours)
    await regions_of(request).submit(SetDayHours(clinic_id, day, hours, tuple(body.cancel), rid))
    return await _reply(request, clinic_id)


async def set_hours(request: Request) -> Response:
    _, clinic_id = require_clinic_admin(request)
    body = await parse_body(request, HoursBody)
    week = {int(d): _minutes(ivs) for d, ivs in body.week.items()}
    await regions_of(request).submit(SetHours(clinic_id, week, tuple(body.cancel)))
    return await _reply(request, clinic_id)


async def set_day_hours(request: Request) -> Response:
    _, clinic_id = require_clinic_admin(request)
    body = await parse_body(request, DayHoursBody)
    day = day_of(body.date)
    within_horizon(request, day, field="date")
    hours = None if body.hours is None else _minutes(body.hours)
    await regions_of(request).submit(SetDayHours(clinic_id, day, hours, tuple(body.cancel)))
    return await _reply(request, clinic_id)


async def register_clinic(request: Request) -> Response:
    require_admin(request)
    body = await parse_body(request, RegisterClinicBody)
    regions = regions_of(request)
    if body.region not in regions.actors:
        raise invalid("region", "no such region here")
    clinic = Clinic(
        id=ids.clinic_id(body.region),
        name=body.name,
        region=body.region,
        municipality=body.municipality,
        municipality_name=body.municipality_name,
        address=body.address,
        lat=body.lat,
        lon=body.lon,
        kind=ClinicKind(body.kind),
        services=tuple(body.services),
        hours={d: () for d in range(1, 8)},  # closed until the clinic sets its hours
        cell_minutes=body.cell_minutes,
        phone=body.phone,
        open_ahead_days=body.open_ahead_days,
    )
    await regions.submit(RegisterClinic(clinic, ()))
    return await _reply(request, clinic.id, 201)


_CLINIC = {"type": "object", "required": ["clinic"], "properties": {"clinic": {"type": "object"}}}

ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/clinic/v1/setup",
        get_setup,
        "The clinic's setup: details, rules, resources, weekly hours and day exceptions",
        "clinic",
        ok_schema=_CLINIC,
        errors=(404,),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/setup/details",
        edit_details,
        "Change the clinic's details and rules (fields left out stay)",
        "clinic",
        body=ClinicDetailsBody,
        ok_schema=_CLINIC,
        errors=(404,),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/resources",
        add_resource,
        "Add a dentist, hygienist or chair",
        "clinic",
        body=ResourceBody,
        ok=201,
        ok_schema=_CLINIC,
        errors=(404,),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/resources/{id}",
        edit_resource,
        "Change a resource's kind, name and services",
        "clinic",
        body=ResourceBody,
        ok_schema=_CLINIC,
        errors=(404,),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/resources/{id}/retire",
        retire_resource,
        "Retire a resource: 409 HAS_BOOKINGS lists its future bookings unless sent in cancel",
        "clinic",
        body=RetireBody,
        ok_schema=_CLINIC,
        errors=(404, 409),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/resources/{id}/hours",
        set_resource_hours,
        "A resource's own weekly hours, or week null: the clinic's again. 409 HAS_BOOKINGS lists its bookings"
        " left outside unless sent in cancel",
        "clinic",
        body=ResourceHoursBody,
        ok_schema=_CLINIC,
        errors=(404, 409),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/resources/{id}/day-hours",
        set_resource_day_hours,
        "A resource's own day (leave: [], a late evening), or hours null: the clinic's day again",
        "clinic",
        body=DayHoursBody,
        ok_schema=_CLINIC,
        errors=(404, 409),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/hours",
        set_hours,
        "Set the weekly opening hours: 409 HAS_BOOKINGS lists bookings left outside unless sent in cancel",
        "clinic",
        body=HoursBody,
        ok_schema=_CLINIC,
        errors=(404, 409),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/day-hours",
        set_day_hours,
        "One day's own hours (a holiday, a late evening) or back to the week's (hours null)",
        "clinic",
        body=DayHoursBody,
        ok_schema=_CLINIC,
        errors=(404, 409),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/admin/clinics",
        register_clinic,
        "Register a clinic (closed until it sets hours and resources; then a key: /keys)",
        "admin",
        body=RegisterClinicBody,
        ok=201,
        ok_schema=_CLINIC,
        auth="admin",
    ),
]
