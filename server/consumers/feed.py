"""The journal as facts somebody may be told about, and what they are read from.

A ``Fact`` is one notifiable thing that happened: a booking was made, cancelled (by whom),
moved, or a wait-list offer was made. Its ``key`` — ``f"{region}:{position}:{index}:{kind}"`` —
is derived from the journal entry alone, so a consumer that crashes and resumes derives the
same key again and can tell it has already acted on it.

A fact is built from its event and, for what the event does not carry (a cancelled booking's
patient and time, a clinic's name), from the region's bookings and clinics as ``Reads`` — at
that entry OR LATER, never earlier: a booking's patient, clinic, service and length never
change, a cancelled booking never changes again, and a ``Rescheduled`` event carries the time
before and after (version 1 records do not: ``Fact.previous`` is then None unless the feed's
own replica knew it, and the feed counts it). So no consumer keeps a copy of the bookings:

- inside ``tandtid serve`` the ``Projection`` reads the region actors' own state (``states``:
  ``RegionState`` answers ``Reads``), ONE store of the bookings for the whole process;
- a consumer running on its own (no actors in its process) keeps a ``BookingsReplica`` per
  region: the engine's compact ``BookingStore`` (~90 bytes a booking) loaded from the region
  snapshot the actors write and evolved by the journal entries after it (``RegionView.base``).

An event about a clinic or booking the reads do not have raises ``Unplaced``: the consumer
stops and reports it (never a cursor moved past a fact it could not place).

Clinic setup events (``SETUP_EVENTS``: details, resources, hours, day hours) are no fact for
anyone (a booking cancelled by a change of hours is its own ``Cancelled`` event, told as any
clinic cancellation); the feed passes over them on purpose and counts them
(``tandtid_consumer_setup_events_total{kind}``), and a replica applies ``ClinicEdited`` so the
facts after it carry the clinic's new name, address, phone and offer window. Other events with
no fact (holds, blocks, days opened) are passed over silently; an event kind this build cannot
decode (a newer node's) is logged and skipped.

Adding a kind (e.g. a wait-list ``Offered`` event): write one ``_on_offered`` method that
returns ``Fact(kind="offer", ...)`` and add it to ``Projection._handlers``; then add the
kind to ``server.consumers.notify.messages.TEMPLATES`` (e-mail) and, if clinics should see it,
``server.consumers.webhooks.dispatcher.WEBHOOK_TYPES``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from engine.bookings import BookingStore
from engine.calendar import cell_epoch
from engine.errors import TandtidError
from engine.events import (
    Booked,
    Cancelled,
    ClinicEdited,
    ClinicRegistered,
    DayHoursSet,
    HoursSet,
    NoShowMarked,
    OfferMade,
    Rescheduled,
    ResourcePut,
    ResourceRetired,
    from_record,
)
from engine.model import Clinic, clinic_from_record
from engine.records import Booking, BookingStatus
from engine.setup import edited
from persistence.codec import unpack_events
from server import metrics
from server.consumers.workers import in_consumer_thread

log = logging.getLogger("tandtid.consumers.feed")

SETUP_EVENTS = (ClinicEdited, ResourcePut, ResourceRetired, HoursSet, DayHoursSet)


class Unplaced(TandtidError):
    """A journal event names a clinic or booking the projection does not have. The message
    names the event kind and position only (no ids of people)."""


class StateUnavailable(TandtidError):
    """The process's state of the region cannot be read now (its actor is recovering or does
    not serve the region): the feed stops the region's pipeline and tries again later."""


class Reads(Protocol):
    """What facts read of a region beyond their events (``RegionState`` answers it)."""

    clinics: dict[str, Clinic]

    def booking(self, booking_id: str) -> Booking | None: ...

    def bookings_on(self, clinic: str, day: int) -> list[Booking]: ...


States = Callable[[str], "tuple[Reads, int] | None"]
"""The process's current state of a region and the journal position it holds at least (an
actor's), or None when it has none now."""


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


