"""Unit tests: the wait-list inside the engine — offers in join order, expiry, pass-on, replay (no network)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from slot_world import MONDAY, cell, epoch, make_clinic, make_resources, packed

from engine.cells import BOOKED, BUFFER, FREE, HELD
from engine.commands import (
    Block,
    Book,
    Cancel,
    Command,
    JoinWaitlist,
    LeaveWaitlist,
    OpenDays,
    Party,
    PlaceHold,
    RegisterClinic,
    ReleaseHold,
    Tick,
    Unblock,
)
from engine.errors import RefusalCode, Refused
from engine.events import Event, HoldExpired, OfferExpired, OfferMade, WaitlistJoined, WaitlistLeft
from engine.state import RegionState
from engine.waitlist import MAX_ENTRIES_PER_PATIENT

R1, R2 = "AB-c1-r1", "AB-c1-r2"
TUESDAY = MONDAY + 1
NINE = cell(9)
START = epoch(MONDAY - 2, 12)  # Saturday noon: every weekday time is more than 24 h away


class Region:
    """A state plus the journal of everything it accepted (to replay)."""

    def __init__(self, now: int = START, **clinic_kw: Any) -> None:
        self.state = RegionState("AB")
        self.journal: list[Event] = []
        self.now = now
        self.commands: list[tuple[Command, int]] = []
        self.run(RegisterClinic(make_clinic(**clinic_kw), make_resources(n=2)))
        self.run(RegisterClinic(make_clinic("AB-c2", municipality="0180"), make_resources("AB-c2", n=1)))
        self.run(RegisterClinic(make_clinic("AB-c3", municipality="0114"), make_resources("AB-c3", n=1)))
        for res in (R1, R2, "AB-c2-r1", "AB-c3-r1"):
            self.run(OpenDays(res, MONDAY, 5))

    def run(self, command: Command) -> list[Event]:
        events = self.state.apply(command, self.now)
        self.journal.extend(events)
        self.commands.append((command, self.now))
        return events

    def join(
        self,
        entry: str,
        patient: str,
        *,
        clinic: str = "AB-c1",
        municipality: str = "",
        service: str = "checkup",
        day: int = TUESDAY,
        days: int = 1,
        window: tuple[int, int] = (8 * 60, 12 * 60),
    ) -> None:
        self.run(JoinWaitlist(entry, patient, clinic, municipality, service, day, days, *window))

    def refuse(self, command: Command, code: RefusalCode) -> None:
        before = packed(self.state)
        self.state.take_changes()
        with pytest.raises(Refused) as info:
            self.state.apply(command, self.now)
        assert info.value.code == code, info.value
        assert packed(self.state) == before
        assert self.state.take_changes() == []


def offers(events: list[Event]) -> list[OfferMade]:
    return [e for e in events if isinstance(e, OfferMade)]


def cells(state: RegionState, res: str, day: int, first: int, n: int) -> bytes:
    return state.row(res, day)[first : first + n]


def replayed(journal: list[Event]) -> RegionState:
    fresh = RegionState("AB")
    for event in journal:
        fresh.evolve(event)
    return fresh


def test_three_wait_first_offered_expires_second_books_third_told_nothing() -> None:
    w = Region()
    w.run(Book("AB-b0", "p0", R1, "checkup", TUESDAY, NINE))
    for i in (1, 2, 3):
        w.join(f"AB-w{i}", f"p{i}")
    # FREE time elsewhere is bookable by anyone: joining offers nothing
    assert not w.state.holds

    made = offers(w.run(Cancel("AB-b0", Party.PATIENT, "p0")))
    assert [(o.entry_id, o.patient, o.resource, o.day, o.cell, o.cells) for o in made] == [
        ("AB-w1", "p1", R1, TUESDAY, NINE, 2)
    ]
    first = made[0]
    assert first.expires_at == w.now + 10 * 60
    assert cells(w.state, R1, TUESDAY, NINE, 2) == bytes([HELD]) * 2
    assert w.state.holds[first.hold_id].offer == "AB-w1"
    assert w.state.waitlist.entries["AB-w2"].offer == "" and w.state.waitlist.entries["AB-w3"].offer == ""

    w.now = first.expires_at - 1
    assert w.run(Tick()) == []
    w.now = first.expires_at
    events = w.run(Tick())
    assert [type(e) for e in events] == [OfferExpired, OfferMade]
    second = offers(events)[0]
    assert (second.entry_id, second.patient, second.cell) == ("AB-w2", "p2", NINE)
    assert "AB-w1" not in w.state.waitlist.entries  # a missed offer ends that wait
    w.refuse(Book("AB-bx", "p1", hold_id=first.hold_id), RefusalCode.NOT_FOUND)
    w.refuse(Book("AB-bx", "p3", hold_id=second.hold_id), RefusalCode.NOT_YOURS)

    w.now += 60
    booked = w.run(Book("AB-b2", "p2", hold_id=second.hold_id))
    assert not offers(booked)
    assert w.state.booking("AB-b2").patient == "p2"
    assert cells(w.state, R1, TUESDAY, NINE, 2) == bytes([BOOKED]) * 2
    assert list(w.state.waitlist.entries) == ["AB-w3"]
    assert w.state.waitlist.entries["AB-w3"].offer == ""
    assert not w.state.holds

    # the third hears only when another matching time opens
    w.run(Book("AB-b9", "p9", R2, "checkup", TUESDAY, cell(10)))
    assert not w.state.holds
    third = offers(w.run(Cancel("AB-b9", Party.PATIENT, "p9")))
    assert [(o.patient, o.resource, o.cell) for o in third] == [("p3", R2, cell(10))]


def test_replay_gives_the_same_offers_and_the_same_state() -> None:
    w = Region()
    w.run(Book("AB-b0", "p0", R1, "checkup", TUESDAY, NINE))
    w.join("AB-w1", "p1")
    w.join("AB-w2", "p2")
    made = offers(w.run(Cancel("AB-b0", Party.PATIENT, "p0")))
    w.now = made[0].expires_at
    w.run(Tick())
    # replaying the journal rebuilds the state byte for byte, offers included
    assert packed(replayed(w.journal)) == packed(w.state)
    # re-running the commands on a fresh region makes exactly the same offers
    again = RegionState("AB")
    events = [e for command, now in w.commands for e in again.apply(command, now)]
    assert events == w.journal
    # and a snapshot keeps the line and the open offer
    restored = RegionState.from_snapshot(msgpack.unpackb(packed(w.state)))
    assert packed(restored) == packed(w.state)
    assert restored.waitlist.entries["AB-w2"].offer == offers(w.journal)[-1].hold_id


def test_clinic_cancel_offers_buffer_at_once_else_buffer_then_free() -> None:
    w = Region()
    w.run(Book("AB-b1", "p0", R1, "checkup", TUESDAY, NINE))
    w.run(Book("AB-b2", "p0", R2, "checkup", TUESDAY, NINE))
    w.join("AB-w1", "p1")
    made = offers(w.run(Cancel("AB-b1", Party.CLINIC, "AB-c1")))
    assert [(o.patient, o.resource) for o in made] == [("p1", R1)]
    assert cells(w.state, R1, TUESDAY, NINE, 2) == bytes([HELD]) * 2
    # nobody else waits: the admin cancellation stays BUFFER for the window, then goes FREE
    assert offers(w.run(Cancel("AB-b2", Party.ADMIN, "admin"))) == []
    assert cells(w.state, R2, TUESDAY, NINE, 2) == bytes([BUFFER]) * 2
    w.now += 10 * 60
    w.run(Tick())
    assert cells(w.state, R2, TUESDAY, NINE, 2) == bytes([FREE]) * 2


def test_joining_takes_buffer_time_that_waits_at_once() -> None:
    w = Region(offer_minutes=15)  # outlives the 10-minute BUFFER window
    w.run(Book("AB-b1", "p0", R1, "filling", TUESDAY, NINE))
    w.run(Cancel("AB-b1", Party.CLINIC, "AB-c1"))
    assert cells(w.state, R1, TUESDAY, NINE, 4) == bytes([BUFFER]) * 4
    w.join("AB-w1", "p1", window=(9 * 60 + 15, 12 * 60))
    (offer,) = w.state.holds.values()
    assert (offer.patient, offer.cell, offer.cells) == ("p1", cell(9, 15), 2)
    assert cells(w.state, R1, TUESDAY, NINE, 4) == bytes([BUFFER, HELD, HELD, BUFFER])
    # the end of the window frees only what is still BUFFER
    w.now += 10 * 60
    w.run(Tick())
    assert cells(w.state, R1, TUESDAY, NINE, 4) == bytes([FREE, HELD, HELD, FREE])
    assert packed(replayed(w.journal)) == packed(w.state)


def test_window_service_and_day_are_respected() -> None:
    w = Region()
    w.run(Book("AB-b1", "p0", R1, "checkup", TUESDAY, NINE))
    w.join("AB-w1", "p1", window=(13 * 60, 17 * 60))  # afternoons only
    w.join("AB-w2", "p2", day=TUESDAY + 1)  # another day
    w.join("AB-w3", "p3", service="filling", window=(9 * 60, 10 * 60))  # 60 min ending by 10:00
    w.join("AB-w4", "p4", service="child_checkup", window=(9 * 60 + 15, 9 * 60 + 30))
    made = offers(w.run(Cancel("AB-b1", Party.CLINIC, "AB-c1")))
    # the filling (09:00-10:00) starts on the freed time and reaches into FREE 09:30-10:00; it
    # joined before the child check-up, whose 09:15 start is then taken
    assert [(o.patient, o.cell, o.cells) for o in made] == [("p3", NINE, 4)]


def test_leftover_cells_go_to_the_next_entry_in_the_same_step() -> None:
    w = Region()
    w.run(Book("AB-b1", "p0", R1, "filling", TUESDAY, NINE))
    w.run(Block(R1, TUESDAY, cell(10), 8))  # nothing FREE after the filling
    w.run(Block(R1, TUESDAY, cell(8), 4))
    w.join("AB-w1", "p1", service="checkup")
    w.join("AB-w2", "p2", service="checkup")
    w.join("AB-w3", "p3", service="checkup")
    made = offers(w.run(Cancel("AB-b1", Party.CLINIC, "AB-c1")))
    assert [(o.patient, o.cell) for o in made] == [("p1", NINE), ("p2", cell(9, 30))]
    assert "AB-w3" in w.state.waitlist.entries and not w.state.waitlist.entries["AB-w3"].offer


def test_municipality_entries_and_join_order_across_targets() -> None:
    w = Region()
    w.run(Book("AB-b1", "p0", "AB-c2-r1", "checkup", TUESDAY, NINE))
    w.run(Book("AB-b2", "p0", "AB-c3-r1", "checkup", TUESDAY, NINE))
    w.join("AB-w1", "p1", clinic="", municipality="0180")  # any clinic in 0180: c1 or c2
    w.join("AB-w2", "p2", clinic="AB-c2")
    made = offers(w.run(Cancel("AB-b1", Party.PATIENT, "p0")))
    assert [(o.patient, o.clinic) for o in made] == [("p1", "AB-c2")]
    # AB-c3 is in 0114: nobody there waits
    assert offers(w.run(Cancel("AB-b2", Party.PATIENT, "p0"))) == []


def test_a_patient_who_holds_something_is_passed_over_not_removed() -> None:
    w = Region()
    w.run(Book("AB-b1", "p0", R1, "checkup", TUESDAY, NINE))
    w.join("AB-w1", "p1")
    w.join("AB-w2", "p2")
    w.run(PlaceHold("AB-h1", "p1", R2, "checkup", TUESDAY + 2, NINE))
    made = offers(w.run(Cancel("AB-b1", Party.PATIENT, "p0")))
    assert [o.patient for o in made] == ["p2"]
    assert "AB-w1" in w.state.waitlist.entries


def test_declining_and_leaving_pass_the_offer_on() -> None:
    w = Region()
    w.run(Book("AB-b1", "p0", R1, "checkup", TUESDAY, NINE))
    for i in (1, 2, 3):
        w.join(f"AB-w{i}", f"p{i}")
    (first,) = offers(w.run(Cancel("AB-b1", Party.PATIENT, "p0")))
    w.refuse(ReleaseHold(first.hold_id, "p2"), RefusalCode.NOT_YOURS)
    (second,) = offers(w.run(ReleaseHold(first.hold_id, "p1")))
    assert second.patient == "p2"
    w.refuse(LeaveWaitlist("AB-w2", "p3"), RefusalCode.NOT_YOURS)
    events = w.run(LeaveWaitlist("AB-w2", "p2"))
    assert isinstance(events[0], WaitlistLeft)
    assert [o.patient for o in offers(events)] == ["p3"]
    (entry,) = w.state.waitlist.entries.values()
    assert entry.id == "AB-w3" and entry.offer
    w.refuse(LeaveWaitlist("AB-w2", "p2"), RefusalCode.NOT_FOUND)
    events = w.run(LeaveWaitlist("AB-w3", "p3"))
    assert not offers(events) and not w.state.holds and not w.state.waitlist
    assert cells(w.state, R1, TUESDAY, NINE, 2) == bytes([FREE]) * 2


def test_unblock_is_a_clinic_freeing_time() -> None:
    w = Region()
    w.run(Block(R1, TUESDAY, NINE, 2))
    w.run(Block(R2, TUESDAY, NINE, 2))
    w.join("AB-w1", "p1", window=(9 * 60, 9 * 60 + 30))
    made = offers(w.run(Unblock(R2, TUESDAY, NINE, 2)))
    assert [(o.patient, o.resource, o.cell) for o in made] == [("p1", R2, NINE)]


def test_offer_window_is_the_clinic_setting() -> None:
    w = Region(offer_minutes=3)
    w.run(Book("AB-b1", "p0", R1, "checkup", TUESDAY, NINE))
    w.join("AB-w1", "p1")
    (offer,) = offers(w.run(Cancel("AB-b1", Party.PATIENT, "p0")))
    assert offer.expires_at == w.now + 180
    w.now = offer.expires_at
    events = w.run(Tick())
    assert [type(e) for e in events] == [OfferExpired]
    assert not any(isinstance(e, HoldExpired) for e in events)
    assert cells(w.state, R1, TUESDAY, NINE, 2) == bytes([FREE]) * 2


def test_booking_limit_passes_over_the_entry() -> None:
    w = Region(max_bookings_per_patient=1)
    w.run(Book("AB-b1", "p0", R1, "checkup", TUESDAY, NINE))
    w.run(Book("AB-b2", "p1", R2, "checkup", TUESDAY + 3, NINE))
    w.join("AB-w1", "p1")
    w.join("AB-w2", "p2")
    assert [o.patient for o in offers(w.run(Cancel("AB-b1", Party.PATIENT, "p0")))] == ["p2"]


def test_join_refusals_change_nothing() -> None:
    w = Region()
    w.join("AB-w1", "p1")
    ok: dict[str, Any] = dict(
        entry_id="AB-w2",
        patient="p1",
        clinic="AB-c1",
        municipality="",
        service="checkup",
        first_day=TUESDAY,
        days=1,
        from_minute=480,
        to_minute=720,
    )

    def join(**kw: Any) -> JoinWaitlist:
        return JoinWaitlist(**{**ok, **kw})

    w.refuse(join(entry_id="AB-w1"), RefusalCode.INVALID)
    w.refuse(join(entry_id="O-w2"), RefusalCode.INVALID)
    w.refuse(join(clinic="AB-c9"), RefusalCode.NOT_FOUND)
    w.refuse(join(clinic="", municipality="9999"), RefusalCode.NOT_FOUND)
    w.refuse(join(municipality="0180"), RefusalCode.INVALID)
    w.refuse(join(service="botox"), RefusalCode.INVALID)
    w.refuse(join(from_minute=720, to_minute=720), RefusalCode.INVALID)
    w.refuse(join(days=0), RefusalCode.INVALID)
    w.refuse(join(first_day=MONDAY - 10, days=3), RefusalCode.IN_PAST)
    for i in range(2, MAX_ENTRIES_PER_PATIENT + 1):
        w.run(join(entry_id=f"AB-w{i}"))
    w.refuse(join(entry_id="AB-w99"), RefusalCode.LIMIT_REACHED)
    assert [e.seq for e in w.state.waitlist.entries.values()] == list(range(1, MAX_ENTRIES_PER_PATIENT + 1))
    assert isinstance(w.journal[-1], WaitlistJoined)


def test_old_snapshots_without_a_waitlist_still_load() -> None:
    w = Region()
    w.run(PlaceHold("AB-h1", "p1", R1, "checkup", TUESDAY, NINE))
    data = w.state.to_snapshot()
    del data["waitlist"], data["wait_seq"]
    data["holds"] = [h[:9] for h in data["holds"]]
    old_clinics = []
    for c in data["clinics"]:
        c = dict(c)
        del c["offer_minutes"]
        old_clinics.append(c)
    data["clinics"] = old_clinics
    restored = RegionState.from_snapshot(data)
    assert packed(restored) == packed(w.state)


# -- policies: one open hold per patient in the region, late cancellation, booking limit ---------


def test_a_hold_at_another_clinic_releases_the_first_in_the_same_step() -> None:
    w = Region()
    w.run(PlaceHold("AB-h1", "p1", R1, "checkup", TUESDAY, NINE))
    events = w.run(PlaceHold("AB-h2", "p1", "AB-c2-r1", "checkup", TUESDAY, NINE))
    assert [type(e).__name__ for e in events] == ["HoldReleased", "HoldPlaced"]
    assert list(w.state.holds) == ["AB-h2"]
    assert cells(w.state, R1, TUESDAY, NINE, 2) == bytes([FREE]) * 2
    hold = w.state.hold_of("p1")
    assert hold is not None and hold.id == "AB-h2"
    assert w.state.hold_of("p1", "AB-c1") is None


def test_a_new_hold_gives_up_an_open_offer_which_passes_on() -> None:
    w = Region()
    w.run(Book("AB-b1", "p0", R1, "checkup", TUESDAY, NINE))
    w.join("AB-w1", "p1")
    w.join("AB-w2", "p2")
    (first,) = offers(w.run(Cancel("AB-b1", Party.PATIENT, "p0")))
    events = w.run(PlaceHold("AB-h1", "p1", "AB-c3-r1", "checkup", TUESDAY, NINE))
    assert [type(e).__name__ for e in events] == ["HoldReleased", "HoldPlaced", "OfferMade"]
    assert offers(events)[0].patient == "p2"
    assert "AB-w1" not in w.state.waitlist.entries


def test_late_cancel_and_hoarding_are_refused_and_change_nothing() -> None:
    w = Region(max_bookings_per_patient=2)
    w.run(Book("AB-b1", "p1", R1, "checkup", TUESDAY, NINE))
    w.run(Book("AB-b2", "p1", R1, "checkup", TUESDAY, cell(10)))
    w.refuse(Book("AB-b3", "p1", R2, "checkup", TUESDAY, NINE), RefusalCode.LIMIT_REACHED)
    w.refuse(PlaceHold("AB-h3", "p1", R2, "checkup", TUESDAY, NINE), RefusalCode.LIMIT_REACHED)
    w.join("AB-w1", "p2")
    w.now = epoch(TUESDAY, 8)  # one hour before: too late to cancel online
    w.refuse(Cancel("AB-b1", Party.PATIENT, "p1"), RefusalCode.TOO_LATE)
    assert not w.state.holds and w.state.booking("AB-b1").status == "booked"
