"""Unit tests: engine.starts — bookable start times per clinic-day (the map's badge), kept per clinic-day
by RegionState and forgotten on every change (no network)."""

from __future__ import annotations

import random

from slot_world import ALL_SERVICES, MONDAY, cell, epoch, make_clinic, make_resources, world

from engine.commands import (
    Block,
    Book,
    Cancel,
    EditClinic,
    OpenDays,
    Party,
    PlaceHold,
    PutResource,
    RegisterClinic,
    ReleaseHold,
    Reschedule,
    RetireResource,
    SetDayHours,
    SuspendClinic,
    Unblock,
)
from engine.errors import Refused
from engine.model import Resource, ResourceKind
from engine.queries import bookable_summary, free_starts
from engine.state import RegionState

R1, R2 = "AB-c1-r1", "AB-c1-r2"


def listed_times(state: RegionState, clinic: str, service: str, day: int, now: int) -> int:
    """Reference: the distinct start times the availability lists (free_starts, one per time)."""
    if service not in state.clinics[clinic].services or state.clinics[clinic].suspended:
        return 0
    [(_, starts)] = free_starts(state, clinic, service, day, 1, now)
    return len({c for c, _ in starts})


def test_scattered_free_cells_are_no_bookable_check_up() -> None:
    state, now = world(days=1, n=1)
    # every other cell of the morning taken: 8 FREE cells left there, none next to another
    for c in range(cell(8), cell(12), 2):
        state.apply(Block(R1, MONDAY, c, 1), now)
    state.apply(Block(R1, MONDAY, cell(13), 16), now)  # the afternoon gone
    assert state.free_count("AB-c1", MONDAY) == 8
    counts = state.bookable_starts("AB-c1", MONDAY, now)
    assert counts["checkup"] == 0 and counts["filling"] == 0 and counts["cleaning"] == 0
    assert counts["child_checkup"] == 8  # a 15-minute service fits each lone cell
    assert bookable_summary(state, "checkup", MONDAY, 2, now) == {"AB-c1": [0, 0]}


def test_a_time_counts_once_however_many_resources_are_free_then() -> None:
    state, now = world(days=1, n=2, now=epoch(MONDAY - 2, 0))  # two days ahead: a patient may cancel
    # 08-12 and 13-17: a 30-minute check-up starts at 15 of 16 cells of each interval
    assert state.bookable_starts("AB-c1", MONDAY, now)["checkup"] == 30
    state.apply(Book("AB-b1", "p1", R1, "checkup", MONDAY, cell(9)), now)
    assert state.bookable_starts("AB-c1", MONDAY, now)["checkup"] == 30  # R2 is free at every time
    state.apply(Book("AB-b2", "p2", R2, "checkup", MONDAY, cell(9)), now)
    # 08:45, 09:00 and 09:15 are gone on both dentists
    assert state.bookable_starts("AB-c1", MONDAY, now)["checkup"] == 27
    assert state.bookable_starts("AB-c1", MONDAY, now)["filling"] == 26 - 5  # 08:15 .. 09:15 run into 09:00
    state.apply(Cancel("AB-b2", Party.PATIENT, "p2"), now)
    assert state.bookable_starts("AB-c1", MONDAY, now)["checkup"] == 30


def test_times_before_now_are_not_bookable() -> None:
    state, now = world(days=2, n=1)
    at_ten = epoch(MONDAY, 10) + 1  # 10:00 has begun: 10:15 .. 11:30 and the afternoon remain
    assert state.bookable_starts("AB-c1", MONDAY, at_ten)["checkup"] == 6 + 15
    assert state.bookable_starts("AB-c1", MONDAY, epoch(MONDAY, 10))["checkup"] == 7 + 15
    assert state.bookable_starts("AB-c1", MONDAY, epoch(MONDAY + 1, 0))["checkup"] == 0
    assert state.bookable_starts_of("AB-c1", "checkup", MONDAY, 3, at_ten) == [21, 30, 0]
    # a summary kept at 10:00 is not the answer a second later (10:00 has begun)
    assert bookable_summary(state, "checkup", MONDAY, 1, epoch(MONDAY, 10)) == {"AB-c1": [22]}
    assert bookable_summary(state, "checkup", MONDAY, 1, at_ten) == {"AB-c1": [21]}
    # the earlier answer at 00:00 still holds for a reader at 00:00
    assert state.bookable_starts("AB-c1", MONDAY, now)["checkup"] == 30