class BookingsReplica:
    """A region's clinics and bookings kept by a consumer whose process has no region state:
    the engine's compact ``BookingStore``, evolved by the events that change bookings. Answers
    ``Reads``."""

    __slots__ = ("clinics", "store")

    def __init__(self, clinics: dict[str, Clinic] | None = None, store: BookingStore | None = None) -> None:
        self.clinics: dict[str, Clinic] = clinics if clinics is not None else {}
        self.store = store if store is not None else BookingStore()

    def booking(self, booking_id: str) -> Booking | None:
        return self.store.get(booking_id)

    def bookings_on(self, clinic: str, day: int) -> list[Booking]:
        return self.store.on_day(clinic, day)

    def evolve(self, event: object) -> None:
        """Apply one event after the replica's base (unknown bookings are left to the fact
        handlers, which report them)."""
        store = self.store
        if isinstance(event, Booked):
            store.add(_made(event))
        elif isinstance(event, Cancelled | Rescheduled | NoShowMarked):
            row = store.row(event.booking_id)
            if row < 0:
                return
            if isinstance(event, Cancelled):
                store.set_status(row, BookingStatus.CANCELLED, event.at, event.by, event.reason)
            elif isinstance(event, Rescheduled):
                store.move(row, event.resource, event.day, event.cell)
            else:
                store.set_status(row, BookingStatus.NO_SHOW)
        elif isinstance(event, ClinicRegistered):
            clinic = clinic_from_record(event.clinic)
            self.clinics[clinic.id] = clinic
        elif isinstance(event, ClinicEdited) and event.clinic in self.clinics:
            self.clinics[event.clinic] = edited(self.clinics[event.clinic], event.changes)


@dataclass(slots=True)
class RegionView:
    """What the feed keeps of one region besides the bookings it reads."""

    region: str
    base: int = 0  # the position the reads started at (a snapshot's, or the actor's; 0: none)
    replica: BookingsReplica | None = None  # the consumer's own bookings; None: the process's state
    moved_at: dict[str, int] = field(default_factory=dict)  # booking -> when it was last moved
    incomplete: int = 0  # reschedules whose previous time was not known

    def time_set_at(self, booking: Booking) -> int:
        """When the booking's current time was decided (booked, or moved since the feed began)."""
        return self.moved_at.get(booking.id, booking.booked_at)


def replica_of_snapshot(data: dict[str, Any]) -> BookingsReplica:
    """The clinics and bookings of a region snapshot (any version the engine reads; blocking:
    call in a worker thread)."""
    from engine.snapshot import decode_bookings

    return BookingsReplica(*decode_bookings(data))


