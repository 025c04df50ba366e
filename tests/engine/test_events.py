"""Unit tests for engine.events: versioned records and upcasters (pure, no I/O)."""

from __future__ import annotations

import pytest

from engine.events import (
    VERSIONS,
    Booked,
    Cancelled,
    DayHoursSet,
    HoldExpired,
    HoursSet,
    Rescheduled,
    from_record,
    to_record,
    upcast,
)


def test_records_carry_the_kind_and_its_version() -> None:
    event = HoldExpired("AB-h1")
    assert to_record(event) == ["HoldExpired", VERSIONS["HoldExpired"], "AB-h1"]
    assert from_record(to_record(event)) == event


def test_upcasters_chain_from_an_old_version_to_the_current_one() -> None:
    """How a field is added: Booked v3 gained 'channel' (v2 -> v3) after 'room' (v1 -> v2)."""
    versions = {"Booked": 3}
    upcasters = {("Booked", 1): lambda v: [*v, "room-1"], ("Booked", 2): lambda v: [*v, "web"]}
    assert upcast("Booked", 1, ["AB-b1"], versions, upcasters) == ["AB-b1", "room-1", "web"]
    assert upcast("Booked", 2, ["AB-b1", "r9"], versions, upcasters) == ["AB-b1", "r9", "web"]
    assert upcast("Booked", 3, ["AB-b1", "r9", "app"], versions, upcasters) == ["AB-b1", "r9", "app"]
    with pytest.raises(ValueError, match="reads up to 3"):
        upcast("Booked", 4, ["AB-b1"], versions, upcasters)
    with pytest.raises(ValueError, match="no upcaster"):
        upcast("Booked", 1, ["AB-b1"], {"Booked": 3}, {("Booked", 2): lambda v: v})


def test_bad_records_are_refused() -> None:
    booked = to_record(Booked("AB-b1", "p", "AB-c1", "AB-c1-r1", "checkup", 1, 2, 2, 3, "", "", ""))
    for bad in (
        ["Booked"],
        ["Nope", 1, "x"],
        ["HoldExpired", "AB-h1"],
        booked[:-1],
        ["HoldExpired", 99, "x"],
    ):
        with pytest.raises(ValueError):
            from_record(bad)


def test_a_version_1_reschedule_reads_with_its_previous_time_unknown() -> None:
    old = ["Rescheduled", 1, "AB-b1", "AB-c1-r2", 740000, 36, 1000]
    event = from_record(old)
    assert event == Rescheduled("AB-b1", "AB-c1-r2", 740000, 36, 1000)
    assert isinstance(event, Rescheduled) and not event.from_known
    moved = Rescheduled("AB-b1", "AB-c1-r2", 740000, 36, 1000, "AB-c1-r1", 739999, 40)
    assert moved.from_known and from_record(to_record(moved)) == moved


def test_a_cancellation_carries_a_reason_since_version_2() -> None:
    event = Cancelled("AB-b1", "clinic", 100, 700, "Kliniken är stängd")
    assert to_record(event) == ["Cancelled", 2, "AB-b1", "clinic", 100, 700, "Kliniken är stängd"]
    assert from_record(to_record(event)) == event
    # version 1, from journals written before reasons: none
    assert from_record(["Cancelled", 1, "AB-b1", "patient", 100, 0]) == Cancelled(
        "AB-b1", "patient", 100, 0, ""
    )


def test_a_refused_record_is_not_quoted() -> None:
    """A record's fields may hold free text (a reason written for the patient): errors never repeat them."""
    for bad in (
        ["Cancelled", 2, "AB-b1", "clinic", 100, 0, "Dr Svensson is ill", "extra"],
        ["Nope", 1, "Dr Svensson is ill"],
        ["Dr Svensson is ill"],
    ):
        with pytest.raises(ValueError) as raised:
            from_record(bad)
        assert "Svensson" not in str(raised.value)


def test_hours_carry_whose_they_are_since_version_2() -> None:
    """Version 1 hours were always the clinic's: they read with ``resource`` empty."""
    week = {"2": [[480, 720]]}
    assert from_record(["HoursSet", 1, "AB-c1", week, 740000]) == HoursSet("AB-c1", week, 740000, "")
    assert from_record(["DayHoursSet", 1, "AB-c1", 740001, []]) == DayHoursSet("AB-c1", 740001, [], "")
    own = HoursSet("AB-c1", None, 740000, "AB-c1-r3")
    assert to_record(own) == ["HoursSet", 2, "AB-c1", None, 740000, "AB-c1-r3"]
    assert from_record(to_record(own)) == own
    day = DayHoursSet("AB-c1", 740001, [[780, 1200]], "AB-c1-r3")
    assert from_record(to_record(day)) == day
