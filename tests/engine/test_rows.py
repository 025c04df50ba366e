"""Unit tests: engine.rows — compact per-resource rows, opening masks, memory per resource-day (no network)."""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import replace
from datetime import date

from slot_world import MONDAY, make_clinic, make_resources

from engine.calendar import day_of
from engine.cells import BUFFER, CLOSED, FREE, HELD
from engine.commands import OpenDays, RegisterClinic
from engine.model import DEFAULT_HOURS
from engine.rows import OpeningMasks, ResourceRow, day_mask, runs, weekday_template
from engine.state import RegionState


def test_row_cover_and_offsets() -> None:
    row = ResourceRow("AB-c1-r1", "AB-c1", 15)
    assert row.offset(MONDAY) == -1 and row.day(MONDAY) == bytes(96)
    row.cover(MONDAY, 2)
    assert (row.first_day, row.days, row.offset(MONDAY + 1)) == (MONDAY, 2, 96)
    row.buf[96] = FREE
    row.cover(MONDAY - 1, 1)  # grow at the front: data moves with its day
    assert (row.first_day, row.days) == (MONDAY - 1, 3)
    assert row.day(MONDAY + 1)[0] == FREE and row.offset(MONDAY + 2) == -1
    assert isinstance(row.buf, bytearray) and len(row.buf) == 3 * 96


def test_masks_and_runs() -> None:
    monday = weekday_template(DEFAULT_HOURS, 1, 15)
    assert runs(monday, FREE) == [(32, 16), (52, 16)]
    assert weekday_template(DEFAULT_HOURS, 6, 15) == bytes(96)
    spring = day_of(date(2027, 3, 28))
    all_day = weekday_template({7: ((0, 1440),)}, 7, 15)
    assert runs(day_mask(all_day, spring, 15), CLOSED) == [(8, 4)]
    half_hours = weekday_template({1: ((8 * 60 + 15, 9 * 60),)}, 1, 30)
    assert runs(half_hours, FREE) == [(17, 1)]  # 08:15-08:30 is not a whole 30-minute cell


def test_memory_per_resource_day_fits_all_of_sweden() -> None:
    """13,000 resources x 90 days must fit well under 512 MB: measure 300 resources and scale."""
    state = RegionState("AB")
    now = 0
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for c in range(100):
            cid = f"AB-c{c}"
            resources = make_resources(cid, n=3)
            state.apply(RegisterClinic(make_clinic(cid), resources), now)
            for r in resources:
                state.apply(OpenDays(r.id, MONDAY, 90), now)
            state.take_changes()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    per_resource = used / 300
    assert per_resource * 13_000 < 256 * 2**20, f"{per_resource:.0f} bytes per resource"
    print(f"{per_resource:.0f} bytes per resource (90 days)")


def test_fill_and_write_return_the_free_count_change() -> None:
    row = ResourceRow("AB-c1-r1", "AB-c1", 15)
    row.cover(MONDAY, 1)
    assert row.write(MONDAY, 32, bytes([FREE]) * 8) == 8 and row.free_count(MONDAY) == 8
    assert row.fill(MONDAY, 30, 4, HELD) == -2  # two CLOSED, two FREE cells
    assert row.fill(MONDAY, 30, 4, FREE) == 4 and row.free_count(MONDAY) == 10
    assert row.fill(MONDAY, 36, 2, BUFFER) == -2 and row.cells(MONDAY, 35, 4) == bytes(
        [FREE, BUFFER, BUFFER, FREE]
    )
    assert row.write(MONDAY, 36, bytes([FREE, CLOSED])) == 1 and row.free_count(MONDAY) == 9
    assert row.free_count(MONDAY + 1) == 0


def test_opening_masks_follow_the_weekday_and_forget_changed_hours() -> None:
    masks = OpeningMasks()
    clinic = make_clinic()
    assert masks.of(clinic, MONDAY) == weekday_template(DEFAULT_HOURS, 1, 15)
    assert masks.of(clinic, MONDAY + 5) == bytes(96)  # Saturday: closed by default
    saturdays = replace(clinic, hours={**DEFAULT_HOURS, 6: ((9 * 60, 13 * 60),)})
    assert masks.of(saturdays, MONDAY + 5) == bytes(96)  # cached for the clinic id...
    masks.forget(clinic.id)
    assert runs(masks.of(saturdays, MONDAY + 5), FREE) == [(36, 16)]  # ...until forgotten
