"""The declared shape of every request body and query string the HTTP API accepts (rule 6).

Pydantic v2 models; routes validate with ``server.http.routes.access.parse_body`` / ``parse_query``,
which turn a ``ValidationError`` into ``422 INVALID`` naming the field. The same models feed
the OpenAPI document (``server.http.openapi``), so what is documented is what is enforced.

Times are ISO 8601 *with offset*; whether one lies on a cell boundary of the clinic is
checked by the route (it needs the clinic's ``cell_minutes``).

Nothing is coerced: bodies are validated in pydantic's strict JSON mode (``"5"`` or ``true``
is not a number of days, a number is not a time), and dates — in bodies and query strings —
are ``YYYY-MM-DD`` and nothing else (never a Unix time such as ``date=0``). Free text that a
person types (names) refuses control and format characters (NUL, ESC, CR/LF, U+202E ...).
How far ahead a date may lie (the horizon) is the routes' check: it needs today.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from engine.model import SERVICES

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,80}$")]
RegionCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{1,2}$")]
MunicipalityCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")]
ServiceId = Literal["checkup", "cleaning", "emergency", "filling", "child_checkup"]
if set(get_args(ServiceId)) != {s.id for s in SERVICES}:  # the catalogue is the truth; keep them in step
    raise ImportError("server.http.schemas.ServiceId is out of step with engine.model.SERVICES")
_MAILCHAR = r"[^@\s\x00-\x1f\x7f-\x9f]"
_MAILDOT = r"[^@\s.\x00-\x1f\x7f-\x9f]"
# The same rule as the account store's: local@domain, a dot inside the domain, not at its ends.
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=3,
        max_length=254,
        pattern=rf"^{_MAILCHAR}+@{_MAILDOT}{_MAILCHAR}*\.{_MAILCHAR}*{_MAILDOT}$",
    ),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]


def _iso_date(value: object) -> object:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        return dt.date.fromisoformat(value)  # raises ValueError for 2026-13-45
    raise ValueError("a date is YYYY-MM-DD")


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Control and invisible format characters: C0, DEL, C1, soft hyphen, zero-width and bidi marks
# (U+200B-U+200F, U+202A-U+202E, U+2066-U+2069), line/paragraph separators, word joiners, BOM.
_CONTROLS = r"\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
# At least one visible character, no control or format characters (in the document too).
_VISIBLE_LINE = rf"^[^{_CONTROLS}]*[^\s{_CONTROLS}][^{_CONTROLS}]*$"
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=200,
        pattern=_VISIBLE_LINE,
    ),
]
Date = Annotated[dt.date, BeforeValidator(_iso_date)]
# What a clinic or support tells the patient about a cancellation: the same rule as a name, one line
# of at most 300 characters (it is shown on the patient's bookings and in their e-mail, never logged).
CANCEL_REASON_MAX = 300
Reason = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=CANCEL_REASON_MAX,
        pattern=_VISIBLE_LINE,
    ),
]


def _integral(value: object) -> object:
    # JSON has numbers, not integers: 5.0 is the number 5 (and JSON Schema's "integer" agrees).
    # Booleans and strings are not numbers; strict validation refuses them after this.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(_integral)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Query(BaseModel):
    # Unknown query parameters are ignored (cache busters); known ones are strict.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# -- accounts -----------------------------------------------------------------------------------


class RegisterBody(Body):
    email: Email
    password: Password
    name: Name


class LoginBody(Body):
    # Not stripped here: any string the document allows is looked up (the store normalises it), so a blank
    # or odd address is a failed sign-in (401), never a 422 for input the OpenAPI document calls valid.
    email: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class PasswordBody(Body):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    new_password: Password


ClinicRole = Literal["staff", "clinic_admin"]


class ClinicAccountBody(Body):
    """A staff or clinic admin account; without ``password`` the server makes one (shown once)."""

    email: Email
    name: Name
    role: ClinicRole = "staff"
    password: Password | None = None


class ClinicRoleBody(Body):
    role: ClinicRole


class SuspendBody(Body):
    suspended: bool


# -- patients -----------------------------------------------------------------------------------


class HoldBody(Body):
    clinic: Id
    resource: Id
    service: ServiceId
    start: AwareDatetime


class BookingBody(Body):
    """Either ``{"hold": id}`` (confirm a hold) or the four fields of a direct booking."""

    hold: Id | None = None
    clinic: Id | None = None
    resource: Id | None = None
    service: ServiceId | None = None
    start: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_form(self) -> BookingBody:
        direct = (self.clinic, self.resource, self.service, self.start)
        if self.hold is not None:
            if any(v is not None for v in direct):
                raise ValueError("send either hold or clinic/resource/service/start, not both")
        elif any(v is None for v in direct):
            raise ValueError("send hold, or all of clinic, resource, service and start")
        return self

    def direct(self) -> tuple[str, str, str, dt.datetime]:
        """Clinic, resource, service and start of a direct booking (``hold`` is None)."""
        if self.clinic is None or self.resource is None or self.service is None or self.start is None:
            raise ValueError("a booking by hold has no direct fields")
        return self.clinic, self.resource, self.service, self.start


class CancelBody(Body):
    """A clinic's or support's cancellation; the body may be left out (no reason)."""

    reason: Reason | None = None


class RescheduleBody(Body):
    resource: Id
    start: AwareDatetime


ClockTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]


class WaitlistBody(Body):
    """Wait for a time at one clinic or in one municipality (exactly one of the two)."""

    clinic: Id | None = None
    municipality: MunicipalityCode | None = None
    service: ServiceId
    from_: Date = Field(alias="from")
    days: Count = Field(default=14, ge=1, le=90)
    from_time: ClockTime = "00:00"
    to_time: ClockTime = "24:00"

    @model_validator(mode="after")
    def _one_target(self) -> WaitlistBody:
        if (self.clinic is None) == (self.municipality is None):
            raise ValueError("send clinic or municipality (exactly one)")
        if minute_of(self.from_time) >= minute_of(self.to_time):
            raise ValueError("from_time must be before to_time")
        return self


def minute_of(clock: str) -> int:
    """``"HH:MM"`` -> minutes since midnight."""
    hh, mm = clock.split(":")
    return int(hh) * 60 + int(mm)


# -- clinics ------------------------------------------------------------------------------------


class OpenBody(Body):
    resource: Id
    from_: Date = Field(alias="from")
    days: Count = Field(ge=1, le=90)


class BlockBody(Body):
    resource: Id
    start: AwareDatetime
    minutes: Count = Field(ge=1, le=24 * 60)


# -- clinic setup -------------------------------------------------------------------------------

Phone = Annotated[str, StringConstraints(strip_whitespace=True, max_length=40, pattern=r"^[0-9+()\- ]*$")]
Weekday = Literal["1", "2", "3", "4", "5", "6", "7"]


class Interval(Body):
    """Open from ``from`` to ``to`` (local wall clock, ``HH:MM``). That the intervals of a day
    are ordered and apart is the engine's check (422 INVALID)."""

    from_: ClockTime = Field(alias="from")
    to: ClockTime


