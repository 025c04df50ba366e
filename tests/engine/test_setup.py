"""Unit tests of engine.setup: clinic details, resources, hours, day exceptions and the
rolling horizon, each refusal by its exact code; every accepted step replays to the same state."""

from __future__ import annotations

from datetime import date

import pytest
from slot_world import MONDAY, cell, epoch, make_clinic, make_resources, packed, world

from engine.calendar import day_of
from engine.cells import BOOKED, CLOSED, FREE
from engine.commands import (
    Book,
    Command,
    EditClinic,
    OpenAhead,
    OpenDays,
    PlaceHold,
    PutResource,
    RegisterClinic,
    RetireResource,
    SetDayHours,
    SetHours,
    SuspendClinic,
)
from engine.errors import RefusalCode, Refused
from engine.events import (
    Cancelled,
    ClinicSuspended,
    DayHoursSet,
    DaysOpened,
    Event,
    HoldReleased,
    HoursSet,
    ResourceRetired,
)
from engine.model import ClinicKind, Resource, ResourceKind
from engine.records import BookingStatus
from engine.state import RegionState

R1, R2 = "AB-c1-r1", "AB-c1-r2"
NINE_TO_FIVE = {d: ((9 * 60, 17 * 60),) for d in range(1, 6)}


def replayed(events: list[Event]) -> RegionState:
    state = RegionState("AB")
    for e in events:
        state.evolve(e)
    return state


def refused(state: RegionState, command: Command, now: int) -> Refused:
    before = packed(state)
    state.take_changes()
    with pytest.raises(Refused) as info:
        state.apply(command, now)
    assert packed(state) == before and state.take_changes() == []
    return info.value


def book(
    state: RegionState, bid: str, resource: str, day: int, hh: int, now: int, patient: str = "p1"
) -> None:
    state.apply(Book(bid, patient, resource, "checkup", day, cell(hh)), now)


def journaled(commands: list[Command], now: int) -> tuple[RegionState, list[Event]]:
    """Apply ``commands`` to a fresh region, returning it and every event it journaled."""
    state = RegionState("AB")
    events: list[Event] = []
    for c in commands:
        events.extend(state.apply(c, now))
    return state, events


def base_commands(days: int = 5) -> list[Command]:
    return [
        RegisterClinic(make_clinic(), make_resources(n=2)),
        *(OpenDays(r, MONDAY, days) for r in (R1, R2)),
    ]


# ---------------------------------------------------------------------- clinic details


def test_edit_clinic_changes_only_what_is_given_and_refuses_bad_values() -> None:
    state, now = world()
    [event] = state.apply(EditClinic("AB-c1", name="Nya kliniken", max_bookings_per_patient=5), now)
    clinic = state.clinics["AB-c1"]
    assert (clinic.name, clinic.max_bookings_per_patient, clinic.address) == ("Nya kliniken", 5, "Gatan 1")
    assert state.apply(EditClinic("AB-c1", name="Nya kliniken"), now) == []  # nothing new
    assert refused(state, EditClinic("AB-c9", name="x"), now).code is RefusalCode.NOT_FOUND
    for bad in (
        EditClinic("AB-c1", name=" "),
        EditClinic("AB-c1", lat=91.0),
        EditClinic("AB-c1", cell_minutes=7),
        EditClinic("AB-c1", cell_minutes=10),  # days are opened
        EditClinic("AB-c1", services=("teeth_whitening",)),
        EditClinic("AB-c1", offer_minutes=0),
        EditClinic("AB-c1", max_bookings_per_patient=0),
        EditClinic("AB-c1", cancel_notice_hours=-1),
    ):
        assert refused(state, bad, now).code is RefusalCode.INVALID, bad
    state.apply(EditClinic("AB-c1", kind=ClinicKind.PRIVATE), now)
    assert replayed_state_equal(state)


def replayed_state_equal(state: RegionState) -> bool:
    """A snapshot round trip gives the same bytes (the setup fields survive snapshots)."""
    return packed(RegionState.from_snapshot(state.to_snapshot())) == packed(state)


