"""Unit tests: RegionState snapshots and replay — exact, deterministic, msgpack-native (no network)."""

from __future__ import annotations

from pathlib import Path

import msgpack
from slot_world import MONDAY, cell, epoch, make_clinic, make_resources, packed, world

from engine.commands import (
    Block,
    Book,
    Cancel,
    Command,
    OpenDays,
    Party,
    PlaceHold,
    RegisterClinic,
    Reschedule,
    RetireResource,
    SetDayHours,
    SetHours,
    Tick,
    Unblock,
)
from engine.errors import Refused
from engine.events import Event, from_record, to_record
from engine.records import BookingStatus
from engine.snapshot import SNAPSHOT_VERSION
from engine.state import RegionState

R1, R2 = "AB-c1-r1", "AB-c1-r2"


def busy_history() -> tuple[RegionState, list[Event], int]:
    """A region that went through every kind of event; returns it, all its events, and now."""
    now = epoch(MONDAY, 0)
    state = RegionState("AB")
    journal: list[Event] = []
    script: list[tuple[Command, int]] = [
        (RegisterClinic(make_clinic(buffer_minutes=10, cancel_notice_hours=0), make_resources(n=2)), now),
        (OpenDays(R1, MONDAY, 5), now),
        (OpenDays(R2, MONDAY, 5), now),
        (PlaceHold("AB-h1", "p1", R1, "checkup", MONDAY, cell(9), ttl_s=60), now),
        (PlaceHold("AB-h2", "p1", R1, "filling", MONDAY, cell(9, 15)), now),  # replaces h1
        (Book("AB-b1", "p1", hold_id="AB-h2", idempotency_key="k", fingerprint="f"), now + 10),
        (Book("AB-b2", "p2", R2, "cleaning", MONDAY + 1, cell(14)), now),
        (Book("AB-b3", "p3", R2, "checkup", MONDAY + 2, cell(8)), now),
        (Cancel("AB-b3", Party.CLINIC, "AB-c1"), now + 20),
        (Reschedule("AB-b2", "p2", R1, MONDAY + 1, cell(14, 15)), now + 30),
        (Block(R2, MONDAY, cell(10), 4), now + 40),
        (Unblock(R2, MONDAY, cell(10), 2), now + 50),
        (PlaceHold("AB-h3", "p4", R2, "checkup", MONDAY + 3, cell(9), ttl_s=30), now + 60),
        (Book("AB-b1", "p1", hold_id="AB-h2", idempotency_key="k", fingerprint="f"), now + 70),  # retry
        (Cancel("AB-b1", Party.PATIENT, "p1"), now + 80),
        (Tick(), now + 95),  # h3 expires
        (Tick(), now + 20 + 600),  # b3's buffer window ends
        (PlaceHold("AB-h4", "p5", R1, "checkup", MONDAY + 4, cell(14), ttl_s=900), now + 700),
    ]
    for command, at in script:
        journal.extend(state.apply(command, at))
    return state, journal, now + 700


def test_history_produces_every_event_kind() -> None:
    _, journal, _ = busy_history()
    assert {e.KIND for e in journal} == {
        "ClinicRegistered",
        "DaysOpened",
        "HoldPlaced",
        "HoldReleased",
        "HoldExpired",
        "Booked",
        "Cancelled",
        "Rescheduled",
        "CellsBlocked",
        "CellsUnblocked",
        "BufferReleased",
    }


def test_replay_by_evolve_is_byte_identical() -> None:
    state, journal, _ = busy_history()
    replayed = RegionState("AB")
    for event in journal:
        replayed.evolve(from_record(msgpack.unpackb(msgpack.packb(to_record(event)))))
    assert packed(replayed) == packed(state)
    assert replayed.next_deadline() == state.next_deadline()


def test_snapshot_round_trip() -> None:
    state, _, now = busy_history()
    data = msgpack.unpackb(packed(state))
    restored = RegionState.from_snapshot(data)
    assert restored.to_snapshot() == state.to_snapshot()
    assert packed(restored) == packed(state)
    for c in state.clinics:
        for d in range(MONDAY, MONDAY + 5):
            assert restored.free_count(c, d) == state.free_count(c, d)
    assert [b.id for b in restored.bookings_of("p2")] == [b.id for b in state.bookings_of("p2")]
    assert restored.idempotent_booking("p1", "k") is not None
    statuses = {b.id: b.status for b in restored.all_bookings()}
    assert statuses == {b.id: b.status for b in state.all_bookings()}
    assert {type(s) for s in statuses.values()} == {BookingStatus}  # unpacked as the enum, not str


