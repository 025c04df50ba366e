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
            SetHours("AB-c1", {2: ((8 * 60, 12 * 60),)}, resource="AB-c1-r3"),
            SetDayHours("AB-c1", MONDAY + 3, ((13 * 60, 19 * 60),), resource="AB-c1-r3"),
            SetDayHours("AB-c1", MONDAY + 2, (), resource=R1),
            PutResource(Resource("AB-c1-r3", "AB-c1", ResourceKind.HYGIENIST, "Sara", ("cleaning",))),
            SetHours("AB-c1", NINE_TO_FIVE),
            SetDayHours("AB-c1", MONDAY + 4, ()),
            RetireResource(R2),
            SuspendClinic("AB-c1", True),
        ],
        now,
    )
    assert packed(replayed(events)) == packed(state)
    assert replayed_state_equal(state)


# ---------------------------------------------------------------------- a resource's own hours

HYG = "AB-c1-r3"
TUE_THU_MORNINGS = {2: ((8 * 60, 12 * 60),), 4: ((8 * 60, 12 * 60),)}


def with_hygienist(days: int = 5) -> tuple[RegionState, int]:
    """``world`` and a hygienist AB-c1-r3 opened on the same days (the clinic's hours)."""
    state, now = world(days=days)
    state.apply(
        PutResource(Resource(HYG, "AB-c1", ResourceKind.HYGIENIST, "Sara", ("cleaning", "checkup"))), now
    )
    state.apply(OpenDays(HYG, MONDAY, days), now)
    return state, now


def open_cells(state: RegionState, resource: str, day: int) -> set[int]:
    return {i for i, v in enumerate(state.row(resource, day)) if v == FREE}


def cells_between(a: tuple[int, int], *more: tuple[int, int]) -> set[int]:
    """The 15-minute cells of the (from hour, to hour) spans."""
    return {c for lo, hi in (a, *more) for c in range(cell(lo), cell(hi))}


def test_a_resource_with_its_own_week_is_open_only_then_and_the_others_keep_the_clinics() -> None:
    state, now = with_hygienist()
    state.take_changes()
    events = state.apply(SetHours("AB-c1", TUE_THU_MORNINGS, resource=HYG), now)
    assert events == [
        HoursSet("AB-c1", {str(d): [[480, 720]] if d in (2, 4) else [] for d in range(1, 8)}, MONDAY, HYG)
    ]
    assert open_cells(state, HYG, MONDAY) == set()
    assert open_cells(state, HYG, MONDAY + 1) == cells_between((8, 12))
    assert open_cells(state, HYG, MONDAY + 3) == cells_between((8, 12))
    assert open_cells(state, R1, MONDAY) == cells_between((8, 12), (13, 17))  # the clinic's hours
    assert {change[1] for change in state.take_changes()} == {HYG}  # screens see the hygienist's change
    assert state.clinics["AB-c1"].hours[1]  # the clinic's week is as it was
    assert replayed_state_equal(state)
    # the clinic's new week leaves the hygienist's own alone
    state.apply(SetHours("AB-c1", NINE_TO_FIVE), now)
    assert open_cells(state, HYG, MONDAY + 1) == cells_between((8, 12))
    assert open_cells(state, R1, MONDAY + 1) == cells_between((9, 17))
    # back to the clinic's week
    state.apply(SetHours("AB-c1", None, resource=HYG), now)
    assert state.resources[HYG].hours is None
    assert open_cells(state, HYG, MONDAY) == cells_between((9, 17))
    assert replayed_state_equal(state)


