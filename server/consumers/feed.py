"""The journal as facts somebody may be told about, and the one projection they are read from.

A ``Fact`` is one notifiable thing that happened: a booking was made, cancelled (by whom),
moved, or a wait-list offer was made. Its ``key`` — ``f"{region}:{position}:{index}:{kind}"`` —
is derived from the journal entry alone, so a consumer that crashes and resumes derives the
same key again and can tell it has already acted on it.

The ``Projection`` holds, per region (a ``RegionView``), the clinics and bookings the facts
need — ONE copy per process, shared by every consumer (``server.consumers.follow.Feed`` keeps
it). A region's view starts from the region snapshot the actors write (``RegionView.base`` is
its position) and evolves by the journal entries after it. Entries at or before ``base`` may
be applied again (a consumer whose cursor is behind the snapshot acts on them): every field is
overwritten by the latest fact, so the view ends where the snapshot was; the one thing such a
re-applied entry cannot know is the time a booking had before a ``Rescheduled`` when nothing
re-applied set it (``Fact.previous`` is then None and the feed counts it).

An event about a clinic or booking the view does not have raises ``Unplaced``: the consumer
stops and reports it (never a cursor moved past a fact it could not place).

Adding a kind (e.g. a wait-list ``Offered`` event): write one ``_on_offered`` method that
returns ``Fact(kind="offer", ...)`` and add it to ``Projection._handlers``; then add the
kind to ``server.consumers.notify.messages.TEMPLATES`` (e-mail) and, if clinics should see it,
``server.consumers.webhooks.dispatcher.WEBHOOK_TYPES``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.calendar import cell_epoch
from engine.errors import TandtidError
from engine.events import Booked, Cancelled, ClinicRegistered, OfferMade, Rescheduled, from_record
from engine.model import Clinic, clinic_from_record
from engine.records import Booking, BookingStatus
from engine.state import RegionState
from persistence.codec import unpack_events

log = logging.getLogger("tandtid.consumers.feed")

LOAD_CHUNK = 20_000  # bookings built between two yields to the event loop when loading a snapshot


class Unplaced(TandtidError):
    """A journal event names a clinic or booking the projection does not have. The message
    names the event kind and position only (no ids of people)."""


@dataclass(frozen=True, slots=True)
class Fact:
    """One notifiable thing that happened, as of the journal entry that recorded it."""

    region: str
    position: int
    index: int  # the event's index inside its journal entry
    kind: str  # "booked" | "cancelled" | "rescheduled" | "offer" | "reminder"
    booking: Booking  # the booking AFTER the event (a copy; never mutated); for an offer,
    # the offered time as a Booking with the hold id (status BOOKED, what it becomes if confirmed)
    clinic: Clinic
    at: int  # epoch seconds of the decision
    by: str = ""  # who cancelled: a Party value ("patient", "clinic", "admin")
    previous: Booking | None = None  # the booking BEFORE the event (reschedules; None if unknown)

    @property
    def key(self) -> str:
        return f"{self.region}:{self.position}:{self.index}:{self.kind}"

    @property
    def event_id(self) -> str:
        """The id clinics see for the event behind this fact (no kind: one event, one id)."""
        return f"{self.region}-{self.position}-{self.index}"

    @property
    def start(self) -> int:
        return cell_epoch(self.booking.day, self.booking.cell, self.clinic.cell_minutes)

    @property
    def previous_start(self) -> int:
        """Start of the booking before a reschedule. ValueError when there is no previous time."""
        if self.previous is None:
            raise ValueError(f"fact {self.key} has no previous time")
        return cell_epoch(self.previous.day, self.previous.cell, self.clinic.cell_minutes)

    @property
    def end(self) -> int:
        return self.start + self.booking.cells * self.clinic.cell_minutes * 60


@dataclass(slots=True)
class RegionView:
    """One region's clinics and bookings as of the entries applied to it."""

    region: str
    base: int = 0  # the position of the snapshot the view started from (0: none)
    clinics: dict[str, Clinic] = field(default_factory=dict)
    bookings: dict[str, Booking] = field(default_factory=dict)
    moved_at: dict[str, int] = field(default_factory=dict)  # booking -> when it was last moved
    timed: set[str] = field(default_factory=set)  # re-applied entries set these bookings' times
    incomplete: int = 0  # reschedules re-applied whose previous time was unknown

    def time_set_at(self, booking: Booking) -> int:
        """When the booking's current time was decided (booked, or last moved)."""
        return self.moved_at.get(booking.id, booking.booked_at)