def test_restored_state_keeps_going_like_the_original() -> None:
    state, _, now = busy_history()
    restored = RegionState.from_snapshot(state.to_snapshot())
    assert restored.next_deadline() == state.next_deadline() == now + 900
    later: list[tuple[Command, int]] = [
        (Book("AB-b9", "p5", hold_id="AB-h4"), now + 5),
        (Book("AB-b1", "p1", R1, "checkup", MONDAY, cell(9), idempotency_key="k", fingerprint="f"), now + 5),
        (Book("AB-b10", "p6", R1, "checkup", MONDAY + 4, cell(14)), now + 6),  # SLOT_TAKEN
        (Tick(), now + 5000),
    ]
    for command, at in later:
        outcomes = []
        for s in (state, restored):
            try:
                outcomes.append(s.apply(command, at))
            except Refused as r:
                outcomes.append([r.code])
        assert outcomes[0] == outcomes[1]
    assert packed(restored) == packed(state)


def test_a_capture_finished_after_more_commands_is_the_state_when_captured() -> None:
    state, _, now = busy_history()
    expected = packed(state)
    finish = state.capture_snapshot()  # the actor's turn; the rest is finished off it, later
    for n, command in enumerate(
        [
            Book("AB-b9", "p5", hold_id="AB-h4"),
            Book("AB-b10", "p6", R1, "checkup", MONDAY + 3, cell(9), idempotency_key="k2", fingerprint="g"),
            Cancel("AB-b2", Party.CLINIC, "AB-c1"),
            Block(R2, MONDAY + 2, cell(13), 2),
            OpenDays(R1, MONDAY + 5, 2),  # the row grows
        ]
    ):
        state.apply(command, now + n)
    assert msgpack.packb(finish()) == expected
    assert packed(state) != expected


def test_the_same_history_packs_equal_and_the_booking_order_is_its_own() -> None:
    """Bookings are stored in the order they were made (a snapshot is memory copies, never a
    sort): the same facts in the same order pack to the same bytes; in another order the state
    holds the same bookings and cells, and packs differently."""
    a, now = world()
    b, _ = world()
    c, _ = world()
    first = Book("AB-b1", "p1", R1, "checkup", MONDAY, cell(9))
    second = Book("AB-b2", "p2", R2, "checkup", MONDAY, cell(10))
    for state, order in ((a, (first, second)), (b, (first, second)), (c, (second, first))):
        for command in order:
            state.apply(command, now)
    assert packed(a) == packed(b)
    assert sorted(a.all_bookings(), key=lambda x: x.id) == sorted(c.all_bookings(), key=lambda x: x.id)
    assert all(a.row(r, MONDAY) == c.row(r, MONDAY) for r in (R1, R2))
    assert packed(a) != packed(c)


def test_a_version_1_snapshot_still_loads() -> None:
    """fixtures/snapshot-v1.msgpack: ``busy_history()`` packed by the code before version 2."""
    state, _, now = busy_history()
    data = msgpack.unpackb((Path(__file__).parent / "fixtures" / "snapshot-v1.msgpack").read_bytes())
    assert data["v"] == 1
    restored = RegionState.from_snapshot(data)
    assert restored.to_snapshot()["v"] == SNAPSHOT_VERSION == 4
    by_id = sorted(state.all_bookings(), key=lambda b: b.id)
    assert sorted(restored.all_bookings(), key=lambda b: b.id) == by_id
    for b in by_id:
        assert restored.bookings_of(b.patient) == state.bookings_of(b.patient)
        assert restored.bookings_on(b.clinic, b.day) == state.bookings_on(b.clinic, b.day)
    assert restored.idempotent_booking("p1", "k") == state.idempotent_booking("p1", "k")
    assert set(restored.holds) == set(state.holds)
    for r in (R1, R2):
        assert [restored.row(r, d) for d in range(MONDAY, MONDAY + 5)] == [
            state.row(r, d) for d in range(MONDAY, MONDAY + 5)
        ]
    assert restored.next_deadline() == state.next_deadline()
    again = RegionState.from_snapshot(msgpack.unpackb(packed(restored)))
    assert packed(again) == packed(restored)