def test_a_suspended_clinic_takes_no_new_holds_or_bookings_and_keeps_its_bookings() -> None:
    state, now = world()
    book(state, "AB-b1", R1, MONDAY + 1, 9, now)
    state.apply(PlaceHold("AB-h1", "p2", R1, "checkup", MONDAY + 1, cell(10), 300), now)
    assert state.apply(SuspendClinic("AB-c1", True), now) == [ClinicSuspended("AB-c1", True)]
    assert state.apply(SuspendClinic("AB-c1", True), now) == []  # already: nothing to journal
    assert state.clinics["AB-c1"].suspended and replayed_state_equal(state)
    for command in (
        PlaceHold("AB-h2", "p3", R1, "checkup", MONDAY + 1, cell(11), 300),
        Book("AB-b2", "p3", R2, "checkup", MONDAY + 1, cell(9)),
        Book("AB-b3", "p2", "", "checkup", 0, 0, hold_id="AB-h1"),  # a hold from before the suspension
    ):
        assert refused(state, command, now).code is RefusalCode.SUSPENDED, command
    assert refused(state, SuspendClinic("AB-c9", True), now).code is RefusalCode.NOT_FOUND
    booking = state.booking("AB-b1")
    assert booking is not None and booking.status is BookingStatus.BOOKED  # kept
    state.apply(SuspendClinic("AB-c1", False), now)
    book(state, "AB-b2", R2, MONDAY + 1, 9, now, patient="p3")
    assert not state.clinics["AB-c1"].suspended and replayed_state_equal(state)


# ---------------------------------------------------------------------- resources


def test_put_resource_adds_a_hygienist_who_can_be_booked_once_days_open() -> None:
    state, now = world()
    hyg = Resource("AB-c1-r9", "AB-c1", ResourceKind.HYGIENIST, "Hygienist Sara", ("cleaning",))
    state.apply(PutResource(hyg), now)
    assert state.resources_of("AB-c1")[-1] == hyg
    assert state.cells_needed("AB-c1-r9", "cleaning") == 3
    assert state.cells_needed("AB-c1-r9", "filling") is None
    state.apply(
        PutResource(Resource("AB-c1-r9", "AB-c1", ResourceKind.HYGIENIST, "Sara", ("cleaning", "checkup"))),
        now,
    )
    assert state.cells_needed("AB-c1-r9", "checkup") == 2
    assert state.resources["AB-c1-r9"].name == "Sara"


def test_put_resource_refusals() -> None:
    state, now = world()
    other = make_clinic("AB-c2")
    state.apply(RegisterClinic(other, ()), now)
    dentist = ResourceKind.DENTIST
    assert refused(state, PutResource(Resource("AB-c7-r1", "AB-c7", dentist, "X", ())), now).code is (
        RefusalCode.NOT_FOUND
    )
    for bad in (
        Resource("AB-c2-r1", "AB-c1", dentist, "X", ()),  # id not of its clinic
        Resource(R1, "AB-c2", dentist, "X", ()),  # wrong clinic's id prefix
        Resource("AB-c1-r5", "AB-c1", dentist, "  ", ()),
        Resource("AB-c1-r5", "AB-c1", dentist, "X", ("teeth_whitening",)),
        Resource("AB-c1-r5", "AB-c1", dentist, "X", (), retired=True),
    ):
        assert refused(state, PutResource(bad), now).code is RefusalCode.INVALID, bad


def test_retire_refuses_with_the_future_bookings_then_cancels_the_listed_ones() -> None:
    state, now = world()
    book(state, "AB-b1", R1, MONDAY + 1, 9, now, "p1")
    book(state, "AB-b2", R1, MONDAY + 2, 10, now, "p2")
    book(state, "AB-b3", R2, MONDAY + 1, 9, now, "p3")  # another resource: not in the way
    state.apply(PlaceHold("AB-h1", "p4", R1, "checkup", MONDAY + 3, cell(9)), now)
    error = refused(state, RetireResource(R1), now)
    assert error.code is RefusalCode.HAS_BOOKINGS and error.bookings == ("AB-b1", "AB-b2")
    assert refused(state, RetireResource(R1, ("AB-b1",)), now).bookings == ("AB-b2",)
    assert refused(state, RetireResource(R1, ("AB-b1", "AB-b2", "AB-b3")), now).code is RefusalCode.INVALID
    assert refused(state, RetireResource("AB-c1-r7"), now).code is RefusalCode.NOT_FOUND
    events = state.apply(RetireResource(R1, ("AB-b1", "AB-b2")), now)
    assert events == [
        HoldReleased("AB-h1"),
        Cancelled("AB-b1", "clinic", now, 0),
        Cancelled("AB-b2", "clinic", now, 0),
        ResourceRetired(R1, MONDAY),
    ]
    assert all(state.row(R1, d) == bytes(len(state.row(R1, d))) for d in range(MONDAY, MONDAY + 5))
    assert state.booking("AB-b1").status is BookingStatus.CANCELLED  # type: ignore[union-attr]
    assert state.booking("AB-b3").status is BookingStatus.BOOKED  # type: ignore[union-attr]
    assert refused(state, RetireResource(R1), now).code is RefusalCode.INVALID  # already retired
    hold = PlaceHold("AB-h2", "p5", R1, "checkup", MONDAY + 1, cell(9))
    assert refused(state, hold, now).code is RefusalCode.INVALID
    assert refused(state, OpenDays(R1, MONDAY + 5, 1), now).code is RefusalCode.INVALID
    # a later clinic edit does not give the retired resource its services back
    state.apply(EditClinic("AB-c1", name="Ny"), now)
    assert state.cells_needed(R1, "checkup") is None
    assert replayed_state_equal(state)