def _interned(booking: Booking) -> Booking:
    # Thousands of bookings share a clinic, resource, service and patient: one string each.
    booking.patient = sys.intern(booking.patient)
    booking.clinic = sys.intern(booking.clinic)
    booking.resource = sys.intern(booking.resource)
    booking.service = sys.intern(booking.service)
    return booking


async def view_of_snapshot(region: str, position: int, data: dict[str, Any]) -> RegionView:
    """The view of a region snapshot (``engine`` snapshot data, already unpacked, any version
    the engine reads) at ``position``; yields to the event loop every ``LOAD_CHUNK`` bookings."""
    state = RegionState.from_snapshot(data)
    view = RegionView(region, base=position)
    view.clinics.update(state.clinics)
    bookings = view.bookings
    for i, booking in enumerate(state.all_bookings()):
        booking = _interned(booking)
        bookings[booking.id] = booking
        if i % LOAD_CHUNK == LOAD_CHUNK - 1:
            await asyncio.sleep(0)
    return view


class Projection:
    """The views of the regions a process follows; ``apply`` evolves one by one event."""

    def __init__(self) -> None:
        self.views: dict[str, RegionView] = {}
        self._handlers: dict[type, Callable[[RegionView, int, int, Any], Fact | None]] = {
            ClinicRegistered: self._on_clinic,
            Booked: self._on_booked,
            Cancelled: self._on_cancelled,
            Rescheduled: self._on_rescheduled,
            OfferMade: self._on_offered,
        }

    def view(self, region: str) -> RegionView:
        view = self.views.get(region)
        if view is None:
            view = self.views[region] = RegionView(region)
        return view

    def booking(self, region: str, booking_id: str) -> tuple[Booking, Clinic] | None:
        view = self.views.get(region)
        if view is None:
            return None
        booking = view.bookings.get(booking_id)
        if booking is None:
            return None
        clinic = view.clinics.get(booking.clinic)
        return (booking, clinic) if clinic is not None else None

    def apply(self, region: str, position: int, index: int, event: object) -> Fact | None:
        """Evolve by one event; the fact it is, if it is one somebody may be told about.
        Raises ``Unplaced`` for an event about a clinic or booking the view lacks."""
        handler = self._handlers.get(type(event))
        return handler(self.view(region), position, index, event) if handler is not None else None

    def facts(self, region: str, position: int, payload: bytes) -> list[Fact]:
        """Apply one journal entry; the facts it holds, in order."""
        facts: list[Fact] = []
        for index, record in enumerate(unpack_events(payload)):
            try:
                event = from_record(record)
            except ValueError:
                # An event kind this build does not know (written by a newer node): not ours to judge.
                log.warning("region %s position %d: skipping an unknown event record", region, position)
                continue
            fact = self.apply(region, position, index, event)
            if fact is not None:
                facts.append(fact)
        return facts

    # -- handlers ------------------------------------------------------------------------------

    @staticmethod
    def _clinic(view: RegionView, clinic_id: str, position: int, kind: str) -> Clinic:
        clinic = view.clinics.get(clinic_id)
        if clinic is None:
            raise Unplaced(f"region {view.region} position {position}: {kind} of a clinic not in the view")
        return clinic

    @staticmethod
    def _booking(view: RegionView, booking_id: str, position: int, kind: str) -> Booking:
        booking = view.bookings.get(booking_id)
        if booking is None:
            raise Unplaced(f"region {view.region} position {position}: {kind} of a booking not in the view")
        return booking

    def _on_clinic(self, view: RegionView, position: int, index: int, event: ClinicRegistered) -> None:
        clinic = clinic_from_record(event.clinic)
        view.clinics[clinic.id] = clinic

    def _on_booked(self, view: RegionView, position: int, index: int, event: Booked) -> Fact:
        clinic = self._clinic(view, event.clinic, position, "Booked")
        booking = _interned(
            Booking(
                event.booking_id,
                event.patient,
                event.clinic,
                event.resource,
                event.service,
                event.day,
                event.cell,
                event.cells,
                BookingStatus.BOOKED,
                event.at,
            )
        )
        view.bookings[booking.id] = booking
        view.moved_at.pop(booking.id, None)
        if position <= view.base:
            view.timed.add(booking.id)
        return Fact(view.region, position, index, "booked", replace(booking), clinic, event.at)

    def _on_cancelled(self, view: RegionView, position: int, index: int, event: Cancelled) -> Fact:
        booking = self._booking(view, event.booking_id, position, "Cancelled")
        clinic = self._clinic(view, booking.clinic, position, "Cancelled")
        booking.status, booking.cancelled_at, booking.cancelled_by = (
            BookingStatus.CANCELLED,
            event.at,
            event.by,
        )
        return Fact(
            view.region, position, index, "cancelled", replace(booking), clinic, event.at, by=event.by
        )

    def _on_rescheduled(self, view: RegionView, position: int, index: int, event: Rescheduled) -> Fact:
        booking = self._booking(view, event.booking_id, position, "Rescheduled")
        clinic = self._clinic(view, booking.clinic, position, "Rescheduled")
        previous: Booking | None = replace(booking)
        if position <= view.base:
            # Re-applied over a later snapshot: the booking's time is known only if an entry
            # re-applied before this one set it.
            if booking.id not in view.timed:
                previous = None
                view.incomplete += 1
            view.timed.add(booking.id)
        booking.resource, booking.day, booking.cell = sys.intern(event.resource), event.day, event.cell
        view.moved_at[booking.id] = event.at
        return Fact(
            view.region, position, index, "rescheduled", replace(booking), clinic, event.at, previous=previous
        )

    def _on_offered(self, view: RegionView, position: int, index: int, event: OfferMade) -> Fact:
        clinic = self._clinic(view, event.clinic, position, "OfferMade")
        at = event.expires_at - clinic.offer_minutes * 60
        offered = Booking(
            event.hold_id,
            event.patient,
            event.clinic,
            event.resource,
            event.service,
            event.day,
            event.cell,
            event.cells,
            BookingStatus.BOOKED,
            at,
        )
        return Fact(view.region, position, index, "offer", offered, clinic, at)