def test_a_cancellation_reason_survives_a_snapshot_and_a_version_2_snapshot_loads() -> None:
    state, _, now = busy_history()
    state.apply(Book("AB-b7", "p7", R2, "checkup", MONDAY + 3, cell(11)), now)
    state.apply(Cancel("AB-b7", Party.CLINIC, "AB-c1", "Vattenläcka i kliniken"), now)
    data = msgpack.unpackb(packed(state))
    assert data["bookings"]["reasons"] == [[state.booking_count() - 1, "Vattenläcka i kliniken"]]
    restored = RegionState.from_snapshot(data)
    assert restored.booking("AB-b7").cancel_reason == "Vattenläcka i kliniken"
    assert restored.bookings_of("p7") == state.bookings_of("p7")
    assert packed(restored) == packed(state)
    # version 2 was written before reasons: the same state without them
    data["v"] = 2
    del data["bookings"]["reasons"]
    older = RegionState.from_snapshot(data)
    assert older.booking("AB-b7").cancel_reason == ""
    assert older.booking("AB-b7").status == BookingStatus.CANCELLED


def test_bookings_read_back_as_made_through_cancel_and_move() -> None:
    state, _, now = busy_history()
    restored = RegionState.from_snapshot(msgpack.unpackb(packed(state)))
    for s in (state, restored):
        ids = [b.id for b in s.all_bookings()]
        assert ids == ["AB-b1", "AB-b2", "AB-b3"]
        assert s.booking_count() == 3 and s.booking("AB-nope") is None
        for b in s.all_bookings():
            assert s.booking(b.id) == b
            assert b in s.bookings_of(b.patient) and b in s.bookings_on(b.clinic, b.day)


def test_snapshot_is_compact() -> None:
    state, now = world(days=90, first_day=MONDAY, n=3)
    snap = packed(state)
    assert len(snap) < 3 * 90 * 96 + 4096  # one byte per cell plus the catalogue
    assert epoch(MONDAY, 0) == now


def test_a_snapshot_after_a_setup_change_carries_it() -> None:
    """The catalogue's records are kept between captures; a clinic or resource replaced since
    (hours set, a resource retired) is recorded anew."""
    state, now = world()
    state.to_snapshot()  # records made
    state.apply(SetHours("AB-c1", {d: ((9 * 60, 17 * 60),) for d in range(1, 6)}), now)
    state.apply(RetireResource(R2), now)
    restored = RegionState.from_snapshot(msgpack.unpackb(packed(state)))
    assert restored.clinics["AB-c1"] == state.clinics["AB-c1"] and restored.clinics["AB-c1"].hours[4] == (
        (9 * 60, 17 * 60),
    )
    assert restored.resources[R2].retired and restored.resources == state.resources


def test_a_resources_own_hours_survive_a_snapshot_and_a_version_3_snapshot_loads() -> None:
    state, now = world()
    state.to_snapshot()  # records made
    state.apply(SetHours("AB-c1", {2: ((8 * 60, 12 * 60),)}, resource=R2), now)
    state.apply(SetDayHours("AB-c1", MONDAY + 3, ((13 * 60, 20 * 60),), resource=R2), now)
    data = msgpack.unpackb(packed(state))
    [r1, r2] = data["resources"]
    assert "hours" not in r1 and "exceptions" not in r1  # a resource on the clinic's hours: as before
    assert r2["hours"]["2"] == [[480, 720]] and r2["exceptions"] == {str(MONDAY + 3): [[780, 1200]]}
    restored = RegionState.from_snapshot(data)
    assert restored.resources == state.resources and packed(restored) == packed(state)
    assert restored.row(R2, MONDAY + 3) == state.row(R2, MONDAY + 3)
    # version 3 had no hours of a resource's own: its resources follow the clinic's
    older, _ = world()
    data = msgpack.unpackb(packed(older))
    data["v"] = 3
    assert RegionState.from_snapshot(data).resources == older.resources