def test_a_resources_hours_refuse_with_its_bookings_outside_then_cancel_the_listed_ones() -> None:
    state, now = with_hygienist()
    book(state, "AB-b1", HYG, MONDAY, 9, now, "p1")  # Monday: outside Tue/Thu
    book(state, "AB-b2", HYG, MONDAY + 1, 13, now, "p2")  # Tuesday afternoon: outside
    book(state, "AB-b3", HYG, MONDAY + 1, 9, now, "p3")  # Tuesday morning: inside
    book(state, "AB-b4", R1, MONDAY, 9, now, "p4")  # another resource: never in the way
    state.apply(PlaceHold("AB-h1", "p5", HYG, "checkup", MONDAY + 2, cell(9)), now)  # Wednesday
    state.apply(PlaceHold("AB-h2", "p6", R2, "checkup", MONDAY + 2, cell(9)), now)
    error = refused(state, SetHours("AB-c1", TUE_THU_MORNINGS, resource=HYG), now)
    assert error.code is RefusalCode.HAS_BOOKINGS and error.bookings == ("AB-b1", "AB-b2")
    wrong = SetHours("AB-c1", TUE_THU_MORNINGS, ("AB-b1", "AB-b2", "AB-b4"), HYG)
    assert refused(state, wrong, now).code is RefusalCode.INVALID
    events = state.apply(SetHours("AB-c1", TUE_THU_MORNINGS, ("AB-b1", "AB-b2"), HYG), now)
    assert events[:3] == [
        HoldReleased("AB-h1"),
        Cancelled("AB-b1", "clinic", now, 0),
        Cancelled("AB-b2", "clinic", now, 0),
    ]
    assert set(state.holds) == {"AB-h2"}
    assert state.row(HYG, MONDAY + 1)[cell(9)] == BOOKED and state.row(R1, MONDAY)[cell(9)] == BOOKED
    assert state.row(HYG, MONDAY)[cell(9)] == CLOSED
    assert replayed_state_equal(state)


def test_resource_hours_refusals() -> None:
    state, now = with_hygienist()
    state.apply(RegisterClinic(make_clinic("AB-c2"), make_resources("AB-c2", n=1)), now)
    state.apply(RetireResource(R2), now)
    for command in (
        SetHours("AB-c1", TUE_THU_MORNINGS, resource="AB-c1-r9"),
        SetHours("AB-c1", TUE_THU_MORNINGS, resource="AB-c2-r1"),  # another clinic's
        SetDayHours("AB-c1", MONDAY + 1, (), resource="AB-c2-r1"),
    ):
        assert refused(state, command, now).code is RefusalCode.NOT_FOUND, command
    for command in (
        SetHours("AB-c1", TUE_THU_MORNINGS, resource=R2),  # retired
        SetHours("AB-c1", None),  # the clinic always has a week
        SetHours("AB-c1", {2: ((720, 480),)}, resource=HYG),
        SetHours("AB-c1", {0: ((480, 720),)}, resource=HYG),
        SetDayHours("AB-c1", MONDAY + 1, ((600, 540),), resource=HYG),
        SetDayHours("AB-c1", MONDAY + 1, (), resource=R2),
    ):
        assert refused(state, command, now).code is RefusalCode.INVALID, command
    later = epoch(MONDAY + 1, 7)
    assert refused(state, SetDayHours("AB-c1", MONDAY, (), resource=HYG), later).code is RefusalCode.IN_PAST


def test_a_resources_own_days_and_how_they_meet_the_clinics() -> None:
    state, now = with_hygienist()
    state.apply(SetHours("AB-c1", TUE_THU_MORNINGS, resource=HYG), now)
    # her leave on Tuesday; a late evening on Thursday
    assert state.apply(SetDayHours("AB-c1", MONDAY + 1, (), resource=HYG), now) == [
        DayHoursSet("AB-c1", MONDAY + 1, [], HYG)
    ]
    assert open_cells(state, HYG, MONDAY + 1) == set()
    assert open_cells(state, R1, MONDAY + 1) == cells_between((8, 12), (13, 17))  # the others work
    state.apply(SetDayHours("AB-c1", MONDAY + 3, ((13 * 60, 20 * 60),), resource=HYG), now)
    assert open_cells(state, HYG, MONDAY + 3) == cells_between((13, 20))
    # the clinic's late evening on Tuesday does not lengthen her week's Tuesday...
    state.apply(SetDayHours("AB-c1", MONDAY + 1, None, resource=HYG), now)
    state.apply(SetDayHours("AB-c1", MONDAY + 1, ((8 * 60, 20 * 60),)), now)
    assert open_cells(state, HYG, MONDAY + 1) == cells_between((8, 12))
    assert open_cells(state, R1, MONDAY + 1) == cells_between((8, 20))
    # ...a clinic's holiday closes it, and her own day beats the clinic's
    state.apply(SetDayHours("AB-c1", MONDAY + 3, ()), now)
    assert open_cells(state, R1, MONDAY + 3) == set()
    assert open_cells(state, HYG, MONDAY + 3) == cells_between((13, 20))
    state.apply(SetDayHours("AB-c1", MONDAY + 3, None, resource=HYG), now)
    assert open_cells(state, HYG, MONDAY + 3) == set()
    # a resource following the clinic's week may still have a day of its own
    state.apply(SetDayHours("AB-c1", MONDAY + 2, ((7 * 60, 9 * 60),), resource=R1), now)
    assert open_cells(state, R1, MONDAY + 2) == cells_between((7, 9))
    assert open_cells(state, R2, MONDAY + 2) == cells_between((8, 12), (13, 17))
    assert state.resources[R1].exceptions == {MONDAY + 2: ((7 * 60, 9 * 60),)}
    assert replayed_state_equal(state)