Intervals = Annotated[list[Interval], Field(max_length=6)]
CancelList = Annotated[list[Id], Field(max_length=500)]


Lat = Annotated[float, Field(ge=55.0, le=69.5)]  # Sweden
Lon = Annotated[float, Field(ge=10.5, le=24.5)]
Services = Annotated[list[ServiceId], Field(min_length=1, max_length=5)]


class ClinicDetailsBody(Body):
    """Change what is sent; leave the rest out."""

    name: Name | None = None
    address: Name | None = None
    lat: Lat | None = None
    lon: Lon | None = None
    phone: Phone | None = None
    kind: Literal["public", "private"] | None = None
    services: Services | None = None
    cancel_notice_hours: Annotated[int, Field(ge=0, le=24 * 14), BeforeValidator(_integral)] | None = None
    offer_minutes: Annotated[int, Field(ge=1, le=24 * 60), BeforeValidator(_integral)] | None = None
    max_bookings_per_patient: Annotated[int, Field(ge=1, le=50), BeforeValidator(_integral)] | None = None
    open_ahead_days: Annotated[int, Field(ge=0, le=400), BeforeValidator(_integral)] | None = None


class RegisterClinicBody(Body):
    name: Name
    region: RegionCode
    municipality: MunicipalityCode
    municipality_name: Name
    address: Name
    lat: Lat
    lon: Lon
    phone: Phone = ""
    kind: Literal["public", "private"]
    services: Services
    cell_minutes: Literal[5, 10, 15, 20, 30] = 15
    open_ahead_days: Count = Field(default=28, ge=0, le=400)


class ResourceBody(Body):
    kind: Literal["dentist", "hygienist", "chair"]
    name: Name
    services: Annotated[list[ServiceId], Field(max_length=5)]


class RetireBody(Body):
    cancel: CancelList = []


class HoursBody(Body):
    """Weekly hours: ISO weekday ``"1"`` (Monday) .. ``"7"`` -> intervals; a missing day is closed."""

    week: dict[Weekday, Intervals]
    cancel: CancelList = []


class DayHoursBody(Body):
    """One day's own hours (``[]``: closed), or ``null``: the day follows the week again (for a
    resource: the clinic's day again)."""

    date: Date
    hours: Intervals | None
    cancel: CancelList = []


class ResourceHoursBody(Body):
    """A resource's own weekly hours (as ``HoursBody``'s ``week``), or ``null``: the same as the
    clinic's. ``week`` must be sent (``null`` explicitly)."""

    week: dict[Weekday, Intervals] | None
    cancel: CancelList = []


# -- queries ------------------------------------------------------------------------------------


class MunicipalitiesQuery(Query):
    region: RegionCode | None = None


class ClinicSearchQuery(Query):
    region: RegionCode | None = None
    municipality: MunicipalityCode | None = None
    service: ServiceId | None = None
    from_: Date | None = Field(default=None, alias="from")
    days: int = Field(default=14, ge=1, le=90)
    near: Annotated[str, StringConstraints(pattern=r"^-?\d{1,2}(\.\d+)?,-?\d{1,3}(\.\d+)?$")] | None = None
    has_free: bool = False
    sort: Literal["earliest", "distance", "name"] | None = None
    limit: int = Field(default=50, ge=1, le=5000)


class AvailabilityQuery(Query):
    service: ServiceId = "checkup"
    from_: Date | None = Field(default=None, alias="from")
    days: int = Field(default=7, ge=1, le=31)


class SummaryQuery(Query):
    service: ServiceId = "checkup"  # what ``starts`` count
    from_: Date | None = Field(default=None, alias="from")
    days: int = Field(default=14, ge=1, le=31)


class DayQuery(Query):
    date: Date | None = None


class AdminBookingsQuery(Query):
    clinic: Id
    from_: Date | None = Field(default=None, alias="from")
    days: int = Field(default=31, ge=1, le=90)
