"""Unit tests: engine.offers — available runs, the first start, the first fitting entry (no network).

The rules as the region applies them (join order, skipping, passing on) are tested through
``RegionState`` in test_waitlist.py; these pin the matching functions on a hand-made row.
"""

from __future__ import annotations

from typing import Any

from slot_world import MONDAY, cell, epoch, make_clinic

from engine.cells import BOOKED, BUFFER, FREE, HELD
from engine.offers import available_runs, first_offer, first_start
from engine.rows import ResourceRow
from engine.waitlist import WaitEntry


def a_row(*runs: tuple[int, int, int]) -> ResourceRow:
    """AB-c1-r1 with MONDAY covered, all CLOSED but the (first, n, value) runs given."""
    row = ResourceRow("AB-c1-r1", "AB-c1", 15)
    row.cover(MONDAY, 1)
    for first, n, value in runs:
        row.fill(MONDAY, first, n, value)
    row.cells_for = {"checkup": 2, "filling": 4}
    return row


def entry(entry_id: str, service: str = "checkup", from_h: int = 0, to_h: int = 24, **kw: Any) -> WaitEntry:
    fields: dict[str, Any] = dict(
        id=entry_id,
        patient="p-" + entry_id,
        clinic="AB-c1",
        municipality="",
        service=service,
        first_day=MONDAY,
        days=1,
        from_minute=from_h * 60,
        to_minute=to_h * 60,
        seq=1,
        joined_at=0,
    )
    fields.update(kw)
    return WaitEntry(**fields)


def test_available_runs_reach_into_free_and_buffer_neighbours() -> None:
    row = a_row((cell(9), 2, FREE), (cell(9, 30), 2, BUFFER), (cell(10), 1, HELD), (cell(10, 15), 2, FREE))
    assert available_runs(row, MONDAY, (cell(9, 30), cell(10))) == [(cell(9), cell(10))]
    assert available_runs(row, MONDAY, (cell(9), cell(10, 30))) == [
        (cell(9), cell(10)),
        (cell(10, 15), cell(10, 45)),
    ]
    assert available_runs(row, MONDAY, (cell(8), cell(9))) == []  # nothing available in the span
    assert available_runs(row, MONDAY + 1, (cell(9), cell(10))) == []  # the day is not covered


def test_first_start_keeps_to_the_freed_span_the_run_the_window_and_now() -> None:
    e = entry("AB-w1", from_h=9, to_h=11)
    lo, hi = cell(8), cell(12)
    assert first_start(e, 2, 15, MONDAY, lo, hi, (cell(10), cell(10, 30)), epoch(MONDAY, 0)) == cell(10)
    assert first_start(e, 2, 15, MONDAY, lo, hi, (cell(8), cell(8, 30)), epoch(MONDAY, 0)) is None  # before 9
    assert (
        first_start(e, 2, 15, MONDAY, lo, hi, (cell(10, 45), cell(11)), epoch(MONDAY, 0)) is None
    )  # ends after 11
    assert first_start(e, 2, 15, MONDAY, lo, hi, (cell(9), cell(11)), epoch(MONDAY, 9, 20)) == cell(9, 30)
    assert first_start(e, 4, 15, MONDAY, cell(9), cell(10), (cell(9), cell(10)), 0) == cell(9)
    assert (
        first_start(e, 4, 15, MONDAY, cell(9), cell(9, 45), (cell(9), cell(9, 45)), 0) is None
    )  # run too short


def test_first_offer_goes_to_the_first_entry_that_fits_and_may_be_offered() -> None:
    row = a_row((cell(9), 2, FREE), (cell(9, 30), 6, BOOKED))
    clinic = make_clinic()
    span = (cell(9), cell(9, 30))
    filling, busy, late, fits = (
        entry("AB-w1", "filling"),
        entry("AB-w2"),
        entry("AB-w3", from_h=12),
        entry("AB-w4"),
    )
    offer = first_offer(
        row,
        clinic,
        MONDAY,
        span,
        [filling, busy, late, fits],
        epoch(MONDAY, 0),
        lambda p, c, now: p != busy.patient,
    )
    assert offer is not None
    assert (offer.entry_id, offer.hold_id, offer.patient, offer.cell, offer.cells) == (
        "AB-w4",
        "AB-w4-o",
        fits.patient,
        cell(9),
        2,
    )
    assert offer.expires_at == epoch(MONDAY, 0) + clinic.offer_minutes * 60
    offered = entry("AB-w5", offer="AB-w5-o")  # an entry with an open offer is skipped
    assert first_offer(row, clinic, MONDAY, span, [offered], epoch(MONDAY, 0), lambda p, c, now: True) is None