def test_a_resources_own_day_refuses_with_its_bookings_in_the_way() -> None:
    state, now = with_hygienist()
    book(state, "AB-b1", HYG, MONDAY + 2, 9, now, "p1")
    book(state, "AB-b2", R1, MONDAY + 2, 9, now, "p2")
    error = refused(state, SetDayHours("AB-c1", MONDAY + 2, (), resource=HYG), now)
    assert error.code is RefusalCode.HAS_BOOKINGS and error.bookings == ("AB-b1",)
    events = state.apply(SetDayHours("AB-c1", MONDAY + 2, (), ("AB-b1",), HYG), now)
    assert events == [Cancelled("AB-b1", "clinic", now, 0), DayHoursSet("AB-c1", MONDAY + 2, [], HYG)]
    assert state.row(R1, MONDAY + 2)[cell(9)] == BOOKED


def test_editing_a_resource_keeps_its_own_hours_and_a_new_one_comes_without() -> None:
    state, now = with_hygienist()
    state.apply(SetHours("AB-c1", TUE_THU_MORNINGS, resource=HYG), now)
    state.apply(SetDayHours("AB-c1", MONDAY + 1, (), resource=HYG), now)
    state.apply(PutResource(Resource(HYG, "AB-c1", ResourceKind.HYGIENIST, "Sara L", ("cleaning",))), now)
    res = state.resources[HYG]
    assert res.name == "Sara L" and res.hours is not None and res.hours[2] == ((480, 720),)
    assert res.exceptions == {MONDAY + 1: ()}
    with_hours = Resource("AB-c1-r4", "AB-c1", ResourceKind.HYGIENIST, "Ola", (), hours=TUE_THU_MORNINGS)
    assert refused(state, PutResource(with_hours), now).code is RefusalCode.INVALID
    assert replayed_state_equal(state)


def test_open_ahead_opens_each_resources_days_from_its_own_hours_also_across_dst() -> None:
    saturday = day_of(date(2027, 3, 27))  # clocks go forward on Sunday 2027-03-28 at 02:00
    state, now = world(first_day=saturday, days=1)
    state.apply(PutResource(Resource(HYG, "AB-c1", ResourceKind.HYGIENIST, "Sara", ("cleaning",))), now)
    state.apply(SetHours("AB-c1", {7: ((0, 24 * 60),), 2: ((8 * 60, 12 * 60),)}, resource=HYG), now)
    state.apply(EditClinic("AB-c1", open_ahead_days=7), now)
    events = state.apply(OpenAhead("AB", 400), now)
    assert DaysOpened(HYG, saturday, 8) in events
    sunday = state.row(HYG, saturday + 1)
    assert sunday[cell(1, 45)] == FREE and sunday[cell(2)] == CLOSED and sunday[cell(3)] == FREE
    assert sunday.count(FREE) == 92  # round the clock but the hour that does not exist
    assert open_cells(state, R1, saturday + 1) == set()  # the clinic is closed on Sundays
    assert open_cells(state, HYG, saturday + 2) == set()  # Monday: not hers
    assert open_cells(state, HYG, saturday + 3) == cells_between((8, 12))  # Tuesday
    assert open_cells(state, R1, saturday + 2) == cells_between((8, 12), (13, 17))
    assert replayed_state_equal(state)