def test_retire_keeps_bookings_that_already_started() -> None:
    state, now = world()
    book(state, "AB-b1", R1, MONDAY, 9, now)
    later = epoch(MONDAY, 9, 30)
    assert state.apply(RetireResource(R1), later) == [ResourceRetired(R1, MONDAY)]
    assert state.row(R1, MONDAY)[cell(9)] == BOOKED


# ---------------------------------------------------------------------- weekly hours


def test_hours_change_without_bookings_reshapes_the_opened_days_at_once() -> None:
    state, now = world()
    state.take_changes()
    events = state.apply(SetHours("AB-c1", NINE_TO_FIVE), now)
    assert [type(e) for e in events] == [HoursSet]
    row = state.row(R1, MONDAY + 3)  # Thursday: was 8-12, 13-19
    assert row[cell(8)] == CLOSED and row[cell(12)] == FREE and row[cell(17)] == CLOSED
    assert row[cell(16, 45)] == FREE
    assert state.take_changes()  # every screen sees the new times
    assert state.clinics["AB-c1"].hours[6] == ()
    assert replayed_state_equal(state)


def test_hours_change_with_bookings_outside_is_refused_with_the_list_then_applied_with_cancel() -> None:
    state, now = world()
    book(state, "AB-b1", R1, MONDAY + 1, 8, now, "p1")  # 08:00: outside 9-17
    book(state, "AB-b2", R2, MONDAY + 3, 18, now, "p2")  # Thursday 18:00: outside
    book(state, "AB-b3", R1, MONDAY + 1, 10, now, "p3")  # inside
    error = refused(state, SetHours("AB-c1", NINE_TO_FIVE), now)
    assert error.code is RefusalCode.HAS_BOOKINGS and error.bookings == ("AB-b1", "AB-b2")
    assert refused(state, SetHours("AB-c1", NINE_TO_FIVE, ("AB-b1", "AB-b3")), now).bookings == ("AB-b2",)
    assert refused(state, SetHours("AB-c1", NINE_TO_FIVE, ("AB-b1", "AB-b2", "AB-b3")), now).code is (
        RefusalCode.INVALID
    )
    events = state.apply(SetHours("AB-c1", NINE_TO_FIVE, ("AB-b1", "AB-b2")), now)
    assert events[:2] == [Cancelled("AB-b1", "clinic", now, 0), Cancelled("AB-b2", "clinic", now, 0)]
    assert state.row(R1, MONDAY + 1)[cell(8)] == CLOSED
    assert state.row(R1, MONDAY + 1)[cell(10)] == BOOKED
    assert replayed_state_equal(state)


def test_hours_refusals() -> None:
    state, now = world()
    assert refused(state, SetHours("AB-c9", NINE_TO_FIVE), now).code is RefusalCode.NOT_FOUND
    for hours in (
        {8: ((60, 120),)},
        {1: ((120, 60),)},
        {1: ((60, 180), (120, 240))},
        {1: ((0, 24 * 60 + 1),)},
    ):
        assert refused(state, SetHours("AB-c1", hours), now).code is RefusalCode.INVALID, hours


def test_a_booking_in_the_past_never_blocks_an_hours_change() -> None:
    state, now = world()
    book(state, "AB-b1", R1, MONDAY, 8, now)
    later = epoch(MONDAY, 10)
    assert [type(e) for e in state.apply(SetHours("AB-c1", NINE_TO_FIVE), later)] == [HoursSet]
    assert state.row(R1, MONDAY)[cell(8)] == BOOKED


# ---------------------------------------------------------------------- day exceptions


def test_a_holiday_and_a_late_evening() -> None:
    state, now = world()
    assert state.apply(SetDayHours("AB-c1", MONDAY + 2, ()), now) == [DayHoursSet("AB-c1", MONDAY + 2, [])]
    assert FREE not in state.row(R1, MONDAY + 2) and FREE not in state.row(R2, MONDAY + 2)
    assert state.free_count("AB-c1", MONDAY + 2) == 0
    state.apply(SetDayHours("AB-c1", MONDAY + 1, ((8 * 60, 21 * 60),)), now)
    assert state.row(R1, MONDAY + 1)[cell(20, 45)] == FREE and state.row(R1, MONDAY + 1)[cell(12)] == FREE
    state.apply(SetDayHours("AB-c1", MONDAY + 2, None), now)  # back to the week's hours
    assert state.row(R1, MONDAY + 2)[cell(9)] == FREE
    assert replayed_state_equal(state)