class Projection:
    """The views of the regions a process follows; ``apply`` evolves one by one event. With
    ``states`` the facts read the process's region states; without, each view's replica."""

    def __init__(self, states: States | None = None) -> None:
        self.states = states
        self.views: dict[str, RegionView] = {}
        self._handlers: dict[type, Callable[[RegionView, Reads, int, int, Any], Fact | None]] = {
            Booked: self._on_booked,
            Cancelled: self._on_cancelled,
            Rescheduled: self._on_rescheduled,
            OfferMade: self._on_offered,
        }

    def view(self, region: str) -> RegionView:
        view = self.views.get(region)
        if view is None:
            replica = BookingsReplica() if self.states is None else None
            view = self.views[region] = RegionView(region, replica=replica)
        return view

    def reads(self, region: str) -> Reads:
        """The region's bookings and clinics as of the newest entry applied or later. Raises
        ``StateUnavailable`` when the process's state of the region cannot be read now."""
        view = self.view(region)
        if view.replica is not None:
            return view.replica
        found = self.states(region) if self.states is not None else None
        if found is None:
            raise StateUnavailable(f"region {region}: no state to read in this process now")
        return found[0]

    def booking(self, region: str, booking_id: str) -> tuple[Booking, Clinic] | None:
        try:
            reads = self.reads(region)
        except StateUnavailable:
            return None
        booking = reads.booking(booking_id)
        if booking is None:
            return None
        clinic = reads.clinics.get(booking.clinic)
        return (booking, clinic) if clinic is not None else None

    def apply(self, region: str, position: int, index: int, event: object) -> Fact | None:
        """Evolve by one event; the fact it is, if it is one somebody may be told about.
        Raises ``Unplaced`` for an event about a clinic or booking the reads lack."""
        view = self.view(region)
        replica = view.replica
        if replica is not None and position > view.base:
            if isinstance(event, Rescheduled) and not event.from_known:
                event = _with_time_before(event, replica.booking(event.booking_id))
            replica.evolve(event)
        handler = self._handlers.get(type(event))
        if handler is None:
            if isinstance(event, SETUP_EVENTS):
                metrics.CONSUMER_SETUP_EVENTS.labels(kind=event.KIND).inc()
            return None
        return handler(view, self.reads(region), position, index, event)

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
    def _clinic(view: RegionView, reads: Reads, clinic_id: str, position: int, kind: str) -> Clinic:
        clinic = reads.clinics.get(clinic_id)
        if clinic is None:
            raise Unplaced(f"region {view.region} position {position}: {kind} of a clinic not in the view")
        return clinic

    @staticmethod
    def _booking(view: RegionView, reads: Reads, booking_id: str, position: int, kind: str) -> Booking:
        booking = reads.booking(booking_id)  # a copy, ours to change
        if booking is None:
            raise Unplaced(f"region {view.region} position {position}: {kind} of a booking not in the view")
        return booking

    def _on_booked(self, view: RegionView, reads: Reads, position: int, index: int, event: Booked) -> Fact:
        clinic = self._clinic(view, reads, event.clinic, position, "Booked")
        booking = _made(event)
        view.moved_at.pop(booking.id, None)
        return Fact(view.region, position, index, "booked", booking, clinic, event.at)

    def _on_cancelled(
        self, view: RegionView, reads: Reads, position: int, index: int, event: Cancelled
    ) -> Fact:
        booking = self._booking(view, reads, event.booking_id, position, "Cancelled")
        clinic = self._clinic(view, reads, booking.clinic, position, "Cancelled")
        # the reads may be later than this entry, but a cancelled booking never changes again
        booking.status, booking.cancelled_at, booking.cancelled_by, booking.cancel_reason = (
            BookingStatus.CANCELLED,
            event.at,
            event.by,
            event.reason,
        )
        return Fact(view.region, position, index, "cancelled", booking, clinic, event.at, by=event.by)

    def _on_rescheduled(
        self, view: RegionView, reads: Reads, position: int, index: int, event: Rescheduled
    ) -> Fact:
        booking = self._booking(view, reads, event.booking_id, position, "Rescheduled")
        clinic = self._clinic(view, reads, booking.clinic, position, "Rescheduled")
        # as of this entry: booked, at the event's time (the reads may already know later moves)
        booking.status, booking.cancelled_at, booking.cancelled_by, booking.cancel_reason = (
            BookingStatus.BOOKED,
            0,
            "",
            "",
        )
        previous: Booking | None = None
        if event.from_known:
            previous = replace(
                booking, resource=event.from_resource, day=event.from_day, cell=event.from_cell
            )
        else:
            view.incomplete += 1
        booking.resource, booking.day, booking.cell = event.resource, event.day, event.cell
        view.moved_at[booking.id] = event.at
        return Fact(view.region, position, index, "rescheduled", booking, clinic, event.at, previous=previous)

    def _on_offered(
        self, view: RegionView, reads: Reads, position: int, index: int, event: OfferMade
    ) -> Fact:
        clinic = self._clinic(view, reads, event.clinic, position, "OfferMade")
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


def _made(event: Booked) -> Booking:
    """The booking a ``Booked`` event made, as it was then."""
    return Booking(
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


def _with_time_before(event: Rescheduled, booking: Booking | None) -> Rescheduled:
    """A version 1 reschedule applied to the replica: the time before is the replica's."""
    if booking is None:
        return event
    return Rescheduled(
        event.booking_id,
        event.resource,
        event.day,
        event.cell,
        event.at,
        booking.resource,
        booking.day,
        booking.cell,
    )


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
        """Write the pending cursors now (blocking: call via ``in_consumer_thread``). On an error
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
                    await in_consumer_thread(self.flush)
                except Exception as exc:  # a full disk: the entries are re-read after a crash
                    log.error("cursor flush failed (%s); retrying", type(exc).__name__)
