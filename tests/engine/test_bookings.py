"""Unit tests: engine.bookings — the packed booking store and its string table (no network)."""

from __future__ import annotations

import sys

import msgpack

from engine.bookings import BookingStore, Strings
from engine.records import Booking, BookingStatus


def test_strings_number_in_arrival_order_and_find_every_one_after_growing() -> None:
    strings = Strings()
    words = [f"AB-b{i:x}" for i in range(5000)] + ["", "å", "AB-b0 "]
    assert [strings.add(w) for w in words] == list(range(len(words)))
    assert [strings.add(w) for w in words[:10]] == list(range(10))  # known: same code
    assert len(strings) == len(words) and len(strings.table) >= 2 * len(words)
    assert all(strings.find(w) == i and strings[i] == w for i, w in enumerate(words))
    assert strings.find("AB-bnope") == -1
    again = Strings.from_snapshot(msgpack.unpackb(msgpack.packb(strings.to_snapshot())), sys.byteorder)
    assert all(again.find(w) == i for i, w in enumerate(words))


def test_strings_grow_a_few_entries_per_add_and_snapshot_while_growing() -> None:
    strings = Strings()
    n = 0
    while not (strings.old and strings.moved):  # in the middle of moving to a bigger table
        strings.add(f"p{n}")
        n += 1
    assert len(strings.table) == 2 * len(strings.old) and 0 < strings.moved < len(strings.old) // 2
    again = Strings.from_snapshot(msgpack.unpackb(msgpack.packb(strings.to_snapshot())), sys.byteorder)
    for s in (strings, again):
        assert all(s.find(f"p{i}") == i for i in range(n))
        for i in range(n, 3 * n):
            assert s.add(f"p{i}") == i
        assert not s.old and all(s.find(f"p{i}") == i for i in range(3 * n))
        assert all(s.table.count(i) == 1 for i in range(0, 3 * n, 7))
    assert again.to_snapshot() == strings.to_snapshot()


def _booking(n: int, patient: str, day: int, cell: int = 36) -> Booking:
    return Booking(
        f"AB-b{n}", patient, "AB-c1", "AB-c1-r1", "checkup", day, cell, 2, BookingStatus.BOOKED, 1000 + n
    )


def test_store_reads_back_each_booking_by_id_patient_and_day() -> None:
    store = BookingStore()
    made = [_booking(n, f"p{n % 3}", 738000 + n % 4, 30 + n) for n in range(12)]
    for b in made:
        store.add(b)
    assert list(store) == made and len(store) == 12
    assert all(store.get(b.id) == b for b in made) and store.get("AB-b99") is None
    for p in ("p0", "p1", "p2"):
        assert store.of_patient(p) == [b for b in reversed(made) if b.patient == p]
    assert store.of_patient("nobody") == [] and not store.has_patient("nobody")
    for day in range(737998, 738006):
        assert store.on_day("AB-c1", day) == [b for b in reversed(made) if b.day == day]
    assert store.on_day("AB-c9", 738000) == []


def test_moves_and_status_changes_keep_the_indexes_right() -> None:
    store = BookingStore()
    for n in range(6):
        store.add(_booking(n, "p1", 738000))
    store.move(store.row("AB-b2"), "AB-c1-r2", 737990, 40)  # earlier than any day so far
    store.move(store.row("AB-b5"), "AB-c1-r1", 738000, 44)  # same day, another cell
    store.set_status(store.row("AB-b3"), BookingStatus.CANCELLED, 2000, "clinic")
    store.set_status(store.row("AB-b4"), BookingStatus.NO_SHOW)
    assert [b.id for b in store.on_day("AB-c1", 738000)] == ["AB-b5", "AB-b4", "AB-b3", "AB-b1", "AB-b0"]
    (moved,) = store.on_day("AB-c1", 737990)
    assert (moved.id, moved.resource, moved.cell) == ("AB-b2", "AB-c1-r2", 40)
    cancelled = store.get("AB-b3")
    assert cancelled is not None and (cancelled.status, cancelled.cancelled_at, cancelled.cancelled_by) == (
        BookingStatus.CANCELLED,
        2000,
        "clinic",
    )
    assert store.upcoming("p1", "AB-c1", 15, 0) == 4  # b3 cancelled, b4 no-show
    restored = BookingStore.from_snapshot(msgpack.unpackb(msgpack.packb(store.to_snapshot())))
    assert list(restored) == list(store)
    assert restored.to_snapshot() == store.to_snapshot()
    assert [b.id for b in restored.on_day("AB-c1", 738000)] == ["AB-b5", "AB-b4", "AB-b3", "AB-b1", "AB-b0"]


def test_a_capture_finished_later_is_the_store_as_it_was_when_captured() -> None:
    store = BookingStore()
    for n in range(300):
        store.add(_booking(n, f"p{n % 40}", 738000 + n % 5, 30 + n % 50))
    store.remember("p1", "key-1", store.row("AB-b1"), "fp-1")
    expected = msgpack.packb(store.to_snapshot())
    finish = store.capture()
    # meanwhile: the ids' and patients' tables grow, bookings are cancelled, moved, remembered
    for n in range(300, 2000):
        store.add(_booking(n, f"q{n}", 737990 + n % 30, 20 + n % 60))
    store.set_status(store.row("AB-b7"), BookingStatus.CANCELLED, 5000, "clinic", "the dentist is ill")
    store.move(store.row("AB-b8"), "AB-c1-r2", 737980, 12)
    store.remember("p1", "key-1", store.row("AB-b1500"), "fp-2")
    store.remember("p2", "key-2", store.row("AB-b9"), "fp-3")
    assert msgpack.packb(finish()) == expected
    again = BookingStore.from_snapshot(msgpack.unpackb(expected))
    assert len(again) == 300 and again.get("AB-b8") == _booking(8, "p8", 738003, 38)
    assert again.get("AB-b1500") is None and again.idempotent("p2", "key-2") is None
