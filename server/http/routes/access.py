"""What every route does first: parse its input against its schema, find who is asking,
check CSRF, take a token from that principal's bucket, and reach the regions.

Everything here raises ``server.http.errors.ApiError`` (or ``server.identity.auth.AuthError``, mapped by
``server.http.app``); routes never build error responses themselves, except the answer to a refusal
that ``Regions.decide`` returned, rendered by ``server.http.errors.refusal_response``.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from engine.calendar import day_of, day_of_epoch, locate
from engine.commands import Command
from engine.errors import RefusalCode, Refused
from engine.events import Event
from engine.model import region_of
from engine.state import RegionState
from server.http.errors import ApiError, invalid, not_found, validation_error
from server.http.views import booking_view
from server.identity.accounts import CLINIC_ROLES, Role
from server.identity.auth import AuthError, Principal, csrf_ok, principal_from
from server.identity.ratelimit import RateLimiter
from server.regions.routing import Regions

M = TypeVar("M", bound=BaseModel)


def regions_of(request: Request) -> Regions:
    regions: Regions = request.app.state.regions
    return regions


async def submit_own(request: Request, command: Command, missing: str) -> list[Event]:
    """Submit a command on something the caller must own. Somebody else's (NOT_YOURS) is
    answered exactly like an unknown id, 404 ``missing``, so its existence is never revealed."""
    try:
        return await regions_of(request).submit(command)
    except Refused as exc:
        if exc.code in (RefusalCode.NOT_FOUND, RefusalCode.NOT_YOURS):
            raise not_found(missing) from None
        raise


async def booking_as_now(regions: Regions, region: str, booking_id: str) -> dict[str, Any]:
    """The booking's view after a command on it was accepted (the command found it, and bookings
    are never removed, so it is there)."""

    def read(state: RegionState) -> dict[str, Any]:
        booking = state.booking(booking_id)
        assert booking is not None
        return booking_view(booking, state.clinics[booking.clinic])

    return await regions.query(region, read)


def now_s(request: Request) -> int:
    """The server's clock (the regions' clock, so tests can move time for both)."""
    clock = getattr(request.app.state, "clock", time.time)
    return int(clock())


def today(request: Request) -> int:
    return day_of_epoch(now_s(request))


def region_or_404(entity_id: str) -> str:
    """The region an id carries; an id that carries none names nothing (404)."""
    try:
        return region_of(entity_id)
    except ValueError:
        raise not_found() from None


async def clinic_in_path(request: Request) -> str:
    """The clinic the path's ``{id}`` names; 404 unless it is registered."""
    clinic = path_id(request)
    known = await regions_of(request).query(region_or_404(clinic), lambda state: clinic in state.clinics)
    if not known:
        raise not_found("no such clinic")
    return clinic


def path_id(request: Request, name: str = "id") -> str:
    value = str(request.path_params[name])
    if not 0 < len(value) <= 80 or not all(c.isalnum() or c in "-_" for c in value):
        raise not_found()
    return value


# -- input ----------------------------------------------------------------------------------------


