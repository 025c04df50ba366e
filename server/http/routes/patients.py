"""A signed-in patient's holds and bookings.

Ids are made here (unguessable, carrying the region): bookings ``"<REGION>-b" + 10 random
bytes``, holds ``"<REGION>-h" + 8``. Somebody else's booking or hold is answered exactly
like an unknown one (404), whatever the engine said (NOT_YOURS never leaks).

An ``Idempotency-Key`` is the patient's across all regions: the same key sent for a booking in
another region is 409 IDEMPOTENCY_MISMATCH, not a second booking. The key is chosen by the
client and may carry anything, so only its digest reaches the engine and the journal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from engine.commands import Book, Cancel, Command, Party, PlaceHold, ReleaseHold, Reschedule
from engine.errors import RefusalCode, Refused
from engine.events import Booked, Event, HoldPlaced
from engine.model import Clinic
from engine.records import Booking
from engine.state import RegionState
from server.http import ids
from server.http.errors import ApiError, invalid, not_found, refusal_response
from server.http.idempotency import InFlight
from server.http.openapi import Endpoint
from server.http.routes.access import (
    locate_start,
    now_s,
    parse_body,
    path_id,
    region_or_404,
    regions_of,
    require_user,
    submit_own,
)
from server.http.routes.replies import json_response, no_content
from server.http.schemas import BookingBody, HoldBody, RescheduleBody
from server.http.views import booking_ics, booking_view, hold_view

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _clinic_for_resource(state: RegionState, clinic_id: str, resource_id: str) -> Clinic:
    clinic = state.clinics.get(clinic_id)
    if clinic is None:
        raise not_found("no such clinic")
    resource = state.resources.get(resource_id)
    if resource is None or resource.clinic != clinic_id:
        raise invalid("resource", "no such resource at this clinic")
    return clinic


def _own_booking(state: RegionState, booking_id: str, patient: str) -> tuple[Booking, Clinic]:
    booking = state.booking(booking_id)
    if booking is None or booking.patient != patient:
        raise not_found("no such booking")
    return booking, state.clinics[booking.clinic]


def _too_late(clinic: Clinic | None) -> ApiError:
    phone = f" on {clinic.phone}" if clinic is not None and clinic.phone else ""
    return ApiError(
        409,
        "TOO_LATE",
        f"it is too close to the appointment to change it online; please call the clinic{phone}",
    )


# -- holds ----------------------------------------------------------------------------------------


async def place_hold(request: Request) -> Response:
    patient = require_user(request)
    body = await parse_body(request, HoldBody)
    region = region_or_404(body.clinic)
    ttl = int(request.app.state.settings.hold_ttl_s)
    hold_id = ids.hold_id(region)

    def make(state: RegionState) -> Command:
        clinic = _clinic_for_resource(state, body.clinic, body.resource)
        day, cell = locate_start(body.start, clinic.cell_minutes)
        return PlaceHold(hold_id, patient, body.resource, body.service, day, cell, ttl)

    def reply(state: RegionState, events: list[Event]) -> dict[str, Any] | None:
        placed = next(e for e in events if isinstance(e, HoldPlaced))
        hold = state.hold(placed.hold_id)
        return hold_view(hold, state.clinics[hold.clinic]) if hold is not None else None

    view = await regions_of(request).decide(region, make, reply)
    if isinstance(view, Refused):
        return refusal_response(request, view)
    if view is None:  # expired already (a tiny TTL); the hold was real but is gone
        raise ApiError(410, "HOLD_EXPIRED", "the hold ran out before it could be shown")
    return json_response({"hold": view}, status=201)


async def list_holds(request: Request) -> Response:
    """The patient's open holds: at most one per region, wait-list offers included (``offer``)."""
    patient = require_user(request)
    regions = regions_of(request)

    def read(state: RegionState) -> list[dict[str, Any]]:
        hold = state.hold_of(patient)
        return [hold_view(hold, state.clinics[hold.clinic])] if hold is not None else []

    found = await regions.query_available(read)
    views = sorted(found.items, key=lambda v: (v["expires_at"], v["id"]))
    return json_response(found.body("holds", views))


async def release_hold(request: Request) -> Response:
    patient = require_user(request)
    hold_id = path_id(request)
    region_or_404(hold_id)
    await submit_own(request, ReleaseHold(hold_id, patient), "no such hold")
    return no_content()


# -- bookings -------------------------------------------------------------------------------------


def idempotency_digest(key: str) -> str:
    """What the engine and the journal keep of a client's Idempotency-Key (never the key itself)."""
    return hashlib.sha256(b"tandtid/idempotency/v1:" + key.encode()).hexdigest()[:32]