def test_a_suspended_clinic_or_a_service_it_does_not_offer_has_none() -> None:
    state, now = world(days=1, n=1, services=("checkup",))
    assert state.bookable_starts("AB-c1", MONDAY, now) == {"checkup": 30}
    assert state.bookable_starts_of("AB-c1", "filling", MONDAY, 1, now) == [0]
    state.apply(SuspendClinic("AB-c1", True), now)
    assert state.bookable_starts("AB-c1", MONDAY, now) == {"checkup": 0}
    state.apply(SuspendClinic("AB-c1", False), now)
    assert state.bookable_starts("AB-c1", MONDAY, now) == {"checkup": 30}
    assert (
        state.bookable_starts("AB-c9", MONDAY, now) == {}
        and state.bookable_starts_of("AB-c9", "checkup", MONDAY, 1, now) == []
    )


def test_kept_counts_follow_every_kind_of_change() -> None:
    """Random commands of every kind that changes cells or what resources perform, each followed by
    reads of the kept counts: they always equal a count from scratch (a fresh state from the snapshot)
    and the times the availability lists."""
    rng = random.Random(7)
    now = epoch(MONDAY, 0)
    state = RegionState("AB")
    state.apply(RegisterClinic(make_clinic(), make_resources(n=2)), now)
    state.apply(RegisterClinic(make_clinic("AB-c2"), make_resources("AB-c2", n=1)), now)
    for res in (R1, R2, "AB-c2-r1"):
        state.apply(OpenDays(res, MONDAY, 3), now)
    resources = [R1, R2, "AB-c2-r1"]
    booked: list[str] = []
    clinics = ["AB-c1", "AB-c2"]

    def check(at: int) -> None:
        fresh = RegionState.from_snapshot(state.to_snapshot())
        for service in ALL_SERVICES:  # the kept summary, brought up to date from the clinics changed since
            assert bookable_summary(state, service, MONDAY, 3, at) == bookable_summary(
                fresh, service, MONDAY, 3, at
            )
        for clinic in clinics:
            for day in range(MONDAY, MONDAY + 3):
                kept = state.bookable_starts(clinic, day, at)
                assert kept == fresh.bookable_starts(clinic, day, at)
                offered = state.clinics[clinic].services
                assert kept == {s: listed_times(state, clinic, s, day, at) for s in offered}

    for step in range(250):
        res = rng.choice(resources)
        day, c = MONDAY + rng.randrange(3), rng.randrange(cell(7), cell(18))
        kind = rng.randrange(11)
        try:
            if step == 60:
                rid = "AB-c1-r3"
                state.apply(
                    PutResource(Resource(rid, "AB-c1", ResourceKind.HYGIENIST, "H", ("cleaning",))), now
                )
                state.apply(OpenDays(rid, MONDAY, 3), now)
                resources.append(rid)
            elif step == 150:
                try:
                    state.apply(RetireResource(R2), now)
                except Refused as refused:  # its bookings are cancelled with it
                    state.apply(RetireResource(R2, cancel=tuple(refused.bookings)), now)
            elif kind < 3:
                state.apply(Book(f"AB-b{step}", f"p{step}", res, rng.choice(ALL_SERVICES), day, c), now)
                booked.append(f"AB-b{step}")
            elif kind == 3 and booked:
                by = rng.choice([Party.CLINIC, Party.ADMIN])
                state.apply(Cancel(booked.pop(rng.randrange(len(booked))), by, "AB-c1"), now)
            elif kind == 4 and booked:
                moved = state.booking(rng.choice(booked))
                assert moved is not None
                state.apply(Reschedule(moved.id, moved.patient, res, day, c), now)
            elif kind == 5:
                state.apply(Block(res, day, c, rng.randint(1, 6)), now)
            elif kind == 6:
                state.apply(Unblock(res, day, c, rng.randint(1, 6)), now)
            elif kind == 7:
                state.apply(PlaceHold(f"AB-h{step}", f"q{step}", res, "checkup", day, c), now)
            elif kind == 8 and state.holds:
                hold = rng.choice(sorted(state.holds.values(), key=lambda h: h.id))
                state.apply(ReleaseHold(hold.id, hold.patient), now)
            elif kind == 9:
                services = tuple(s for s in ALL_SERVICES if rng.random() < 0.6) or ("checkup",)
                state.apply(EditClinic("AB-c1", services=services), now)
            elif kind == 10:
                state.apply(SetDayHours("AB-c2", day, rng.choice([None, ((9 * 60, 15 * 60),), ()])), now)
        except Refused as e:
            print(step, e, getattr(e, "bookings", None))
            continue
        if step % 5 == 0:
            check(now if step % 2 else epoch(MONDAY, rng.randrange(8, 18), 5))
    assert "AB-c1-r3" in state.resources and state.resources[R2].retired
    check(now)