async def parse_body(request: Request, model: type[M], *, required: bool = True) -> M:
    """The body validated by ``model``; ``required=False``: an empty body is the model's defaults."""
    raw = await request.body()
    if not raw.strip():
        if not required:
            return model()
        raise invalid("body", "a JSON object body is required")
    try:
        return model.model_validate_json(raw, strict=True)  # no coercion: "5" is not 5
    except ValidationError as exc:
        error = exc
    # Refused: say why in plain words where the body is not even a JSON object.
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("body", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise invalid("body", "the body must be a JSON object")
    raise validation_error(error) from None


def parse_query(request: Request, model: type[M]) -> M:
    data: dict[str, Any] = {}
    for key in request.query_params:
        data[key] = request.query_params[key]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def first_day(
    request: Request, value: date | None, *, field: str = "from", days: int = 1, allow_past: bool = False
) -> int:
    """The ordinal day of a ``from`` date (today if absent); a past day is refused unless allowed,
    and so is a range of ``days`` that reaches past the horizon (see :func:`within_horizon`)."""
    if value is None:
        day = today(request)
    else:
        day = day_of(value)
        if not allow_past and day < today(request):
            raise invalid(field, "that date has passed")
    within_horizon(request, day, days, field=field)
    return day


def within_horizon(request: Request, day: int, days: int = 1, *, field: str = "from") -> None:
    """Refuse (422) a range of ``days`` from ``day`` that ends past today + the configured horizon."""
    horizon = int(request.app.state.settings.horizon_days)
    last = today(request) + horizon
    if day > last:
        raise invalid(field, f"dates may lie at most {horizon} days ahead")
    if day + days - 1 > last:
        raise invalid("days", f"dates may lie at most {horizon} days ahead")


def locate_start(start: datetime, cell_minutes: int, field: str = "start") -> tuple[int, int]:
    try:
        return locate(start, cell_minutes)
    except ValueError as exc:
        raise invalid(
            field, f"not a start time of this clinic ({exc}); times are on {cell_minutes}-minute boundaries"
        ) from None


# -- who ------------------------------------------------------------------------------------------


def _throttle(request: Request, key: str) -> None:
    limiter: RateLimiter = request.app.state.principal_limiter
    wait = limiter.take(key)
    if wait > 0:
        raise ApiError(
            429,
            "RATE_LIMITED",
            "too many requests; slow down",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )


def _check_csrf(request: Request, principal: Principal) -> None:
    if not csrf_ok(request, principal):
        raise AuthError("CSRF", f"cookie-authenticated writes need the {'X-CSRF-Token'} header")


def optional_principal(request: Request) -> Principal | None:
    principal = principal_from(request)
    if principal is None and (request.headers.get("authorization") is not None):
        raise AuthError("UNAUTHENTICATED", "the token or key is not valid")
    return principal


def require_user(request: Request) -> str:
    """The user id of a signed-in person (patient, staff or admin) acting for themselves;
    clinic keys are refused."""
    principal = principal_from(request)
    if principal is None or principal.user_id is None:
        if principal is not None:
            raise AuthError("FORBIDDEN", "a clinic key cannot act as a patient")
        raise AuthError("UNAUTHENTICATED", "sign in first")
    _check_csrf(request, principal)
    _throttle(request, "u:" + principal.user_id)
    return principal.user_id


def require_clinic(request: Request) -> tuple[Principal, str]:
    """A clinic key or a session of the clinic's staff or clinic admin; returns the one clinic it may reach."""
    principal = principal_from(request)
    if principal is None:
        raise AuthError("UNAUTHENTICATED", "send a clinic API key or sign in as staff")
    if (principal.role != "clinic" and principal.role not in CLINIC_ROLES) or not principal.clinic:
        raise AuthError("FORBIDDEN", "this is the clinic API; it needs a clinic key or a staff account")
    _check_csrf(request, principal)
    _throttle(request, "k:" + principal.clinic)
    return principal, principal.clinic


def require_clinic_admin(request: Request, *, key: bool = True) -> tuple[Principal, str]:
    """The clinic's admin (or, when ``key``, the clinic's API key): setting the clinic up is
    theirs, running the day is everyone's. Staff are answered 403 saying whom to ask."""
    principal, clinic = require_clinic(request)
    if principal.role == Role.CLINIC_ADMIN or (key and principal.role == "clinic"):
        return principal, clinic
    if principal.role == "clinic":
        raise AuthError("FORBIDDEN", "a clinic key cannot do this: sign in as the clinic's admin")
    raise AuthError(
        "FORBIDDEN",
        "only the clinic's admin can change this (staff run the day): ask your clinic admin",
    )


def require_admin(request: Request) -> str:
    """The user id of a signed-in administrator."""
    principal = principal_from(request)
    if principal is None:
        raise AuthError("UNAUTHENTICATED", "sign in first")
    if principal.role != Role.ADMIN or principal.user_id is None:
        raise AuthError("FORBIDDEN", "administrators only")
    _check_csrf(request, principal)
    _throttle(request, "u:" + principal.user_id)
    return principal.user_id
