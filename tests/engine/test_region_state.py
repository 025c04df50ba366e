"""Unit tests: engine.state.RegionState — every command's success and every refusal (no network)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from slot_world import MONDAY, cell, epoch, make_clinic, make_resources, packed, world

from engine.calendar import cell_epoch, day_of, iso, nonexistent_cells
from engine.cells import BLOCKED, BOOKED, BUFFER, CLOSED, FREE, HELD
from engine.commands import (
    Block,
    Book,
    Cancel,
    Command,
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
    HoldExpired,
    HoldPlaced,
    HoldReleased,
    Rescheduled,
)
from engine.state import RegionState

R1, R2 = "AB-c1-r1", "AB-c1-r2"
NINE = cell(9)


def refuse(state: RegionState, command: Command, now: int, code: RefusalCode) -> None:
    """The command is refused with ``code`` and changes nothing at all."""
    state.take_changes()
    before = packed(state)
    with pytest.raises(Refused) as info:
        state.apply(command, now)
    assert info.value.code == code, info.value
    assert packed(state) == before
    assert state.take_changes() == []


def cells_of(state: RegionState, resource: str, day: int, first: int, n: int) -> bytes:
    return state.row(resource, day)[first : first + n]


# ---------------------------------------------------------------- RegisterClinic / OpenDays


def test_register_and_open() -> None:
    state, now = world(days=5)
    assert set(state.clinics) == {"AB-c1"} and set(state.resources) == {R1, R2}
    row = state.row(R1, MONDAY)
    assert row[cell(8) : cell(12)] == bytes([FREE]) * 16
    assert row[cell(12) : cell(13)] == bytes([CLOSED]) * 4  # lunch
    assert row[cell(17) :] == bytes([CLOSED]) * (96 - cell(17))
    assert state.free_count("AB-c1", MONDAY) == 2 * 32  # two resources, 8 h each
    saturday = MONDAY + 5
    assert state.row(R1, saturday) == bytes(96)  # not opened: CLOSED
    changes = state.take_changes()
    assert ("AB-c1", R1, MONDAY, cell(8), 16, FREE) in changes


def test_register_replaces_details_and_keeps_rows() -> None:
    state, now = world()
    row_before = state.row(R1, MONDAY)
    events = state.apply(
        RegisterClinic(make_clinic(name="Nytt namn", buffer_minutes=30), make_resources(n=3)), now
    )
    assert isinstance(events[0], ClinicRegistered)
    assert state.clinics["AB-c1"].name == "Nytt namn"
    assert state.row(R1, MONDAY) == row_before
    assert state.row("AB-c1-r3", MONDAY) == bytes(96)
    assert [r.id for r in state.resources_of("AB-c1")] == [R1, R2, "AB-c1-r3"]


def test_register_refusals() -> None:
    state, now = world()
    refuse(state, RegisterClinic(make_clinic("O-c1", region="O"), ()), now, RefusalCode.INVALID)
    refuse(state, RegisterClinic(make_clinic(cell_minutes=7), ()), now, RefusalCode.INVALID)
    refuse(state, RegisterClinic(make_clinic(cell_minutes=30), ()), now, RefusalCode.INVALID)  # days opened
    refuse(state, RegisterClinic(make_clinic(services=("whitening",)), ()), now, RefusalCode.INVALID)
    refuse(state, RegisterClinic(make_clinic("AB-c2"), make_resources("AB-c1")), now, RefusalCode.INVALID)


def test_open_refusals_and_idempotence() -> None:
    state, now = world()
    refuse(state, OpenDays("AB-nope", MONDAY, 1), now, RefusalCode.NOT_FOUND)
    refuse(state, OpenDays(R1, MONDAY - 1, 3), now, RefusalCode.IN_PAST)
    refuse(state, OpenDays(R1, MONDAY, 0), now, RefusalCode.INVALID)
    before = state.row(R1, MONDAY)
    state.take_changes()
    assert state.apply(OpenDays(R1, MONDAY, 2), now) == [DaysOpened(R1, MONDAY, 2)]
    assert state.row(R1, MONDAY) == before and state.take_changes() == []


def test_open_grows_row_at_both_ends() -> None:
    state, now = world(first_day=MONDAY + 7, days=1, now=epoch(MONDAY, 0))
    state.apply(OpenDays(R1, MONDAY, 1), now)
    state.apply(OpenDays(R1, MONDAY + 14, 1), now)
    for d in (MONDAY, MONDAY + 7, MONDAY + 14):
        assert state.row(R1, d)[cell(8)] == FREE
    assert state.row(R1, MONDAY + 1) == bytes(96)
    assert state.resource_row(R1).days == 15


# ---------------------------------------------------------------- holds


def test_place_hold_and_release() -> None:
    state, now = world()
    events = state.apply(PlaceHold("AB-h1", "p1", R1, "checkup", MONDAY, NINE, ttl_s=300), now)
    assert events == [HoldPlaced("AB-h1", "p1", "AB-c1", R1, "checkup", MONDAY, NINE, 2, now + 300)]
    assert cells_of(state, R1, MONDAY, NINE, 3) == bytes([HELD, HELD, FREE])
    assert state.free_count("AB-c1", MONDAY) == 64 - 2
    assert state.next_deadline() == now + 300
    assert state.apply(ReleaseHold("AB-h1", "p1"), now) == [HoldReleased("AB-h1")]
    assert cells_of(state, R1, MONDAY, NINE, 2) == bytes([FREE, FREE])
    assert state.free_count("AB-c1", MONDAY) == 64 and not state.holds
    assert state.next_deadline() is None


def test_new_hold_at_same_clinic_replaces_old_even_overlapping() -> None:
    state, now = world()
    state.apply(PlaceHold("AB-h1", "p1", R1, "filling", MONDAY, NINE), now)
    events = state.apply(PlaceHold("AB-h2", "p1", R1, "filling", MONDAY, NINE + 1), now)
    assert [type(e) for e in events] == [HoldReleased, HoldPlaced]
    assert cells_of(state, R1, MONDAY, NINE, 6) == bytes([FREE, HELD, HELD, HELD, HELD, FREE])
    assert set(state.holds) == {"AB-h2"}
    assert state.free_count("AB-c1", MONDAY) == 64 - 4


def test_hold_refusals() -> None:
    state, now = world(n=2)
    state.apply(
        RegisterClinic(
            make_clinic(), make_resources(n=2) + (replace(make_resources(n=3)[2], services=("cleaning",)),)
        ),
        now,
    )
    state.apply(OpenDays("AB-c1-r3", MONDAY, 1), now)
    state.apply(PlaceHold("AB-h1", "p1", R1, "checkup", MONDAY, NINE), now)
    refuse(state, PlaceHold("AB-h2", "p2", "AB-zz", "checkup", MONDAY, NINE), now, RefusalCode.NOT_FOUND)
    refuse(state, PlaceHold("AB-h2", "p2", "AB-c1-r3", "checkup", MONDAY, NINE), now, RefusalCode.INVALID)
    refuse(state, PlaceHold("AB-h2", "p2", R1, "nonsense", MONDAY, NINE), now, RefusalCode.INVALID)
    refuse(
        state, PlaceHold("AB-h1", "p2", R2, "checkup", MONDAY, NINE), now, RefusalCode.INVALID
    )  # id in use
    refuse(state, PlaceHold("AB-h2", "p2", R1, "checkup", MONDAY, NINE + 1), now, RefusalCode.SLOT_TAKEN)
    refuse(
        state, PlaceHold("AB-h2", "p2", R1, "checkup", MONDAY, cell(7, 45)), now, RefusalCode.OUTSIDE_HOURS
    )
    refuse(state, PlaceHold("AB-h2", "p2", R1, "checkup", MONDAY, 95), now, RefusalCode.OUTSIDE_HOURS)
    refuse(state, PlaceHold("AB-h2", "p2", R1, "checkup", MONDAY + 30, NINE), now, RefusalCode.OUTSIDE_HOURS)
    refuse(
        state, PlaceHold("AB-h2", "p2", R1, "checkup", MONDAY, NINE), epoch(MONDAY, 10), RefusalCode.IN_PAST
    )
    refuse(state, ReleaseHold("AB-nope", "p1"), now, RefusalCode.NOT_FOUND)
    refuse(state, ReleaseHold("AB-h1", "p2"), now, RefusalCode.NOT_YOURS)


def test_filling_needs_four_free_cells() -> None:
    state, now = world()
    state.apply(Block(R1, MONDAY, NINE + 3, 1), now)
    refuse(state, Book("AB-b1", "p1", R1, "filling", MONDAY, NINE), now, RefusalCode.SLOT_TAKEN)
    state.apply(Book("AB-b1", "p1", R1, "filling", MONDAY, NINE - 1), now)
    assert cells_of(state, R1, MONDAY, NINE - 1, 5) == bytes([BOOKED] * 4 + [BLOCKED])
    assert state.booking("AB-b1").cells == 4


def test_booking_across_lunch_and_longer_than_opening() -> None:
    state, now = world(
        hours={d: ((8 * 60, 12 * 60), (13 * 60, 17 * 60)) for d in range(1, 6)}
        | {6: ((10 * 60, 10 * 60 + 30),), 7: ()}
    )
    # 11:30 + 60 minutes runs into the lunch break
    refuse(state, Book("AB-b1", "p1", R1, "filling", MONDAY, cell(11, 30)), now, RefusalCode.OUTSIDE_HOURS)
    state.apply(OpenDays(R1, MONDAY + 5, 1), now)  # Saturday: open 30 minutes only
    refuse(state, Book("AB-b1", "p1", R1, "cleaning", MONDAY + 5, cell(10)), now, RefusalCode.OUTSIDE_HOURS)
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY + 5, cell(10)), now)


# ---------------------------------------------------------------- Book


def test_book_direct() -> None:
    state, now = world()
    events = state.apply(Book("AB-b1", "p1", R1, "cleaning", MONDAY, NINE), now)
    assert events == [Booked("AB-b1", "p1", "AB-c1", R1, "cleaning", MONDAY, NINE, 3, now, "", "", "")]
    assert cells_of(state, R1, MONDAY, NINE, 3) == bytes([BOOKED] * 3)
    b = state.booking("AB-b1")
    assert (b.status, b.booked_at, b.cells) == ("booked", now, 3)
    assert state.bookings_of("p1") == [b]
    assert state.bookings_on("AB-c1", MONDAY) == [b]
    assert state.free_count("AB-c1", MONDAY) == 61
    assert state.take_changes()[-1] == ("AB-c1", R1, MONDAY, NINE, 3, BOOKED)


def test_book_from_hold() -> None:
    state, now = world()
    state.apply(PlaceHold("AB-h1", "p1", R1, "checkup", MONDAY, NINE, ttl_s=60), now)
    events = state.apply(Book("AB-b1", "p1", hold_id="AB-h1"), now + 59)
    assert events == [
        Booked("AB-b1", "p1", "AB-c1", R1, "checkup", MONDAY, NINE, 2, now + 59, "AB-h1", "", "")
    ]
    assert cells_of(state, R1, MONDAY, NINE, 2) == bytes([BOOKED] * 2)
    assert not state.holds and state.free_count("AB-c1", MONDAY) == 62
    assert state.next_deadline() is None  # the booked hold no longer expires


def test_book_refusals() -> None:
    state, now = world(max_bookings_per_patient=1)
    state.apply(PlaceHold("AB-h1", "p1", R1, "checkup", MONDAY, NINE, ttl_s=60), now)
    refuse(state, Book("AB-b1", "p1", hold_id="AB-nope"), now, RefusalCode.NOT_FOUND)
    refuse(state, Book("AB-b1", "p2", hold_id="AB-h1"), now, RefusalCode.NOT_YOURS)
    refuse(state, Book("AB-b1", "p1", hold_id="AB-h1"), now + 60, RefusalCode.HOLD_EXPIRED)
    refuse(state, Book("AB-b1", "p2", R1, "checkup", MONDAY, NINE), now, RefusalCode.SLOT_TAKEN)
    refuse(state, Book("AB-b1", "p2", "AB-zz", "checkup", MONDAY, NINE), now, RefusalCode.NOT_FOUND)
    refuse(state, Book("AB-b1", "p2", R1, "root_canal", MONDAY, NINE), now, RefusalCode.INVALID)
    refuse(state, Book("AB-b1", "p2", R1, "checkup", MONDAY, cell(12)), now, RefusalCode.OUTSIDE_HOURS)
    refuse(
        state, Book("AB-b1", "p2", R1, "checkup", MONDAY, cell(8)), epoch(MONDAY, 8, 1), RefusalCode.IN_PAST
    )
    state.apply(Book("AB-b1", "p2", R2, "checkup", MONDAY, NINE), now)
    refuse(state, Book("AB-b1", "p3", R2, "checkup", MONDAY, cell(10)), now, RefusalCode.INVALID)  # id in use
    refuse(state, Book("AB-b2", "p2", R2, "checkup", MONDAY, cell(10)), now, RefusalCode.LIMIT_REACHED)
    # a past booking no longer counts towards the limit
    state.apply(Book("AB-b2", "p2", R2, "checkup", MONDAY, cell(10)), epoch(MONDAY, 9, 15))


def test_idempotent_book() -> None:
    state, now = world()
    cmd = Book("AB-b1", "p1", R1, "checkup", MONDAY, NINE, idempotency_key="k1", fingerprint="f1")
    assert len(state.apply(cmd, now)) == 1
    before = packed(state)
    state.take_changes()
    assert state.apply(replace(cmd, booking_id="AB-b9"), now + 5) == []  # a retry: nothing new
    assert packed(state) == before and state.take_changes() == []
    assert state.idempotent_booking("p1", "k1") == state.booking("AB-b1")
    assert state.idempotent_booking("p2", "k1") is None
    refuse(state, replace(cmd, booking_id="AB-b9", fingerprint="f2"), now, RefusalCode.INVALID)


# ---------------------------------------------------------------- Cancel


def test_cancel_by_patient_frees() -> None:
    state, now = world(first_day=MONDAY, now=epoch(MONDAY - 2, 9))
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY, NINE), now)
    events = state.apply(Cancel("AB-b1", Party.PATIENT, "p1"), now + 10)
    assert events == [Cancelled("AB-b1", "patient", now + 10, 0)]
    b = state.booking("AB-b1")
    assert (b.status, b.cancelled_at, b.cancelled_by) == ("cancelled", now + 10, "patient")
    assert cells_of(state, R1, MONDAY, NINE, 2) == bytes([FREE] * 2)
    assert state.free_count("AB-c1", MONDAY) == 64


@pytest.mark.parametrize("by, requester", [(Party.CLINIC, "AB-c1"), (Party.ADMIN, "admin-1")])
def test_cancel_by_clinic_or_admin_buffers_then_frees(by: Party, requester: str) -> None:
    state, now = world(buffer_minutes=10)
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY, NINE), now)
    events = state.apply(Cancel("AB-b1", by, requester), now)
    assert events == [Cancelled("AB-b1", str(by), now, now + 600)]
    assert cells_of(state, R1, MONDAY, NINE, 2) == bytes([BUFFER] * 2)
    assert state.free_count("AB-c1", MONDAY) == 62
    assert state.next_deadline() == now + 600
    assert state.apply(Tick(), now + 599) == []
    assert state.apply(Tick(), now + 600) == [BufferReleased(R1, MONDAY, NINE, 2)]
    assert cells_of(state, R1, MONDAY, NINE, 2) == bytes([FREE] * 2)
    assert state.free_count("AB-c1", MONDAY) == 64 and state.next_deadline() is None


@pytest.mark.parametrize("by, requester", [(Party.CLINIC, "AB-c1"), (Party.ADMIN, "admin-1")])
def test_a_clinic_or_admin_cancel_carries_its_reason_to_the_booking(by: Party, requester: str) -> None:
    state, now = world(buffer_minutes=0)
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY, NINE), now)
    state.apply(Book("AB-b2", "p1", R1, "checkup", MONDAY, cell(10)), now)
    reason = "Tandläkaren är sjuk – ring 08-123 45 för en ny tid"
    assert state.apply(Cancel("AB-b1", by, requester, reason), now) == [
        Cancelled("AB-b1", str(by), now, 0, reason)
    ]
    state.apply(Cancel("AB-b2", by, requester), now)
    assert state.booking("AB-b1").cancel_reason == reason
    assert state.booking("AB-b2").cancel_reason == ""
    assert [b.cancel_reason for b in state.bookings_of("p1")] == [reason, ""]  # by start
    assert state.booking("AB-b1").to_dict()["cancel_reason"] == reason


def test_cancel_refusals() -> None:
    state, now = world(first_day=MONDAY, now=epoch(MONDAY - 2, 9), cancel_notice_hours=24)
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY, NINE), now)
    refuse(state, Cancel("AB-nope", Party.PATIENT, "p1"), now, RefusalCode.NOT_FOUND)
    refuse(state, Cancel("AB-b1", Party.PATIENT, "p2"), now, RefusalCode.NOT_YOURS)
    refuse(state, Cancel("AB-b1", Party.CLINIC, "AB-c2"), now, RefusalCode.NOT_FOUND)
    refuse(state, Cancel("AB-b1", Party.PATIENT, "p1"), epoch(MONDAY - 1, 9, 1), RefusalCode.TOO_LATE)
    refuse(state, Cancel("AB-b1", Party.PATIENT, "p1", "I am ill"), now, RefusalCode.INVALID)  # no reason
    state.apply(Cancel("AB-b1", Party.CLINIC, "AB-c1"), epoch(MONDAY, 8))  # the clinic is never late
    refuse(state, Cancel("AB-b1", Party.ADMIN, "admin"), now, RefusalCode.INVALID)


# ---------------------------------------------------------------- Reschedule


def test_reschedule_to_other_resource_and_day() -> None:
    state, now = world()
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY + 2, NINE), now)
    events = state.apply(Reschedule("AB-b1", "p1", R2, MONDAY + 3, cell(14)), now)
    assert events == [Rescheduled("AB-b1", R2, MONDAY + 3, cell(14), now, R1, MONDAY + 2, NINE)]
    assert cells_of(state, R1, MONDAY + 2, NINE, 2) == bytes([FREE] * 2)
    assert cells_of(state, R2, MONDAY + 3, cell(14), 2) == bytes([BOOKED] * 2)
    b = state.booking("AB-b1")
    assert (b.resource, b.day, b.cell) == (R2, MONDAY + 3, cell(14))
    assert state.bookings_on("AB-c1", MONDAY + 2) == [] and state.bookings_on("AB-c1", MONDAY + 3) == [b]
    assert state.take_changes()[-2:] == [
        ("AB-c1", R1, MONDAY + 2, NINE, 2, FREE),
        ("AB-c1", R2, MONDAY + 3, cell(14), 2, BOOKED),
    ]


def test_reschedule_overlapping_own_cells() -> None:
    state, now = world()
    state.apply(Book("AB-b1", "p1", R1, "filling", MONDAY + 2, NINE), now)
    state.apply(Reschedule("AB-b1", "p1", R1, MONDAY + 2, NINE + 2), now)
    assert cells_of(state, R1, MONDAY + 2, NINE, 7) == bytes([FREE] * 2 + [BOOKED] * 4 + [FREE])
    assert state.free_count("AB-c1", MONDAY + 2) == 60


def test_reschedule_refusals() -> None:
    state, now = world(cancel_notice_hours=24)
    state.apply(RegisterClinic(make_clinic("AB-c2"), make_resources("AB-c2", n=1)), now)
    state.apply(OpenDays("AB-c2-r1", MONDAY, 5), now)
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY + 2, NINE), now)
    state.apply(Book("AB-b2", "p2", R2, "checkup", MONDAY + 3, NINE), now)
    state.apply(Book("AB-b3", "p3", R2, "checkup", MONDAY, NINE), now)
    refuse(state, Reschedule("AB-nope", "p1", R1, MONDAY + 3, NINE), now, RefusalCode.NOT_FOUND)
    refuse(state, Reschedule("AB-b1", "p2", R1, MONDAY + 3, NINE), now, RefusalCode.NOT_YOURS)
    refuse(state, Reschedule("AB-b1", "p1", "AB-zz", MONDAY + 3, NINE), now, RefusalCode.NOT_FOUND)
    refuse(state, Reschedule("AB-b1", "p1", "AB-c2-r1", MONDAY + 3, NINE), now, RefusalCode.INVALID)
    refuse(state, Reschedule("AB-b1", "p1", R2, MONDAY + 3, NINE + 1), now, RefusalCode.SLOT_TAKEN)
    refuse(state, Reschedule("AB-b1", "p1", R2, MONDAY + 3, cell(12)), now, RefusalCode.OUTSIDE_HOURS)
    refuse(state, Reschedule("AB-b3", "p3", R2, MONDAY + 3, cell(14)), now, RefusalCode.TOO_LATE)
    refuse(state, Reschedule("AB-b1", "p1", R2, MONDAY, NINE + 4), epoch(MONDAY, 10, 1), RefusalCode.IN_PAST)
    state.apply(Cancel("AB-b1", Party.CLINIC, "AB-c1"), now)
    refuse(state, Reschedule("AB-b1", "p1", R2, MONDAY + 3, cell(14)), now, RefusalCode.INVALID)


# ---------------------------------------------------------------- Block / Unblock


def test_block_and_unblock() -> None:
    state, now = world(buffer_minutes=10)
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY, cell(11)), now)
    state.apply(Cancel("AB-b1", Party.CLINIC, "AB-c1"), now)  # 11:00-11:30 BUFFER
    state.take_changes()
    events = state.apply(Block(R1, MONDAY, cell(10, 30), 8), now)  # 10:30-12:30 crosses lunch
    assert events == [CellsBlocked(R1, MONDAY, cell(10, 30), 8)]
    assert cells_of(state, R1, MONDAY, cell(10, 30), 8) == bytes([BLOCKED] * 6 + [CLOSED] * 2)
    assert state.free_count("AB-c1", MONDAY) == 64 - 2 - 4  # 2 were BUFFER, not FREE
    assert state.take_changes() == [("AB-c1", R1, MONDAY, cell(10, 30), 6, BLOCKED)]
    assert state.apply(Tick(), now + 600) == [BufferReleased(R1, MONDAY, cell(11), 2)]
    assert cells_of(state, R1, MONDAY, cell(11), 2) == bytes([BLOCKED] * 2)  # stays blocked
    events = state.apply(Unblock(R1, MONDAY, cell(10), 12), now)
    assert events == [CellsUnblocked(R1, MONDAY, cell(10), 12)]
    assert cells_of(state, R1, MONDAY, cell(10, 30), 8) == bytes([FREE] * 6 + [CLOSED] * 2)
    assert state.free_count("AB-c1", MONDAY) == 64


def test_unblock_outside_hours_closes_and_leaves_others() -> None:
    state, now = world()
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY, NINE), now)
    state.apply(Block(R1, MONDAY, NINE + 2, 2), now)
    state.apply(Unblock(R1, MONDAY, NINE, 4), now)
    assert cells_of(state, R1, MONDAY, NINE, 4) == bytes([BOOKED, BOOKED, FREE, FREE])


def test_block_refusals() -> None:
    state, now = world()
    state.apply(PlaceHold("AB-h1", "p1", R1, "checkup", MONDAY, NINE), now)
    refuse(state, Block("AB-zz", MONDAY, NINE, 1), now, RefusalCode.NOT_FOUND)
    refuse(state, Block(R1, MONDAY, NINE, 0), now, RefusalCode.INVALID)
    refuse(state, Block(R1, MONDAY, 94, 4), now, RefusalCode.OUTSIDE_HOURS)
    refuse(state, Block(R1, MONDAY + 40, NINE, 1), now, RefusalCode.OUTSIDE_HOURS)
    refuse(state, Block(R1, MONDAY, NINE - 1, 2), now, RefusalCode.SLOT_TAKEN)
    refuse(state, Block(R1, MONDAY, cell(8), 2), epoch(MONDAY, 8, 15), RefusalCode.IN_PAST)
    refuse(state, Unblock("AB-zz", MONDAY, NINE, 1), now, RefusalCode.NOT_FOUND)
    refuse(state, Unblock(R1, MONDAY, NINE, -1), now, RefusalCode.INVALID)
    refuse(state, Unblock(R1, MONDAY, 95, 2), now, RefusalCode.OUTSIDE_HOURS)


# ---------------------------------------------------------------- Tick


def test_tick_expires_holds() -> None:
    state, now = world()
    state.apply(PlaceHold("AB-h1", "p1", R1, "checkup", MONDAY, NINE, ttl_s=60), now)
    state.apply(PlaceHold("AB-h2", "p2", R1, "checkup", MONDAY, cell(10), ttl_s=120), now)
    assert state.next_deadline() == now + 60
    assert state.apply(Tick(), now + 59) == []
    assert state.apply(Tick(), now + 60) == [HoldExpired("AB-h1")]
    assert cells_of(state, R1, MONDAY, NINE, 2) == bytes([FREE] * 2)
    assert state.next_deadline() == now + 120
    state.apply(ReleaseHold("AB-h2", "p2"), now + 61)
    assert state.apply(Tick(), now + 500) == [] and state.next_deadline() is None


def test_overlapping_buffer_windows_release_in_turn() -> None:
    state, now = world(buffer_minutes=10)
    state.apply(Book("AB-b1", "p1", R1, "filling", MONDAY, NINE), now)
    state.apply(Cancel("AB-b1", Party.CLINIC, "AB-c1"), now)  # BUFFER until now+600
    state.apply(Block(R1, MONDAY, NINE, 4), now + 60)
    state.apply(Unblock(R1, MONDAY, NINE, 4), now + 60)
    state.apply(Book("AB-b2", "p2", R1, "checkup", MONDAY, NINE + 1), now + 60)
    state.apply(Cancel("AB-b2", Party.CLINIC, "AB-c1"), now + 120)  # BUFFER until now+720
    state.apply(Tick(), now + 600)
    assert cells_of(state, R1, MONDAY, NINE, 4) == bytes([FREE, BUFFER, BUFFER, FREE])
    state.apply(Tick(), now + 720)
    assert cells_of(state, R1, MONDAY, NINE, 4) == bytes([FREE] * 4)


# ---------------------------------------------------------------- DST and time

SPRING = day_of(date(2027, 3, 28))
AUTUMN = day_of(date(2026, 10, 25))


@pytest.mark.parametrize("day", [SPRING, AUTUMN])
def test_dst_sunday_booking_at_nine(day: int) -> None:
    every_day = {d: ((0, 24 * 60),) for d in range(1, 8)}  # open around the clock, Sundays too
    state, now = world(first_day=day, days=1, now=epoch(day - 1, 12), hours=every_day)
    row = state.row(R1, day)
    for c in range(96):
        assert row[c] == (CLOSED if c in nonexistent_cells(day, 15) else FREE)
    assert state.free_count("AB-c1", day) == 2 * (96 - len(nonexistent_cells(day, 15)))
    state.apply(Book("AB-b1", "p1", R1, "checkup", day, NINE), now)
    b = state.booking("AB-b1")
    assert cell_epoch(b.day, b.cell, 15) == epoch(day, 9)
    assert iso(b.day, b.cell, 15) == (
        "2027-03-28T09:00:00+02:00" if day == SPRING else "2026-10-25T09:00:00+01:00"
    )
    if day == SPRING:
        refuse(
            state, Book("AB-b2", "p2", R1, "child_checkup", day, cell(2, 15)), now, RefusalCode.OUTSIDE_HOURS
        )
        refuse(state, Book("AB-b2", "p2", R1, "checkup", day, cell(1, 45)), now, RefusalCode.OUTSIDE_HOURS)


def test_now_inside_a_cell_makes_that_cell_past() -> None:
    state, now = world()
    refuse(
        state, Book("AB-b1", "p1", R1, "checkup", MONDAY, NINE), epoch(MONDAY, 9, 0) + 1, RefusalCode.IN_PAST
    )
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY, NINE), epoch(MONDAY, 9, 0))


def test_changes_are_handed_out_once() -> None:
    state, now = world()
    state.take_changes()
    state.apply(PlaceHold("AB-h1", "p1", R1, "checkup", MONDAY, NINE), now)
    assert state.take_changes() == [("AB-c1", R1, MONDAY, NINE, 2, HELD)]
    assert state.take_changes() == []


def test_no_show_only_after_the_start_and_the_cells_stay_booked() -> None:
    from engine.commands import MarkNoShow
    from engine.events import NoShowMarked

    state, now = world()
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY, NINE), now)
    refuse(state, MarkNoShow("AB-b1", "AB-c1"), epoch(MONDAY, 8, 59), RefusalCode.INVALID)
    refuse(state, MarkNoShow("AB-b1", "AB-c2"), epoch(MONDAY, 9), RefusalCode.NOT_FOUND)
    refuse(state, MarkNoShow("AB-nope", "AB-c1"), epoch(MONDAY, 9), RefusalCode.NOT_FOUND)
    assert state.apply(MarkNoShow("AB-b1", "AB-c1"), epoch(MONDAY, 9, 5)) == [
        NoShowMarked("AB-b1", epoch(MONDAY, 9, 5))
    ]
    assert state.booking("AB-b1").status == "no_show"
    assert cells_of(state, R1, MONDAY, NINE, 2) == bytes([BOOKED]) * 2
    refuse(state, MarkNoShow("AB-b1", "AB-c1"), epoch(MONDAY, 10), RefusalCode.INVALID)
    refuse(state, Cancel("AB-b1", Party.CLINIC, "AB-c1"), epoch(MONDAY, 10), RefusalCode.INVALID)