def test_day_exception_refusals() -> None:
    state, now = world()
    book(state, "AB-b1", R1, MONDAY + 2, 9, now)
    now = epoch(MONDAY + 1, 7)
    assert refused(state, SetDayHours("AB-c1", MONDAY, ()), now).code is RefusalCode.IN_PAST
    assert refused(state, SetDayHours("AB-c9", MONDAY + 2, ()), now).code is RefusalCode.NOT_FOUND
    assert refused(state, SetDayHours("AB-c1", MONDAY + 2, ((600, 500),)), now).code is RefusalCode.INVALID
    error = refused(state, SetDayHours("AB-c1", MONDAY + 2, ()), now)
    assert error.code is RefusalCode.HAS_BOOKINGS and error.bookings == ("AB-b1",)
    events = state.apply(SetDayHours("AB-c1", MONDAY + 2, (), ("AB-b1",)), now)
    assert events == [Cancelled("AB-b1", "clinic", now, 0), DayHoursSet("AB-c1", MONDAY + 2, [])]


# ---------------------------------------------------------------------- the rolling horizon


def test_open_ahead_opens_the_missing_days_from_the_hours_and_only_for_clinics_that_ask() -> None:
    state, now = world(days=3)
    assert state.apply(OpenAhead("AB", 400), now) == []  # open_ahead_days 0: by hand
    state.apply(EditClinic("AB-c1", open_ahead_days=14), now)
    events = state.apply(OpenAhead("AB", 400), now)
    assert events == [DaysOpened(R1, MONDAY + 3, 12), DaysOpened(R2, MONDAY + 3, 12)]
    assert state.apply(OpenAhead("AB", 400), now) == []  # idempotent
    tomorrow = epoch(MONDAY + 1, 0, 5)
    assert state.apply(OpenAhead("AB", 400), tomorrow) == [
        DaysOpened(R1, MONDAY + 15, 1),
        DaysOpened(R2, MONDAY + 15, 1),
    ]
    assert state.apply(OpenAhead("AB", 5), tomorrow) == []  # the server's horizon bounds it
    assert refused(state, OpenAhead("C", 400), now).code is RefusalCode.INVALID
    assert refused(state, OpenAhead("AB", 400, "AB-c9"), now).code is RefusalCode.NOT_FOUND


def test_open_ahead_across_the_spring_dst_change_never_opens_the_missing_hour() -> None:
    saturday = day_of(date(2027, 3, 27))  # clocks go forward on Sunday 2027-03-28 at 02:00
    state, now = world(first_day=saturday, days=1)
    state.apply(EditClinic("AB-c1", open_ahead_days=3), now)
    state.apply(SetDayHours("AB-c1", saturday + 1, ((0, 24 * 60),)), now)  # open round the clock on Sunday
    state.apply(OpenAhead("AB", 400), now)
    sunday = state.row(R1, saturday + 1)
    assert sunday[cell(1, 45)] == FREE and sunday[cell(2)] == CLOSED and sunday[cell(2, 45)] == CLOSED
    assert sunday[cell(3)] == FREE
    assert state.row(R1, saturday + 2)[cell(9)] == FREE  # Monday opened from the week's hours
    autumn = day_of(date(2027, 10, 31))  # clocks go back: 02:00-02:59 twice, each cell once
    state2, now2 = world(first_day=autumn - 1, days=1)
    state2.apply(EditClinic("AB-c1", open_ahead_days=2), now2)
    state2.apply(SetDayHours("AB-c1", autumn, ((0, 24 * 60),)), now2)
    state2.apply(OpenAhead("AB", 400), now2)
    assert state2.row(R1, autumn).count(FREE) == 96


# ---------------------------------------------------------------------- replay


def test_replaying_the_journal_of_every_setup_command_gives_the_same_state() -> None:
    now = epoch(MONDAY, 0)
    hyg = Resource("AB-c1-r3", "AB-c1", ResourceKind.HYGIENIST, "Hygienist", ("cleaning",))
    state, events = journaled(
        [
            *base_commands(),
            Book("AB-b1", "p1", R1, "checkup", MONDAY + 1, cell(8)),
            EditClinic("AB-c1", name="Ny", open_ahead_days=10, phone="08-123"),
            PutResource(hyg),
            OpenAhead("AB", 400),
            SetHours("AB-c1", NINE_TO_FIVE, ("AB-b1",)),
            SetDayHours("AB-c1", MONDAY + 4, ((9 * 60, 20 * 60),)),
            RetireResource(R2),
            SuspendClinic("AB-c1", True),
        ],
        now,
    )
    assert packed(replayed(events)) == packed(state)
    assert replayed_state_equal(state)
