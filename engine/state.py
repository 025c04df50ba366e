"""RegionState: one region's slot table, and the only code that changes it.

``apply(command, now)`` decides: it validates everything first (raising ``Refused``, which
changes nothing), then builds the events and feeds each to ``evolve``. ``evolve(event)``
applies a fact without judging it, so replaying journaled events through ``evolve``
rebuilds exactly the state ``apply`` built. After a batch, ``take_changes()`` hands out
the cell changes (for the live diff) exactly once.

Refusal order when several apply (documented so callers and tests agree):

- a start/run: unknown resource NOT_FOUND -> the clinic suspended SUSPENDED (holds and bookings;
  a booking from a hold also when the suspension came after the hold) -> service not performed/offered INVALID ->
  run leaves the day, day not opened, or any CLOSED cell in the run OUTSIDE_HOURS ->
  start before ``now`` IN_PAST -> any cell not FREE (HELD/BOOKED/BLOCKED/BUFFER)
  SLOT_TAKEN -> patient's upcoming bookings at the clinic >= ``max_bookings_per_patient``
  LIMIT_REACHED.
- a patient's own cells being given up in the same step (the hold a new hold replaces,
  the booking being rescheduled) count as free for that check.
- one open hold per patient in the region (no hoarding): PlaceHold releases the patient's
  open hold wherever it is (``HoldReleased`` then ``HoldPlaced`` in one step); if that hold
  was a wait-list offer, the offer passes on. Chosen over refusing so that a patient who
  changes their mind never has to find and release the old hold first.
- Cancel by PATIENT and Reschedule: a booking starting less than the clinic's
  ``cancel_notice_hours`` after ``now`` is TOO_LATE (CLINIC/ADMIN cancels are never late).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from engine import snapshot
from engine.bookings import BookingStore
from engine.calendar import cell_epoch, day_of_epoch, earliest_epoch
from engine.cells import BLOCKED, BOOKED, BUFFER, CLOSED, FREE, HELD
from engine.commands import (
    Block,
    Book,
    Cancel,
    Command,
    JoinWaitlist,
    LeaveWaitlist,
    MarkNoShow,
    OpenDays,
    Party,
    PlaceHold,
    RegisterClinic,
    ReleaseHold,
    Reschedule,
    Tick,
    Unblock,
)
from engine.errors import RefusalCode, Refused
from engine.events import (
    Booked,
    BufferReleased,
    Cancelled,
    CellsBlocked,
    CellsUnblocked,
    ClinicRegistered,
    DaysOpened,
    Event,
    HoldExpired,
    HoldPlaced,
    HoldReleased,
    NoShowMarked,
    OfferExpired,
    OfferMade,
    Rescheduled,
    WaitlistJoined,
    WaitlistLeft,
)
from engine.model import (
    SERVICES_BY_ID,
    Clinic,
    Resource,
    clinic_from_record,
    resource_from_record,
    resource_to_record,
)
from engine.offers import first_offer
from engine.records import Booking, BookingStatus, Hold
from engine.rows import FREE_RUNS, OpeningMasks, ResourceRow, runs
from engine.setup import ClinicSetup
from engine.starts import NONE as NO_STARTS
from engine.starts import SERVICE_INDEX, Counts, StartCounts, day_cuts
from engine.waitlist import MAX_ENTRIES_PER_PATIENT, MAX_WAIT_DAYS, WaitEntry, Waitlist

Change = tuple[str, str, int, int, int, int]
"""(clinic, resource, day, first_cell, n_cells, new_state): every cell of the run is now new_state."""

MAX_OPEN_DAYS = 400

_NOT_FOUND = RefusalCode.NOT_FOUND
_INVALID = RefusalCode.INVALID


def _refuse(code: RefusalCode, message: str) -> NoReturn:
    raise Refused(code, message)


class RegionState:
    """The slot table of one region. Only the region's actor calls ``apply``/``evolve``."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.clinics: dict[str, Clinic] = {}
        self.resources: dict[str, Resource] = {}
        self._bookings = BookingStore()  # read through booking(), bookings_of(), bookings_on()
        self.holds: dict[str, Hold] = {}
        self._rows: dict[str, ResourceRow] = {}
        self._free: dict[str, dict[int, int]] = {}  # clinic -> day -> FREE cells
        self._starts = StartCounts()  # clinic -> day -> bookable starts per service (derived, lazily)
        # clinic -> a number that changes whenever any of its cells or what its resources
        # perform changes (derived, never stored: readers cache answers against it): the
        # region's ``version`` when the clinic last changed, so the dict runs in the order the
        # clinics last changed (``changed_since`` reads its tail)
        self._versions: dict[str, int] = {}
        self.version = 0  # grows whenever any clinic's version changes
        self._row_copies: tuple[snapshot.RowCopies, ...] = ()  # captures not finished yet
        self._clinic_resources: dict[str, list[str]] = {}
        self._masks = OpeningMasks()
        # the catalogue as records for snapshots, made at registration rather than on every
        # capture: id -> (the Clinic/Resource it was made of, its record); engine.snapshot remakes
        # a record whose object has been replaced since
        self._clinic_records: dict[str, tuple[Clinic, dict[str, Any]]] = {}
        self._resource_records: dict[str, tuple[Resource, dict[str, Any]]] = {}
        self._mask_runs: dict[bytes, list[tuple[int, int]]] = {}  # mask -> its FREE runs
        self._hold_of: dict[str, str] = {}  # patient -> their one open hold
        # active BUFFER windows per (resource, day): [cell, cells, until]
        self._windows: dict[tuple[str, int], list[list[int]]] = {}
        self._hold_heap: list[tuple[int, str]] = []  # (expires_at, hold id), lazy deletion
        self._buffer_heap: list[tuple[int, str, int, int, int]] = []  # (until, resource, day, cell, cells)
        self.waitlist = Waitlist()
        # spans (resource, day, cell, cells) that became available this step, while anyone waits
        self._freed: list[tuple[str, int, int, int]] = []
        self._changes: list[Change] = []
        self._deciders: dict[type, Any] = {
            RegisterClinic: self._decide_register,
            OpenDays: self._decide_open,
            PlaceHold: self._decide_place_hold,
            ReleaseHold: self._decide_release_hold,
            Book: self._decide_book,
            Cancel: self._decide_cancel,
            Reschedule: self._decide_reschedule,
            Block: self._decide_block,
            Unblock: self._decide_unblock,
            Tick: self._decide_tick,
            JoinWaitlist: self._decide_join,
            LeaveWaitlist: self._decide_leave,
            MarkNoShow: self._decide_no_show,
        }
        self._evolvers: dict[type, Any] = {
            ClinicRegistered: self._on_clinic_registered,
            DaysOpened: self._on_days_opened,
            HoldPlaced: self._on_hold_placed,
            HoldReleased: self._on_hold_gone,
            HoldExpired: self._on_hold_gone,
            Booked: self._on_booked,
            Cancelled: self._on_cancelled,
            Rescheduled: self._on_rescheduled,
            CellsBlocked: self._on_cells_blocked,
            CellsUnblocked: self._on_cells_unblocked,
            BufferReleased: self._on_buffer_released,
            WaitlistJoined: self._on_waitlist_joined,
            WaitlistLeft: self._on_waitlist_left,
            OfferMade: self._on_offer_made,
            OfferExpired: self._on_hold_gone,
            NoShowMarked: self._on_no_show,
        }
        setup = ClinicSetup(self)  # clinic setup: engine.setup decides and evolves it
        self._deciders.update(setup.deciders())
        self._evolvers.update(setup.evolvers())

    # ------------------------------------------------------------------ the two entry points

    def apply(self, command: Command, now: int) -> list[Event]:
        """Validate ``command`` at epoch second ``now`` and apply it. Returns the events to
        journal (``[]``: nothing new happened, e.g. an idempotent Book retry). Raises
        ``Refused``; a refused command changes nothing."""
        events: list[Event] = self._deciders[type(command)](command, now)
        evolvers = self._evolvers
        for event in events:
            evolvers[type(event)](event)
        if self._freed:
            events.extend(self._offer_freed(now))
        return events

    def evolve(self, event: Event) -> None:
        """Apply one journaled fact (no validation: facts already happened). Offers are
        journaled as ``OfferMade`` facts, so replay never matches anything itself."""
        self._evolvers[type(event)](event)
        if self._freed:
            self._freed.clear()

    def take_changes(self) -> list[Change]:
        """The cell changes since the last call, in order; the list is reset."""
        changes, self._changes = self._changes, []
        return changes

    # ------------------------------------------------------------------ reads

    def row(self, resource: str, day: int) -> bytes:
        """That day's cells of ``resource`` (all CLOSED if not opened). KeyError if unknown."""
        return self._rows[resource].day(day)

    def clinic_version(self, clinic: str) -> int:
        """Changes whenever a cell of the clinic or a service its resources perform changes
        (within this state object's life): an answer computed at one version holds while the
        version is the same."""
        return self._versions.get(clinic, 0)

    def changed_since(self, version: int) -> list[str]:
        """The clinics whose version changed after the region's ``version`` was ``version``,
        most recent first: what a reader that cached answers at that version must ask again.
        Costs what it returns."""
        out = []
        for clinic, v in reversed(self._versions.items()):
            if v <= version:
                break
            out.append(clinic)
        return out

    def _touch(self, clinic: str) -> None:
        self.version += 1
        versions = self._versions
        versions.pop(clinic, None)  # re-inserted last: the dict stays in order of change
        versions[clinic] = self.version

    def _save_row(self, row: ResourceRow) -> None:
        """Before a row's cells change: keep it as it was for every capture not finished yet."""
        if any(c.done for c in self._row_copies):
            self._row_copies = tuple(c for c in self._row_copies if not c.done)
        for copies in self._row_copies:
            if row not in copies.rows:
                copies.rows[row] = (row.first_day, bytes(row.buf))

    def free_count(self, clinic: str, day: int) -> int:
        free = self._free.get(clinic)
        return free.get(day, 0) if free else 0

    def bookable_starts(self, clinic: str, day: int, now: int) -> dict[str, int]:
        """How many times each service the clinic offers can be booked on ``day`` at epoch second
        ``now`` (``engine.starts``); {} for an unknown clinic. Counted once per clinic-day and kept
        until a cell of that day changes."""
        c = self.clinics.get(clinic)
        if c is None:
            return {}
        counts = self._start_counts(c, day, 1, now)[0]
        return {s: counts[SERVICE_INDEX[s]] for s in c.services}

    def bookable_starts_of(self, clinic: str, service: str, first_day: int, days: int, now: int) -> list[int]:
        """For each day of the range: how many times ``service`` can be booked at the clinic
        (0 when it is not offered; [] for an unknown clinic)."""
        c = self.clinics.get(clinic)
        if c is None:
            return []
        if service not in c.services:
            return [0] * days
        i = SERVICE_INDEX[service]
        return [counts[i] for counts in self._start_counts(c, first_day, days, now)]

    def _start_counts(self, c: Clinic, first_day: int, days: int, now: int) -> list[Counts]:
        if c.suspended:
            return [NO_STARTS] * days
        return self._starts.of(
            c.id, self._clinic_rows(c.id), first_day, day_cuts(first_day, days, now, c.cell_minutes)
        )

    def _clinic_rows(self, clinic: str) -> list[ResourceRow]:
        rows = self._rows
        return [rows[r] for r in self._clinic_resources.get(clinic, ())]

    def resources_of(self, clinic: str) -> list[Resource]:
        """The clinic's resources in registration order ([] for an unknown clinic)."""
        return [self.resources[r] for r in self._clinic_resources.get(clinic, ())]

    def resource_row(self, resource: str) -> ResourceRow:
        """The resource's compact row (read only). KeyError if unknown."""
        return self._rows[resource]

    def cells_needed(self, resource: str, service: str) -> int | None:
        """Cells ``service`` takes on ``resource``; None if it does not perform it there."""
        row = self._rows.get(resource)
        return row.cells_for.get(service) if row else None

    def booking(self, booking_id: str) -> Booking | None:
        """The booking with that id (booked, cancelled or no-show), or None. A copy: changing
        it changes nothing here."""
        return self._bookings.get(booking_id)

    def may_have_bookings_of(self, patient: str) -> bool:
        """False when the patient has no booking here (cheap: the patient index only)."""
        return self._bookings.has_patient(patient)

    def bookings_of(self, patient: str) -> list[Booking]:
        """The patient's bookings (booked and cancelled), by start then id."""
        return sorted(self._bookings.of_patient(patient), key=lambda b: (b.day, b.cell, b.id))

    def bookings_on(self, clinic: str, day: int) -> list[Booking]:
        """The clinic's bookings starting that day (booked and cancelled), by start, resource, id."""
        return sorted(self._bookings.on_day(clinic, day), key=lambda b: (b.cell, b.resource, b.id))

    def booking_count(self) -> int:
        """How many bookings the region has made (cancelled ones included)."""
        return len(self._bookings)

    def all_bookings(self) -> Iterator[Booking]:
        """Every booking, in the order they were made (tests, benchmarks, exports)."""
        return iter(self._bookings)

    def hold(self, hold_id: str) -> Hold | None:
        """The open hold (an offer included) with that id, or None."""
        return self.holds.get(hold_id)

    def hold_count(self) -> int:
        return len(self.holds)

    def hold_of(self, patient: str, clinic: str | None = None) -> Hold | None:
        """The patient's one open hold (an offer included) in the region, or None; with
        ``clinic``, only if it is at that clinic."""
        hold_id = self._hold_of.get(patient)
        hold = self.holds.get(hold_id) if hold_id else None
        return hold if hold is not None and (clinic is None or hold.clinic == clinic) else None

    def idempotent_booking(self, patient: str, key: str) -> Booking | None:
        """The booking an earlier Book with this (patient, idempotency key) made, if any."""
        seen = self._bookings.idempotent(patient, key)
        return self._bookings.view(seen[0]) if seen else None

    def next_deadline(self) -> int | None:
        """Earliest epoch second at which a Tick would do something (hold expiry or end of a
        BUFFER window), or None. The actor schedules its next Tick for then."""
        hh, bh = self._hold_heap, self._buffer_heap
        while hh:
            expires_at, hold_id = hh[0]
            hold = self.holds.get(hold_id)
            if hold is not None and hold.expires_at == expires_at:
                break
            heapq.heappop(hh)
        while bh and not self._window_live(bh[0]):
            heapq.heappop(bh)
        times = [h[0][0] for h in (hh, bh) if h]
        return min(times) if times else None

    def _window_live(self, entry: tuple[int, str, int, int, int]) -> bool:
        until, resource, day, cell, cells = entry
        return [cell, cells, until] in self._windows.get((resource, day), ())

    # ------------------------------------------------------------------ deciders (validate, no mutation)

    def _decide_register(self, c: RegisterClinic, now: int) -> list[Event]:
        clinic = c.clinic
        if clinic.region != self.region or not clinic.id.startswith(self.region + "-"):
            _refuse(_INVALID, f"clinic {clinic.id} is not in region {self.region}")
        if clinic.cell_minutes <= 0 or 60 % clinic.cell_minutes:
            _refuse(_INVALID, "cell_minutes must divide an hour")
        for s in clinic.services:
            if s not in SERVICES_BY_ID:
                _refuse(_INVALID, f"unknown service {s}")
        old = self.clinics.get(clinic.id)
        if (
            old is not None
            and old.cell_minutes != clinic.cell_minutes
            and any(self._rows[r].buf for r in self._clinic_resources.get(clinic.id, ()))
        ):
            _refuse(_INVALID, "cell_minutes cannot change once days are opened")
        for res in c.resources:
            if res.clinic != clinic.id:
                _refuse(_INVALID, f"resource {res.id} does not belong to clinic {clinic.id}")
            known = self.resources.get(res.id)
            if known is not None and known.clinic != clinic.id:
                _refuse(_INVALID, f"resource {res.id} belongs to another clinic")
            for s in res.services:
                if s not in SERVICES_BY_ID:
                    _refuse(_INVALID, f"unknown service {s}")
        return [ClinicRegistered(clinic.to_record(), [resource_to_record(r) for r in c.resources])]

    def _decide_open(self, c: OpenDays, now: int) -> list[Event]:
        if c.resource not in self._rows:
            _refuse(_NOT_FOUND, "unknown resource")
        if self.resources[c.resource].retired:
            _refuse(_INVALID, "the resource is retired")
        if not 0 < c.days <= MAX_OPEN_DAYS:
            _refuse(_INVALID, f"days must be 1..{MAX_OPEN_DAYS}")
        if c.first_day < day_of_epoch(now):
            _refuse(RefusalCode.IN_PAST, "cannot open days that have passed")
        if c.horizon_days is not None and c.first_day + c.days - 1 > day_of_epoch(now) + c.horizon_days:
            _refuse(_INVALID, f"days may be opened at most {c.horizon_days} days ahead")
        return [DaysOpened(c.resource, c.first_day, c.days)]

    def _run_is_free(self, row: ResourceRow, day: int, cell: int, k: int, now: int) -> bool:
        """The hot path of ``_check_run``: True when the run is inside a covered day, all FREE
        and not in the past. False means 'ask ``_check_run`` why not' (it may still pass)."""
        cpd = row.cpd
        i = day - row.first_day
        if cell < 0 or cell + k > cpd or i < 0 or (i + 1) * cpd > len(row.buf):
            return False
        off = i * cpd + cell
        return row.buf[off : off + k] == FREE_RUNS[k] and cell_epoch(day, cell, row.cell_minutes) >= now

    def _check_run(
        self, row: ResourceRow, day: int, cell: int, k: int, now: int, own: tuple[str, int, int, int] | None
    ) -> None:
        """Refuse unless cells [cell, cell+k) of ``day`` are FREE, open and in the future.
        ``own``: (resource, day, cell, cells) the same step gives up; those count as FREE."""
        if cell < 0 or cell + k > row.cpd:
            _refuse(RefusalCode.OUTSIDE_HOURS, "the time does not fit in the day")
        off = row.offset(day)
        if off < 0:
            _refuse(RefusalCode.OUTSIDE_HOURS, "that day is not open")
        off += cell
        seg = row.buf[off : off + k]
        if seg == FREE_RUNS[k]:
            if cell_epoch(day, cell, row.cell_minutes) < now:
                _refuse(RefusalCode.IN_PAST, "that time has passed")
            return
        if CLOSED in seg:
            _refuse(RefusalCode.OUTSIDE_HOURS, "outside opening hours")
        if earliest_epoch(day, cell, row.cell_minutes) < now:
            _refuse(RefusalCode.IN_PAST, "that time has passed")
        for i, v in enumerate(seg):
            if v == FREE:
                continue
            if own is None or own[0] != row.id or own[1] != day or not own[2] <= cell + i < own[2] + own[3]:
                _refuse(RefusalCode.SLOT_TAKEN, "that time is taken")

    def _upcoming(self, patient: str, clinic: Clinic, now: int) -> int:
        return self._bookings.upcoming(patient, clinic.id, clinic.cell_minutes, now)

    def _check_limit(self, patient: str, clinic: Clinic, now: int) -> None:
        if self._upcoming(patient, clinic, now) >= clinic.max_bookings_per_patient:
            _refuse(RefusalCode.LIMIT_REACHED, "the patient has the most bookings this clinic allows")

    def _open_for_bookings(self, clinic_id: str) -> None:
        if self.clinics[clinic_id].suspended:
            _refuse(RefusalCode.SUSPENDED, "the clinic is suspended and takes no new bookings")

    def _decide_place_hold(self, c: PlaceHold, now: int) -> list[Event]:
        row = self._rows.get(c.resource)
        if row is None:
            _refuse(_NOT_FOUND, "unknown resource")
        self._open_for_bookings(row.clinic)
        k = row.cells_for.get(c.service)
        if k is None:
            _refuse(_INVALID, "the resource does not perform that service here")
        if c.hold_id in self.holds or c.ttl_s <= 0:
            _refuse(_INVALID, "hold id in use or ttl not positive")
        old_id = self._hold_of.get(c.patient)
        if self._run_is_free(row, c.day, c.cell, k, now):
            pass
        elif old_id is None:
            self._check_run(row, c.day, c.cell, k, now, None)
        else:
            old = self.holds[old_id]
            self._check_run(row, c.day, c.cell, k, now, (old.resource, old.day, old.cell, old.cells))
        if self._bookings.has_patient(c.patient):
            self._check_limit(c.patient, self.clinics[row.clinic], now)
        placed = HoldPlaced(
            c.hold_id, c.patient, row.clinic, c.resource, c.service, c.day, c.cell, k, now + c.ttl_s
        )
        if old_id is None:
            return [placed]
        return [HoldReleased(old_id), placed]

    def _decide_release_hold(self, c: ReleaseHold, now: int) -> list[Event]:
        hold = self.holds.get(c.hold_id)
        if hold is None:
            _refuse(_NOT_FOUND, "unknown hold")
        if hold.patient != c.patient:
            _refuse(RefusalCode.NOT_YOURS, "not your hold")
        return [HoldReleased(c.hold_id)]

    def _decide_book(self, c: Book, now: int) -> list[Event]:
        if c.idempotency_key:
            seen = self._bookings.idempotent(c.patient, c.idempotency_key)
            if seen is not None:
                if seen[1] == c.fingerprint:
                    return []
                _refuse(_INVALID, "idempotency key reused with another request")
        if self._bookings.row(c.booking_id) >= 0:
            _refuse(_INVALID, "booking id in use")
        if c.hold_id:
            hold = self.holds.get(c.hold_id)
            if hold is None:
                _refuse(_NOT_FOUND, "unknown hold")
            if hold.patient != c.patient:
                _refuse(RefusalCode.NOT_YOURS, "not your hold")
            if hold.expires_at <= now:
                _refuse(RefusalCode.HOLD_EXPIRED, "the hold has expired")
            self._open_for_bookings(hold.clinic)
            clinic = self.clinics[hold.clinic]
            if cell_epoch(hold.day, hold.cell, clinic.cell_minutes) < now:
                _refuse(RefusalCode.IN_PAST, "that time has passed")
            if self._bookings.has_patient(c.patient):
                self._check_limit(c.patient, clinic, now)
            return [
                Booked(
                    c.booking_id,
                    c.patient,
                    hold.clinic,
                    hold.resource,
                    hold.service,
                    hold.day,
                    hold.cell,
                    hold.cells,
                    now,
                    c.hold_id,
                    c.idempotency_key,
                    c.fingerprint,
                )
            ]
        row = self._rows.get(c.resource)
        if row is None:
            _refuse(_NOT_FOUND, "unknown resource")
        self._open_for_bookings(row.clinic)
        k = row.cells_for.get(c.service)
        if k is None:
            _refuse(_INVALID, "the resource does not perform that service here")
        if not self._run_is_free(row, c.day, c.cell, k, now):
            self._check_run(row, c.day, c.cell, k, now, None)
        if self._bookings.has_patient(c.patient):
            self._check_limit(c.patient, self.clinics[row.clinic], now)
        return [
            Booked(
                c.booking_id,
                c.patient,
                row.clinic,
                c.resource,
                c.service,
                c.day,
                c.cell,
                k,
                now,
                "",
                c.idempotency_key,
                c.fingerprint,
            )
        ]

    def _decide_cancel(self, c: Cancel, now: int) -> list[Event]:
        b = self.booking(c.booking_id)
        if b is None:
            _refuse(_NOT_FOUND, "unknown booking")
        by = c.by
        if by is Party.PATIENT:
            if b.patient != c.requester:
                _refuse(RefusalCode.NOT_YOURS, "not your booking")
        elif by is Party.CLINIC:
            if b.clinic != c.requester:
                _refuse(_NOT_FOUND, "unknown booking")
        elif by is not Party.ADMIN:
            _refuse(_INVALID, "unknown party")
        if b.status != BookingStatus.BOOKED:
            _refuse(_INVALID, "the booking is already cancelled")
        clinic = self.clinics[b.clinic]
        if by is Party.PATIENT:
            if c.reason:
                _refuse(_INVALID, "a patient's own cancellation carries no reason")
            if cell_epoch(b.day, b.cell, clinic.cell_minutes) - now < clinic.cancel_notice_hours * 3600:
                _refuse(RefusalCode.TOO_LATE, "too close to the appointment to cancel online")
            return [Cancelled(c.booking_id, str(by), now, 0)]
        until = now + clinic.buffer_minutes * 60 if clinic.buffer_minutes > 0 else 0
        return [Cancelled(c.booking_id, str(by), now, until, c.reason)]

    def _decide_reschedule(self, c: Reschedule, now: int) -> list[Event]:
        b = self.booking(c.booking_id)
        if b is None:
            _refuse(_NOT_FOUND, "unknown booking")
        if b.patient != c.patient:
            _refuse(RefusalCode.NOT_YOURS, "not your booking")
        if b.status != BookingStatus.BOOKED:
            _refuse(_INVALID, "the booking is cancelled")
        row = self._rows.get(c.resource)
        if row is None:
            _refuse(_NOT_FOUND, "unknown resource")
        if row.clinic != b.clinic:
            _refuse(_INVALID, "a booking moves within its clinic only")
        k = row.cells_for.get(b.service)
        if k is None:
            _refuse(_INVALID, "the resource does not perform that service here")
        clinic = self.clinics[b.clinic]
        if cell_epoch(b.day, b.cell, clinic.cell_minutes) - now < clinic.cancel_notice_hours * 3600:
            _refuse(RefusalCode.TOO_LATE, "too close to the appointment to move it online")
        self._check_run(row, c.day, c.cell, k, now, (b.resource, b.day, b.cell, b.cells))
        return [Rescheduled(c.booking_id, c.resource, c.day, c.cell, now, b.resource, b.day, b.cell)]

    def _check_span(self, row: ResourceRow | None, day: int, cell: int, cells: int) -> ResourceRow:
        if row is None:
            _refuse(_NOT_FOUND, "unknown resource")
        if cells <= 0:
            _refuse(_INVALID, "cells must be positive")
        if cell < 0 or cell + cells > row.cpd:
            _refuse(RefusalCode.OUTSIDE_HOURS, "the span does not fit in the day")
        if row.offset(day) < 0:
            _refuse(RefusalCode.OUTSIDE_HOURS, "that day is not open")
        return row

    def _decide_block(self, c: Block, now: int) -> list[Event]:
        row = self._check_span(self._rows.get(c.resource), c.day, c.cell, c.cells)
        if earliest_epoch(c.day, c.cell, row.cell_minutes) < now:
            _refuse(RefusalCode.IN_PAST, "that time has passed")
        off = row.offset(c.day) + c.cell
        seg = row.buf[off : off + c.cells]
        if HELD in seg or BOOKED in seg:
            _refuse(RefusalCode.SLOT_TAKEN, "held or booked cells cannot be blocked")
        return [CellsBlocked(c.resource, c.day, c.cell, c.cells)]

    def _decide_unblock(self, c: Unblock, now: int) -> list[Event]:
        self._check_span(self._rows.get(c.resource), c.day, c.cell, c.cells)
        return [CellsUnblocked(c.resource, c.day, c.cell, c.cells)]

    def _decide_tick(self, c: Tick, now: int) -> list[Event]:
        # Popping stale heap entries is bookkeeping, not state: a Tick is never refused.
        events: list[Event] = []
        hh, bh = self._hold_heap, self._buffer_heap
        expired: set[str] = set()
        while hh and hh[0][0] <= now:
            expires_at, hold_id = heapq.heappop(hh)
            hold = self.holds.get(hold_id)
            if hold is not None and hold.expires_at == expires_at and hold_id not in expired:
                expired.add(hold_id)
                events.append(OfferExpired(hold_id) if hold.offer else HoldExpired(hold_id))
        while bh and bh[0][0] <= now:
            entry = heapq.heappop(bh)
            if self._window_live(entry):
                _, resource, day, cell, cells = entry
                events.append(BufferReleased(resource, day, cell, cells))
        return events

    def _decide_join(self, c: JoinWaitlist, now: int) -> list[Event]:
        if not c.entry_id.startswith(self.region + "-") or c.entry_id in self.waitlist.entries:
            _refuse(_INVALID, "entry id not of this region or in use")
        if c.service not in SERVICES_BY_ID:
            _refuse(_INVALID, f"unknown service {c.service}")
        if bool(c.clinic) == bool(c.municipality):
            _refuse(_INVALID, "wait for a clinic or for a municipality, not both")
        if c.clinic:
            clinic = self.clinics.get(c.clinic)
            if clinic is None:
                _refuse(_NOT_FOUND, "unknown clinic")
            if c.service not in clinic.services:
                _refuse(_INVALID, "the clinic does not offer that service")
        elif not any(k.municipality == c.municipality for k in self.clinics.values()):
            _refuse(_NOT_FOUND, "no clinic in that municipality")
        if not 0 < c.days <= MAX_WAIT_DAYS:
            _refuse(_INVALID, f"days must be 1..{MAX_WAIT_DAYS}")
        if not 0 <= c.from_minute < c.to_minute <= 24 * 60:
            _refuse(_INVALID, "the time-of-day window is empty or outside the day")
        if c.first_day + c.days <= day_of_epoch(now):
            _refuse(RefusalCode.IN_PAST, "those days have passed")
        if len(self.waitlist.of_patient(c.patient)) >= MAX_ENTRIES_PER_PATIENT:
            _refuse(RefusalCode.LIMIT_REACHED, "the patient already waits for the most times allowed")
        return [
            WaitlistJoined(
                c.entry_id,
                c.patient,
                c.clinic,
                c.municipality,
                c.service,
                c.first_day,
                c.days,
                c.from_minute,
                c.to_minute,
                now,
            )
        ]

    def _decide_leave(self, c: LeaveWaitlist, now: int) -> list[Event]:
        entry = self.waitlist.entries.get(c.entry_id)
        if entry is None:
            _refuse(_NOT_FOUND, "unknown wait-list entry")
        if entry.patient != c.patient:
            _refuse(RefusalCode.NOT_YOURS, "not your wait-list entry")
        if entry.offer:
            return [WaitlistLeft(c.entry_id), HoldReleased(entry.offer)]
        return [WaitlistLeft(c.entry_id)]

    def _decide_no_show(self, c: MarkNoShow, now: int) -> list[Event]:
        b = self.booking(c.booking_id)
        if b is None or b.clinic != c.clinic:
            _refuse(_NOT_FOUND, "unknown booking")
        if b.status != BookingStatus.BOOKED:
            _refuse(_INVALID, "only a booked booking can be a no-show")
        if cell_epoch(b.day, b.cell, self.clinics[b.clinic].cell_minutes) > now:
            _refuse(_INVALID, "the appointment has not started yet")
        return [NoShowMarked(c.booking_id, now)]

    # ------------------------------------------------------------------ offers (run inside apply)

    def _offer_freed(self, now: int) -> list[Event]:
        """Turn the cells freed by this step into offers for the wait-list, in join order.
        Each offer is evolved at once, so the next search sees its cells HELD."""
        freed, self._freed = self._freed, []
        made: list[Event] = []
        for resource, day, cell, cells in freed:
            row = self._rows[resource]
            clinic = self.clinics[row.clinic]
            entries = self.waitlist.waiting_for(clinic)
            while entries:
                offer = first_offer(
                    row, clinic, day, (cell, cell + cells), entries, now, self._may_be_offered
                )
                if offer is None:
                    break
                self._on_offer_made(offer)
                made.append(offer)
                entries = [e for e in entries if e.id != offer.entry_id]
        self._freed.clear()  # evolving offers records nothing new, but keep the contract plain
        return made

    def _may_be_offered(self, patient: str, clinic: Clinic, now: int) -> bool:
        """Not while the patient holds anything, nor at the clinic's booking limit."""
        return (
            patient not in self._hold_of
            and self._upcoming(patient, clinic, now) < clinic.max_bookings_per_patient
        )

    # ------------------------------------------------------------------ evolvers (facts, no checks)

    def _install(self, clinic: Clinic, resources: list[Resource]) -> None:
        old = self.clinics.get(clinic.id)
        self.clinics[clinic.id] = clinic
        self._clinic_records[clinic.id] = (clinic, clinic.to_record())
        self._free.setdefault(clinic.id, {})
        members = self._clinic_resources.setdefault(clinic.id, [])
        if old is not None and old.cell_minutes != clinic.cell_minutes:
            for rid in members:  # no days opened (checked), so rows are empty: rebuild them
                self._rows[rid] = ResourceRow(rid, clinic.id, clinic.cell_minutes)
        for res in resources:
            self.resources[res.id] = res
            self._resource_records[res.id] = (res, resource_to_record(res))
            if res.id not in self._rows:
                self._rows[res.id] = ResourceRow(res.id, clinic.id, clinic.cell_minutes)
                members.append(res.id)
        self._masks.forget(clinic.id)
        for rid in members:  # their templates too: the cell size may have changed
            self._masks.forget(rid)
        self._touch(clinic.id)
        self._starts.forget(clinic.id)
        offered = set(clinic.services)
        cm = clinic.cell_minutes
        for rid in members:
            row = self._rows[rid]
            row.cells_for = {
                s: SERVICES_BY_ID[s].cells(cm) for s in self.resources[rid].services if s in offered
            }
            if self.resources[rid].retired:
                row.cells_for = {}

    def _on_clinic_registered(self, e: ClinicRegistered) -> None:
        self._install(clinic_from_record(e.clinic), [resource_from_record(r) for r in e.resources])

    def _fill(self, row: ResourceRow, day: int, first: int, n: int, value: int) -> None:
        """Set cells [first, first+n) of ``day`` to ``value``, keep the free count and record
        the change (the whole run, whatever it held)."""
        if self._row_copies:
            self._save_row(row)
        delta = row.fill(day, first, n, value)
        if delta:
            self._free[row.clinic][day] += delta
        self._changes.append((row.clinic, row.id, day, first, n, value))
        self._touch(row.clinic)
        self._starts.changed(row.clinic, day)

    def _write(self, row: ResourceRow, day: int, first: int, old: bytes, new: bytes | bytearray) -> None:
        """Write ``new`` over cells [first, first+len) of ``day`` (which held ``old``), keep the
        free count and record the changed runs."""
        if self._row_copies:
            self._save_row(row)
        delta = row.write(day, first, new)
        self._touch(row.clinic)
        self._starts.changed(row.clinic, day)
        if delta:
            free = self._free[row.clinic]
            free[day] = free.get(day, 0) + delta
        append = self._changes.append
        i, n = 0, len(new)
        while i < n:
            v = new[i]
            if v != old[i]:
                j = i + 1
                while j < n and new[j] == v and new[j] != old[j]:
                    j += 1
                append((row.clinic, row.id, day, first + i, j - i, v))
                i = j
            else:
                i += 1

    def _on_days_opened(self, e: DaysOpened) -> None:
        row = self._rows[e.resource]
        clinic = self.clinics[row.clinic]
        resource = self.resources[e.resource]
        if self._row_copies:
            self._save_row(row)
        row.cover(e.first_day, e.days)
        self._touch(row.clinic)
        self._starts.forget(row.clinic)
        closed_day = bytes(row.cpd)
        free, append = self._free[row.clinic], self._changes.append
        for day in range(e.first_day, e.first_day + e.days):
            free.setdefault(day, 0)
            mask = self._masks.of(clinic, day, resource)
            old = row.day(day)
            if old == closed_day:  # the usual case: a fresh day takes the mask as it is
                free[day] += row.write(day, 0, mask)
                opened = self._mask_runs.get(mask)
                if opened is None:
                    opened = self._mask_runs[mask] = runs(mask, FREE)
                for first, n in opened:
                    append((row.clinic, row.id, day, first, n, FREE))
                continue
            new = bytes(FREE if (s == CLOSED and m == FREE) else s for s, m in zip(old, mask, strict=True))
            if new != old:
                self._write(row, day, 0, old, new)

    def _on_hold_placed(self, e: HoldPlaced) -> None:
        self._fill(self._rows[e.resource], e.day, e.cell, e.cells, HELD)
        self._add_hold(
            Hold(e.hold_id, e.patient, e.clinic, e.resource, e.service, e.day, e.cell, e.cells, e.expires_at)
        )

    def _add_hold(self, hold: Hold) -> None:
        self.holds[hold.id] = hold
        self._hold_of[hold.patient] = hold.id
        heapq.heappush(self._hold_heap, (hold.expires_at, hold.id))

    def _on_hold_gone(self, e: HoldReleased | HoldExpired | OfferExpired) -> None:
        hold = self.holds.pop(e.hold_id)
        if self._hold_of.get(hold.patient) == hold.id:
            del self._hold_of[hold.patient]
        self._fill(self._rows[hold.resource], hold.day, hold.cell, hold.cells, FREE)
        if hold.offer:  # a missed or declined offer ends its entry; the time passes on
            self.waitlist.remove(hold.offer)
            if self.waitlist:
                self._freed.append((hold.resource, hold.day, hold.cell, hold.cells))

    def _on_booked(self, e: Booked) -> None:
        self._fill(self._rows[e.resource], e.day, e.cell, e.cells, BOOKED)
        if e.hold_id:
            hold = self.holds.pop(e.hold_id)
            if self._hold_of.get(hold.patient) == hold.id:
                del self._hold_of[hold.patient]
            if hold.offer:  # a confirmed offer ends its wait
                self.waitlist.remove(hold.offer)
        b = Booking(
            e.booking_id,
            e.patient,
            e.clinic,
            e.resource,
            e.service,
            e.day,
            e.cell,
            e.cells,
            BookingStatus.BOOKED,
            e.at,
        )
        row = self._bookings.add(b)
        if e.idempotency_key:
            self._bookings.remember(e.patient, e.idempotency_key, row, e.fingerprint)

    def _on_cancelled(self, e: Cancelled) -> None:
        store = self._bookings
        row = store.row(e.booking_id)
        store.set_status(row, BookingStatus.CANCELLED, e.at, e.by, e.reason)
        b = store.view(row)
        day, k = b.day, b.cells
        if e.buffer_until:
            self._fill(self._rows[b.resource], day, b.cell, k, BUFFER)
            self._add_window(b.resource, day, b.cell, k, e.buffer_until)
        else:
            self._fill(self._rows[b.resource], day, b.cell, k, FREE)
        if self.waitlist:
            self._freed.append((b.resource, day, b.cell, k))

    def _add_window(self, resource: str, day: int, cell: int, cells: int, until: int) -> None:
        """A BUFFER window over cells [cell, cell+cells) that ends at epoch second ``until``."""
        self._windows.setdefault((resource, day), []).append([cell, cells, until])
        heapq.heappush(self._buffer_heap, (until, resource, day, cell, cells))

    def _on_rescheduled(self, e: Rescheduled) -> None:
        store = self._bookings
        row = store.row(e.booking_id)
        b = store.view(row)
        k = b.cells
        self._fill(self._rows[b.resource], b.day, b.cell, k, FREE)
        if self.waitlist:
            self._freed.append((b.resource, b.day, b.cell, k))
        self._fill(self._rows[e.resource], e.day, e.cell, k, BOOKED)
        store.move(row, e.resource, e.day, e.cell)

    def _on_cells_blocked(self, e: CellsBlocked) -> None:
        row = self._rows[e.resource]
        old = row.cells(e.day, e.cell, e.cells)
        new = bytes(BLOCKED if s in (FREE, BUFFER) else s for s in old)
        if new != old:
            self._write(row, e.day, e.cell, old, new)

    def _on_cells_unblocked(self, e: CellsUnblocked) -> None:
        row = self._rows[e.resource]
        old = row.cells(e.day, e.cell, e.cells)
        if BLOCKED not in old:
            return
        mask = self._masks.of(self.clinics[row.clinic], e.day, self.resources[e.resource])
        mask = mask[e.cell : e.cell + e.cells]
        new = bytes(
            (FREE if m == FREE else CLOSED) if s == BLOCKED else s for s, m in zip(old, mask, strict=True)
        )
        self._write(row, e.day, e.cell, old, new)
        if self.waitlist:
            self._freed.append((e.resource, e.day, e.cell, e.cells))

    def _on_buffer_released(self, e: BufferReleased) -> None:
        windows = self._windows.get((e.resource, e.day), [])
        mine = [w for w in windows if w[0] == e.cell and w[1] == e.cells]
        if mine:
            windows.remove(min(mine, key=lambda w: w[2]))
        if not windows:
            self._windows.pop((e.resource, e.day), None)
        row = self._rows[e.resource]
        old = row.cells(e.day, e.cell, e.cells)
        new = bytearray(old)
        for i, s in enumerate(old):
            cell = e.cell + i
            # a later window still covering the cell keeps it BUFFER
            if s == BUFFER and not any(w[0] <= cell < w[0] + w[1] for w in windows):
                new[i] = FREE
        if new != old:
            self._write(row, e.day, e.cell, old, new)
            if self.waitlist:
                self._freed.append((e.resource, e.day, e.cell, e.cells))

    def _on_waitlist_joined(self, e: WaitlistJoined) -> None:
        waitlist = self.waitlist
        waitlist.seq += 1
        entry = WaitEntry(
            e.entry_id,
            e.patient,
            e.clinic,
            e.municipality,
            e.service,
            e.first_day,
            e.days,
            e.from_minute,
            e.to_minute,
            waitlist.seq,
            e.at,
        )
        waitlist.add(entry)
        # BUFFER time already waiting at a clinic this entry covers is offered at once
        for (resource, day), windows in sorted(self._windows.items()):
            row = self._rows[resource]
            if entry.covers(day) and (
                row.clinic == e.clinic
                or (not e.clinic and self.clinics[row.clinic].municipality == e.municipality)
            ):
                for cell, cells, _ in sorted(windows):
                    self._freed.append((resource, day, cell, cells))

    def _on_waitlist_left(self, e: WaitlistLeft) -> None:
        self.waitlist.remove(e.entry_id)

    def _on_offer_made(self, e: OfferMade) -> None:
        self._fill(self._rows[e.resource], e.day, e.cell, e.cells, HELD)  # FREE/BUFFER cells only
        self._add_hold(
            Hold(
                e.hold_id,
                e.patient,
                e.clinic,
                e.resource,
                e.service,
                e.day,
                e.cell,
                e.cells,
                e.expires_at,
                e.entry_id,
            )
        )
        entry = self.waitlist.entries.get(e.entry_id)
        if entry is not None:
            entry.offer = e.hold_id

    def _on_no_show(self, e: NoShowMarked) -> None:
        store = self._bookings
        store.set_status(store.row(e.booking_id), BookingStatus.NO_SHOW)

    # ------------------------------------------------------------------ snapshots (engine.snapshot)

    def to_snapshot(self) -> dict[str, Any]:
        """The whole state as msgpack-native data, canonical (sorted), so equal states pack to
        equal bytes. See ``engine.snapshot`` for the format."""
        return snapshot.encode(self)

    def capture_snapshot(self) -> Callable[[], dict[str, Any]]:
        """``to_snapshot`` in two steps: what changes in place is copied now; the returned
        function copies the rest (which only grows) as it was now and returns the snapshot —
        call it later, off the actor's turn, even in a worker thread while the state changes."""
        return snapshot.capture(self)

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> RegionState:
        """The state ``to_snapshot`` was taken of. ValueError for an unknown version."""
        return snapshot.decode(data, cls)
