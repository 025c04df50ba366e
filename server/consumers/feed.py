"""The journal as a feed of notifiable facts, for the consumers that act on it (notifier, webhooks).

A consumer keeps, per region, a durable cursor: the last journal position it has fully
handled. On start it reads the region's journal from position 0 through a ``Projection``
(the few things it needs: clinics and bookings) *without acting*, then acts only on the
entries after its cursor, then keeps tailing. ``follow_region`` is that loop.

A ``Fact`` is one thing somebody may be told about: a booking was made, cancelled (by whom),
moved. Its ``key`` — ``f"{region}:{position}:{index}:{kind}"`` — is derived from the journal
entry alone, so a consumer that crashes and resumes derives the same key again and can tell
it has already acted on it.

Adding a kind (e.g. a wait-list ``Offered`` event): write one ``_on_offered`` method that
returns ``Fact(kind="offer", ...)`` and add it to ``Projection._handlers``; then add the
kind to ``server.consumers.notify.messages.TEMPLATES`` (e-mail) and, if clinics should see it,
``server.consumers.webhooks.dispatcher.WEBHOOK_TYPES``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from engine.calendar import cell_epoch
from engine.events import Booked, Cancelled, ClinicRegistered, OfferMade, Rescheduled, from_record
from engine.model import Clinic, clinic_from_record
from engine.records import Booking, BookingStatus
from persistence.codec import unpack_events
from persistence.journal import Journal

log = logging.getLogger("tandtid.notify.feed")


@dataclass(frozen=True, slots=True)
class Fact:
    """One notifiable thing that happened, as of the journal entry that recorded it."""

    region: str
    position: int
    index: int  # the event's index inside its journal entry
    kind: str  # "booked" | "cancelled" | "rescheduled" | "offer"
    booking: Booking  # the booking AFTER the event (a copy; never mutated); for an offer,
    # the offered time as a Booking with the hold id (status BOOKED, what it becomes if confirmed)
    clinic: Clinic
    at: int  # epoch seconds of the decision
    by: str = ""  # who cancelled: a Party value ("patient", "clinic", "admin")
    previous: Booking | None = None  # the booking BEFORE the event (reschedules)

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


class Projection:
    """Clinics and bookings of the regions a consumer follows, rebuilt from their journals.

    ``times[booking_id]`` is the key of the fact that last set the booking's time (its
    ``booked`` or latest ``rescheduled`` fact): reminders are keyed by it, so a moved
    booking gets fresh reminders and the old ones are recognised as stale.
    """

    def __init__(self) -> None:
        self.clinics: dict[str, Clinic] = {}
        self.bookings: dict[str, Booking] = {}
        self.times: dict[str, str] = {}
        self._handlers: dict[type, Callable[[str, int, int, Any], Fact | None]] = {
            ClinicRegistered: self._on_clinic,
            Booked: self._on_booked,
            Cancelled: self._on_cancelled,
            Rescheduled: self._on_rescheduled,
            OfferMade: self._on_offered,
        }

    def apply(self, region: str, position: int, index: int, event: object) -> Fact | None:
        """Evolve by one event; the fact it is, if it is one somebody may be told about."""
        handler = self._handlers.get(type(event))
        return handler(region, position, index, event) if handler is not None else None

    def _on_clinic(self, region: str, position: int, index: int, event: ClinicRegistered) -> None:
        clinic = clinic_from_record(event.clinic)
        self.clinics[clinic.id] = clinic

    def _on_booked(self, region: str, position: int, index: int, event: Booked) -> Fact | None:
        booking = Booking(
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
        self.bookings[booking.id] = booking
        clinic = self.clinics.get(booking.clinic)
        if clinic is None:
            return None
        fact = Fact(region, position, index, "booked", replace(booking), clinic, event.at)
        self.times[booking.id] = fact.key
        return fact

    def _on_cancelled(self, region: str, position: int, index: int, event: Cancelled) -> Fact | None:
        booking = self.bookings.get(event.booking_id)
        if booking is None:
            return None
        booking.status, booking.cancelled_at, booking.cancelled_by = (
            BookingStatus.CANCELLED,
            event.at,
            event.by,
        )
        clinic = self.clinics.get(booking.clinic)
        if clinic is None:
            return None
        return Fact(region, position, index, "cancelled", replace(booking), clinic, event.at, by=event.by)

    def _on_rescheduled(self, region: str, position: int, index: int, event: Rescheduled) -> Fact | None:
        booking = self.bookings.get(event.booking_id)
        if booking is None:
            return None
        previous = replace(booking)
        booking.resource, booking.day, booking.cell = event.resource, event.day, event.cell
        clinic = self.clinics.get(booking.clinic)
        if clinic is None:
            return None
        fact = Fact(
            region, position, index, "rescheduled", replace(booking), clinic, event.at, previous=previous
        )
        self.times[booking.id] = fact.key
        return fact

    def _on_offered(self, region: str, position: int, index: int, event: OfferMade) -> Fact | None:
        clinic = self.clinics.get(event.clinic)
        if clinic is None:
            return None
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
        return Fact(region, position, index, "offer", offered, clinic, at)


Handle = Callable[[str, int, list[Fact], bool], Awaitable[None]]


def facts_of(projection: Projection, region: str, position: int, payload: bytes) -> list[Fact]:
    """Apply one journal entry to ``projection``; the facts it holds, in order."""
    facts: list[Fact] = []
    for index, record in enumerate(unpack_events(payload)):
        try:
            event = from_record(record)
        except ValueError:
            # An event kind this build does not know (written by a newer node): not ours to judge.
            log.warning("region %s position %d: skipping an unknown event record", region, position)
            continue
        fact = projection.apply(region, position, index, event)
        if fact is not None:
            facts.append(fact)
    return facts


async def follow_region(
    journal: Journal,
    region: str,
    projection: Projection,
    *,
    cursor: int,
    handle: Handle,
    caught_up: Callable[[str], None] | None = None,
) -> None:
    """Replay ``region`` from 0 into ``projection`` and call ``handle(region, position, facts, act)``
    for every entry, in order, forever: ``act`` is True for entries after ``cursor`` (the
    caller acts on them and moves its cursor; also called for entries without facts) and
    False for the replayed ones (the caller may only note them, e.g. to plan reminders). ``caught_up(region)`` is called once the replay has reached
    the journal's end as it was when following began. Returns only by cancellation."""
    end = await journal.last_position(region)
    announced = False
    if end == 0 and caught_up is not None:
        caught_up(region)
        announced = True
    async for entry in journal.tail(region, after=0):
        facts = facts_of(projection, region, entry.position, entry.payload)
        act = entry.position > cursor
        if act or facts:
            await handle(region, entry.position, facts, act)
        if not announced and entry.position >= end:
            announced = True
            if caught_up is not None:
                caught_up(region)


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
        """Write the pending cursors now (blocking: call via ``asyncio.to_thread``)."""
        pending, self._pending = self._pending, {}
        for region, position in pending.items():
            self._advance(region, position)

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            if self._pending:
                await asyncio.to_thread(self.flush)