class PendingCursors:
    """Cursors of journal entries that needed no durable action (nothing to send or deliver).

    Advancing the durable cursor for each of those would be one SQLite write per entry;
    instead the newest position per region is kept here and written every ``every_s``
    seconds. A crash loses at most that much progress, and the entries re-read after it
    need no action anyway. A consumer that records an action for a region in the same
    transaction as its cursor calls ``discard`` for that region.
    """

    def __init__(self, advance: Callable[[str, int], None], every_s: float = 1.0) -> None:
        self._advance = advance
        self._every_s = every_s
        self._pending: dict[str, int] = {}

    def note(self, region: str, position: int) -> None:
        self._pending[region] = position

    def discard(self, region: str) -> None:
        self._pending.pop(region, None)

    def flush(self) -> None:
        """Write the pending cursors now (blocking: call via ``asyncio.to_thread``). On an error
        (a full disk) the cursors not written stay pending and the error propagates."""
        pending, self._pending = self._pending, {}
        done: list[str] = []
        try:
            for region, position in pending.items():
                self._advance(region, position)
                done.append(region)
        except BaseException:
            for region in done:
                del pending[region]
            for region, position in pending.items():
                self._pending.setdefault(region, position)
            raise

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            if self._pending:
                try:
                    await asyncio.to_thread(self.flush)
                except Exception as exc:  # a full disk: the entries are re-read after a crash
                    log.error("cursor flush failed (%s); retrying", type(exc).__name__)
