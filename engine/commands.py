"""Commands: typed requests to change a region's slot table.

The adapters (HTTP routes, the CLI, the seed) validate outside input and build these;
the engine trusts them (rule 6). Ids that must be unguessable (bookings, holds) are
chosen by the adapter and carried in the command, so ``apply`` stays deterministic.
Time never lives in a command: ``apply(command, now)`` receives it.

Days are ``date.toordinal()`` ints; ``cell`` is the first cell index of the day
(clinic-local wall clock, see ``engine.calendar``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from engine.model import Clinic, ClinicKind, OpeningHours, Resource


class Party(StrEnum):
    """Who asked for a cancellation; decides whether freed cells go FREE or BUFFER."""

    PATIENT = "patient"
    CLINIC = "clinic"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class RegisterClinic:
    """Add (or replace the details of) a clinic and its resources. Replacing keeps rows."""

    clinic: Clinic
    resources: tuple[Resource, ...]


@dataclass(frozen=True, slots=True)
class OpenDays:
    """Turn CLOSED cells inside the clinic's opening hours FREE for ``days`` days from
    ``first_day``. Cells already in another state are left as they are (idempotent)."""

    resource: str
    first_day: int
    days: int
    horizon_days: int | None = None  # when set: refuse days past today + horizon_days


@dataclass(frozen=True, slots=True)
class PlaceHold:
    """Hold the cells a service needs from (day, cell) for ``ttl_s`` seconds.
    A patient has at most one open hold in the region (offers included): placing a new one
    releases the old in the same step, wherever it was (a released offer passes on)."""

    hold_id: str
    patient: str
    resource: str
    service: str
    day: int
    cell: int
    ttl_s: int = 300


@dataclass(frozen=True, slots=True)
class ReleaseHold:
    hold_id: str
    patient: str


@dataclass(frozen=True, slots=True)
class Book:
    """Book directly (cells must be FREE) or, with ``hold_id``, confirm the patient's hold
    (then resource/service/day/cell may be left empty and are taken from the hold).
    ``idempotency_key``: a retry with the same key and the same ``fingerprint`` returns the
    first booking and changes nothing; the same key with another fingerprint is INVALID."""

    booking_id: str
    patient: str
    resource: str = ""
    service: str = ""
    day: int = 0
    cell: int = 0
    hold_id: str = ""
    idempotency_key: str = ""
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel a booking. ``by`` PATIENT: ``requester`` must be the patient, cells go FREE.
    CLINIC: ``requester`` is the clinic id and must own it; ADMIN: any booking. Those two
    put the cells in BUFFER until now + the clinic's ``buffer_minutes``. ``reason``: the
    clinic's or admin's words to the patient (validated and bounded at the edge); a patient's
    own cancellation carries none (INVALID)."""

    booking_id: str
    by: Party
    requester: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reschedule:
    """Move a patient's booking to (resource, day, cell) at the same clinic, atomically:
    the new cells are taken and the old freed in one step, or nothing changes."""

    booking_id: str
    patient: str
    resource: str
    day: int
    cell: int


@dataclass(frozen=True, slots=True)
class Block:
    """The clinic takes FREE/BUFFER cells out (lunch, leave). Booked or held cells: SLOT_TAKEN."""

    resource: str
    day: int
    cell: int
    cells: int


@dataclass(frozen=True, slots=True)
class Unblock:
    """BLOCKED cells go back to FREE (inside opening hours) or CLOSED (outside)."""

    resource: str
    day: int
    cell: int
    cells: int


@dataclass(frozen=True, slots=True)
class JoinWaitlist:
    """Wait for a time at ``clinic`` (or, with ``clinic`` empty, at any clinic of
    ``municipality`` in the region) for ``service`` on days ``first_day .. first_day+days-1``,
    starting at or after ``from_minute`` and ending by ``to_minute`` (local minutes since
    midnight). ``entry_id`` is chosen by the adapter and carries the region (``"AB-w…"``).
    Entries are served in join order; see ``engine.waitlist`` for how offers are made."""

    entry_id: str
    patient: str
    clinic: str
    municipality: str
    service: str
    first_day: int
    days: int
    from_minute: int
    to_minute: int


@dataclass(frozen=True, slots=True)
class LeaveWaitlist:
    """Leave the wait-list; an open offer of the entry is released (and passes on)."""

    entry_id: str
    patient: str


@dataclass(frozen=True, slots=True)
class MarkNoShow:
    """Staff mark that the patient did not come. Only for a booked booking of ``clinic``
    whose start has passed; the cells stay BOOKED (the time is gone)."""

    booking_id: str
    clinic: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Expire holds and offers whose time has passed and release BUFFER cells whose window ended."""


@dataclass(frozen=True, slots=True)
class SuspendClinic:
    """The platform suspends a clinic (no new bookings or holds; existing bookings stay) or lifts it."""

    clinic: str
    suspended: bool


@dataclass(frozen=True, slots=True)
class EditClinic:
    """Change a clinic's details and rules; ``None`` keeps a field as it is. ``cell_minutes``
    may change only while no day is opened."""

    clinic: str
    name: str | None = None
    address: str | None = None
    lat: float | None = None
    lon: float | None = None
    phone: str | None = None
    kind: ClinicKind | None = None
    services: tuple[str, ...] | None = None
    cell_minutes: int | None = None
    cancel_notice_hours: int | None = None
    offer_minutes: int | None = None
    max_bookings_per_patient: int | None = None
    open_ahead_days: int | None = None


@dataclass(frozen=True, slots=True)
class PutResource:
    """Add a resource to its clinic, or change its kind, name and services. Its own hours are
    ``SetHours``/``SetDayHours``' business: the resource given carries none (INVALID otherwise),
    and an edit keeps those it has."""

    resource: Resource


@dataclass(frozen=True, slots=True)
class RetireResource:
    """The resource takes no more bookings; its cells from today on close. Its future
    bookings refuse this (HAS_BOOKINGS) unless listed in ``cancel``."""

    resource: str
    cancel: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetHours:
    """New weekly opening hours (ISO weekday -> intervals) of the clinic, for its resources
    without hours of their own; or, with ``resource`` (one of the clinic's), that resource's own
    weekly hours (``None``: it follows the clinic's week again; the clinic's own may not be None)."""

    clinic: str
    hours: OpeningHours | None
    cancel: tuple[str, ...] = ()
    resource: str = ""


@dataclass(frozen=True, slots=True)
class SetDayHours:
    """One day's own hours (``()``: closed, e.g. a holiday), or ``None``: back to the week's.
    With ``resource``: that resource's own day (its leave, its late evening), ``None``: the
    resource follows the clinic's day again."""

    clinic: str
    day: int
    hours: tuple[tuple[int, int], ...] | None
    cancel: tuple[str, ...] = ()
    resource: str = ""


@dataclass(frozen=True, slots=True)
class OpenAhead:
    """Open, for every clinic of ``region`` with ``open_ahead_days`` (or just ``clinic``), the
    days from today to today + min(open_ahead_days, horizon_days) not opened yet."""

    region: str
    horizon_days: int
    clinic: str = ""


Command = (
    RegisterClinic
    | OpenDays
    | PlaceHold
    | ReleaseHold
    | Book
    | Cancel
    | Reschedule
    | Block
    | Unblock
    | JoinWaitlist
    | LeaveWaitlist
    | MarkNoShow
    | Tick
    | EditClinic
    | PutResource
    | RetireResource
    | SetHours
    | SetDayHours
    | OpenAhead
    | SuspendClinic
)