async def _key_used_elsewhere(request: Request, patient: str, digest: str, region: str) -> bool:
    """True if the patient's key already names a booking in another region than ``region``."""

    def read(state: RegionState) -> list[str]:
        booking = state.idempotent_booking(patient, digest)
        return [state.region] if booking is not None else []

    def absent(state: RegionState) -> bool:  # keys are only ever added: see Regions.query_all
        return state.idempotent_booking(patient, digest) is None

    return any(r != region for r in await regions_of(request).query_all(read, absent=absent))


def _fingerprint(body: BookingBody) -> str:
    canonical = orjson.dumps(
        body.model_dump(mode="json", by_alias=True, exclude_none=True), option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


async def create_booking(request: Request) -> Response:
    patient = require_user(request)
    body = await parse_body(request, BookingBody)
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if len(key) > 200 or (key and not key.isprintable()):
        raise invalid(IDEMPOTENCY_HEADER, "an Idempotency-Key is at most 200 printable characters")
    region = region_or_404(body.hold if body.hold is not None else str(body.clinic))
    if not key:
        return await _book(request, body, patient, region, "")
    digest = idempotency_digest(key)
    in_flight: InFlight = request.app.state.in_flight  # a concurrent twin (on any node) is 409
    claim = await in_flight.claim(patient, digest)
    if claim is None:
        raise ApiError(
            409,
            "IDEMPOTENCY_MISMATCH",
            "a request with this Idempotency-Key is in progress",
            headers={"Retry-After": "1"},
        )
    try:
        if await _key_used_elsewhere(request, patient, digest, region):
            raise ApiError(
                409, "IDEMPOTENCY_MISMATCH", "this Idempotency-Key was used with a different request"
            )
        return await _book(request, body, patient, region, digest)
    finally:
        await in_flight.release(patient, digest, claim)


async def _book(request: Request, body: BookingBody, patient: str, region: str, key: str) -> Response:
    """Book for ``patient`` in ``region``; ``key`` is the Idempotency-Key's digest (or empty).
    One trip through the region's actor: the command is built from its catalogue and the
    reply read from its state right after the booking (``RegionActor.decide``)."""
    regions = regions_of(request)
    fingerprint = _fingerprint(body) if key else ""
    booking_id = ids.booking_id(region)
    hold_id = body.hold or ""
    direct = body.direct() if body.hold is None else None

    def make(state: RegionState) -> Command:
        if direct is None:
            return Book(booking_id, patient, hold_id=hold_id, idempotency_key=key, fingerprint=fingerprint)
        clinic_id, resource_id, service, start = direct
        clinic = _clinic_for_resource(state, clinic_id, resource_id)
        day, cell = locate_start(start, clinic.cell_minutes)
        return Book(
            booking_id,
            patient,
            resource=resource_id,
            service=service,
            day=day,
            cell=cell,
            idempotency_key=key,
            fingerprint=fingerprint,
        )

    def reply(state: RegionState, events: list[Event]) -> dict[str, Any] | None:
        booked = next((e for e in events if isinstance(e, Booked)), None)
        booking = (
            state.booking(booked.booking_id) if booked is not None else state.idempotent_booking(patient, key)
        )
        if booking is None:
            return None
        return booking_view(booking, state.clinics[booking.clinic])

    view = await regions.decide(region, make, reply)
    if isinstance(view, Refused):
        if key and view.code is RefusalCode.INVALID:
            earlier = await regions.query(region, lambda s: s.idempotent_booking(patient, key))
            if earlier is not None:
                raise ApiError(
                    409, "IDEMPOTENCY_MISMATCH", "this Idempotency-Key was used with a different request"
                )
        if body.hold is not None and view.code in (
            RefusalCode.NOT_FOUND,
            RefusalCode.NOT_YOURS,
            RefusalCode.HOLD_EXPIRED,
        ):
            # An expired hold is removed by the next tick, so "unknown" is what a late confirm
            # usually meets; another patient's hold is answered the same (nothing revealed).
            raise ApiError(
                410, "HOLD_EXPIRED", "the hold has expired (or is not yours); choose the time again"
            )
        return refusal_response(request, view)
    if view is None:
        raise not_found("no such booking")
    return json_response({"booking": view}, status=201, headers={"Location": f"/api/bookings/{view['id']}"})


async def list_bookings(request: Request) -> Response:
    patient = require_user(request)
    regions = regions_of(request)

    def read(state: RegionState) -> list[dict[str, Any]]:
        return [booking_view(b, state.clinics[b.clinic]) for b in state.bookings_of(patient)]

    # A patient's bookings can be in any region; the per-patient index makes each query cheap.
    # A region that cannot answer is named in missing_regions; the others' bookings are shown.
    def absent(state: RegionState) -> bool:  # a patient's bookings are only ever added
        return not state.may_have_bookings_of(patient)

    found = await regions.query_available(read, absent=absent)
    views = sorted(found.items, key=lambda v: (v["start"], v["id"]))
    return json_response(found.body("bookings", views))


async def get_booking(request: Request) -> Response:
    patient = require_user(request)
    booking_id = path_id(request)
    region = region_or_404(booking_id)

    def read(state: RegionState) -> dict[str, Any]:
        booking, clinic = _own_booking(state, booking_id, patient)
        return booking_view(booking, clinic)

    return json_response({"booking": await regions_of(request).query(region, read)})


async def booking_calendar(request: Request) -> Response:
    patient = require_user(request)
    booking_id = path_id(request)
    region = region_or_404(booking_id)
    now = now_s(request)

    def read(state: RegionState) -> str:
        booking, clinic = _own_booking(state, booking_id, patient)
        return booking_ics(booking, clinic, now_s=now)

    text = await regions_of(request).query(region, read)
    return Response(
        text,
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{booking_id}.ics"'},
    )


async def cancel_booking(request: Request) -> Response:
    patient = require_user(request)
    booking_id = path_id(request)
    region = region_or_404(booking_id)

    def make(state: RegionState) -> Command:
        _own_booking(state, booking_id, patient)  # somebody else's: 404, nothing applied
        return Cancel(booking_id, Party.PATIENT, patient)

    return await _change_booking(request, region, booking_id, patient, make)


async def reschedule_booking(request: Request) -> Response:
    patient = require_user(request)
    booking_id = path_id(request)
    region = region_or_404(booking_id)
    body = await parse_body(request, RescheduleBody)

    def make(state: RegionState) -> Command:
        booking, clinic = _own_booking(state, booking_id, patient)
        resource = state.resources.get(body.resource)
        if resource is None or resource.clinic != booking.clinic:
            raise invalid("resource", "no such resource at this clinic")
        day, cell = locate_start(body.start, clinic.cell_minutes)
        return Reschedule(booking_id, patient, body.resource, day, cell)

    return await _change_booking(request, region, booking_id, patient, make)


async def _change_booking(
    request: Request, region: str, booking_id: str, patient: str, make: Callable[[RegionState], Command]
) -> Response:
    """A patient's change to their booking in one trip through the region's actor (checked and
    built by ``make`` inside the turn); answered with the booking as it then is."""
    regions = regions_of(request)

    def reply(state: RegionState, _events: list[Event]) -> dict[str, Any]:
        booking, clinic = _own_booking(state, booking_id, patient)
        return booking_view(booking, clinic)

    view = await regions.decide(region, make, reply)
    if isinstance(view, Refused):
        if view.code is RefusalCode.TOO_LATE:
            _, clinic = await regions.query(region, lambda s: _own_booking(s, booking_id, patient))
            raise _too_late(clinic)
        return refusal_response(request, view)
    return json_response({"booking": view})


_BOOKING = {"type": "object", "required": ["booking"], "properties": {"booking": {"type": "object"}}}
_IDEM = ((IDEMPOTENCY_HEADER, "retry safely: the same key and body return the first booking"),)

ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/holds",
        place_hold,
        "Hold a time while the patient confirms",
        "patients",
        body=HoldBody,
        ok=201,
        errors=(404, 409),
        auth="user",
    ),
    Endpoint(
        "GET",
        "/api/holds",
        list_holds,
        "The signed-in patient's open holds (wait-list offers too)",
        "patients",
        auth="user",
    ),
    Endpoint(
        "DELETE",
        "/api/holds/{id}",
        release_hold,
        "Release a hold (declining an offer passes it on)",
        "patients",
        ok=204,
        auth="user",
    ),
    Endpoint(
        "POST",
        "/api/bookings",
        create_booking,
        "Book a time (directly or by confirming a hold)",
        "patients",
        body=BookingBody,
        ok=201,
        ok_schema=_BOOKING,
        errors=(404, 409, 410),
        auth="user",
        headers=_IDEM,
    ),
    Endpoint(
        "GET", "/api/bookings", list_bookings, "The signed-in patient's bookings", "patients", auth="user"
    ),
    Endpoint(
        "GET",
        "/api/bookings/{id}",
        get_booking,
        "One of the patient's bookings",
        "patients",
        ok_schema=_BOOKING,
        auth="user",
    ),
    Endpoint(
        "GET",
        "/api/bookings/{id}/ics",
        booking_calendar,
        "The booking as an iCalendar file",
        "patients",
        ok_media="text/calendar",
        ok_schema={"type": "string"},
        auth="user",
    ),
    Endpoint(
        "POST",
        "/api/bookings/{id}/cancel",
        cancel_booking,
        "Cancel one of the patient's bookings",
        "patients",
        ok_schema=_BOOKING,
        errors=(409,),
        auth="user",
    ),
    Endpoint(
        "POST",
        "/api/bookings/{id}/reschedule",
        reschedule_booking,
        "Move a booking to another time at the same clinic",
        "patients",
        body=RescheduleBody,
        ok_schema=_BOOKING,
        errors=(409,),
        auth="user",
    ),
]
