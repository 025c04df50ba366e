"""Unit tests: engine.queries — free starts, next free time, summaries, a clinic's day (no network)."""

from __future__ import annotations

from slot_world import MONDAY, cell, epoch, make_clinic, make_resources, world

from engine.commands import Block, Book, OpenDays, RegisterClinic
from engine.queries import (
    bookable_summary,
    clinic_day,
    free_starts,
    next_free,
    prepare_summaries,
    region_summary,
)

R1, R2 = "AB-c1-r1", "AB-c1-r2"


def brute_starts(state, clinic, service, day, now):  # type: ignore[no-untyped-def]
    """Reference: try every (cell, resource) the slow way."""
    from engine.calendar import cell_epoch

    out = []
    for res in state.resources_of(clinic):
        k = state.cells_needed(res.id, service)
        if k is None:
            continue
        row = state.row(res.id, day)
        for c in range(96 - k + 1):
            if all(row[c + i] == 1 for i in range(k)) and cell_epoch(day, c, 15) >= now:
                out.append((c, res.id))
    return sorted(out)


def test_free_starts_matches_brute_force() -> None:
    state, now = world(days=3)
    state.apply(Book("AB-b1", "p1", R1, "filling", MONDAY, cell(9)), now)
    state.apply(Block(R2, MONDAY, cell(10), 3), now)
    state.apply(Book("AB-b2", "p2", R2, "checkup", MONDAY + 1, cell(16, 30)), now)
    for service in ("checkup", "filling", "cleaning", "child_checkup"):
        result = free_starts(state, "AB-c1", service, MONDAY, 4, now)
        assert [d for d, _ in result] == [MONDAY, MONDAY + 1, MONDAY + 2, MONDAY + 3]
        for day, starts in result:
            assert starts == brute_starts(state, "AB-c1", service, day, now)
    monday = dict(free_starts(state, "AB-c1", "filling", MONDAY, 1, now))[MONDAY]
    assert (cell(9), R1) not in monday and (cell(8), R1) in monday and (cell(8, 15), R1) not in monday
    assert (cell(11), R1) in monday and (cell(11, 15), R1) not in monday  # would run into lunch


def test_free_starts_future_only_and_service_filter() -> None:
    state, _ = world(days=1)
    state.apply(
        RegisterClinic(make_clinic(), make_resources(n=2) + make_resources(n=3, services=("cleaning",))[2:]),
        epoch(MONDAY, 0),
    )
    state.apply(OpenDays("AB-c1-r3", MONDAY, 1), epoch(MONDAY, 0))
    now = epoch(MONDAY, 16) + 1
    [(day, starts)] = free_starts(state, "AB-c1", "checkup", MONDAY, 1, now)
    assert starts == [(cell(16, 15), R1), (cell(16, 15), R2), (cell(16, 30), R1), (cell(16, 30), R2)]
    [(day, starts)] = free_starts(state, "AB-c1", "cleaning", MONDAY, 1, now)
    assert (cell(16, 15), "AB-c1-r3") in starts
    assert free_starts(state, "AB-c9", "checkup", MONDAY, 1, now) == [(MONDAY, [])]


def test_next_free() -> None:
    state, now = world(days=2, n=1)
    assert next_free(state, "AB-c1", "checkup", MONDAY, 2, now) == (MONDAY, cell(8), R1)
    assert next_free(state, "AB-c1", "checkup", MONDAY, 2, epoch(MONDAY, 17)) == (MONDAY + 1, cell(8), R1)
    state.apply(Block(R1, MONDAY + 1, 0, 96), now)
    assert next_free(state, "AB-c1", "checkup", MONDAY, 2, epoch(MONDAY, 17)) is None
    assert next_free(state, "AB-c1", "root_canal", MONDAY, 2, now) is None


def test_region_summary_and_free_count() -> None:
    state, now = world(days=2)
    state.apply(RegisterClinic(make_clinic("AB-c0"), make_resources("AB-c0", n=1)), now)
    state.apply(Book("AB-b1", "p1", R1, "filling", MONDAY, cell(9)), now)
    assert region_summary(state, MONDAY, 3) == {"AB-c0": [0, 0, 0], "AB-c1": [60, 64, 0]}
    assert list(region_summary(state, MONDAY, 1)) == ["AB-c0", "AB-c1"]


def test_region_summary_kept_up_to_date_through_changes() -> None:
    """Summaries are kept per range and updated from the clinics changed since: each must equal
    the counts read afresh, and an answer given earlier never changes afterwards."""

    def fresh(first: int, days: int) -> dict[str, list[int]]:
        return {
            c: [state.free_count(c, d) for d in range(first, first + days)] for c in sorted(state.clinics)
        }

    state, now = world(days=3)
    before = region_summary(state, MONDAY, 3)
    kept = {c: list(v) for c, v in before.items()}
    state.apply(Book("AB-b1", "p1", R1, "filling", MONDAY, cell(9)), now)
    assert region_summary(state, MONDAY, 3) == fresh(MONDAY, 3) != kept
    assert before == kept  # the earlier answer is not changed under its reader
    state.apply(RegisterClinic(make_clinic("AB-c0"), make_resources("AB-c0", n=1)), now)  # a new clinic
    state.apply(OpenDays("AB-c0-r1", MONDAY, 2), now)
    assert list(region_summary(state, MONDAY, 3)) == ["AB-c0", "AB-c1"]
    assert region_summary(state, MONDAY, 3) == fresh(MONDAY, 3)
    state.apply(Block(R2, MONDAY + 1, cell(8), 8), now)
    assert region_summary(state, MONDAY + 1, 2) == fresh(MONDAY + 1, 2)
    assert region_summary(state, MONDAY, 3) == fresh(MONDAY, 3)


def test_clinic_day() -> None:
    state, now = world(days=1)
    state.apply(Book("AB-b1", "p1", R2, "checkup", MONDAY, cell(9)), now)
    view = clinic_day(state, "AB-c1", MONDAY)
    assert view["clinic"] == "AB-c1" and view["cell_minutes"] == 15
    assert [r["id"] for r in view["resources"]] == [R1, R2]
    cells = view["resources"][1]["cells"]
    assert len(cells) == 96 and cells[cell(8)] == "1" and cells[cell(9)] == "3" and cells[0] == "0"
    assert [b["id"] for b in view["bookings"]] == ["AB-b1"]
    assert view["bookings"][0]["patient"] == "p1"


def test_next_free_is_the_first_of_free_starts_on_a_busy_week() -> None:
    """next_free stops at the first fit; it must find what listing every start finds first."""
    import random

    state, now = world(days=5)
    rng = random.Random(11)
    for n in range(300):  # book about half the week at random
        resource, day = rng.choice((R1, R2)), MONDAY + rng.randrange(5)
        try:
            state.apply(Book(f"AB-r{n}", f"p{n % 97}", resource, "checkup", day, rng.randrange(96)), now)
        except Exception:
            continue
    for service in ("checkup", "filling", "cleaning", "child_checkup"):
        for at in (now, epoch(MONDAY, 12), epoch(MONDAY + 2, 15)):
            listed = [
                (day, starts[0])
                for day, starts in free_starts(state, "AB-c1", service, MONDAY, 5, at)
                if starts
            ]
            expected = (listed[0][0], *listed[0][1]) if listed else None
            assert next_free(state, "AB-c1", service, MONDAY, 5, at) == expected


def test_summaries_built_in_slices_answer_as_ones_built_at_once() -> None:
    """``prepare_summaries`` with a budget builds the map's summaries a few clinics per call;
    bookings and a new clinic between the calls are in the answers read afterwards."""
    state, now = world(days=3)
    for i in range(2, 9):
        state.apply(RegisterClinic(make_clinic(f"AB-c{i}"), make_resources(f"AB-c{i}", n=1)), now)
        state.apply(OpenDays(f"AB-c{i}-r1", MONDAY, 3), now)
    calls = 0
    while not prepare_summaries(state, "checkup", MONDAY, 3, now, budget=2):
        calls += 1
        if calls == 1:
            state.apply(Book("AB-b1", "p1", "AB-c8-r1", "checkup", MONDAY, cell(9)), now)  # asked later
            state.apply(Book("AB-b2", "p2", R1, "checkup", MONDAY, cell(9)), now)  # asked already
        if calls == 2:
            state.apply(RegisterClinic(make_clinic("AB-c9"), make_resources("AB-c9", n=1)), now)
            state.apply(OpenDays("AB-c9-r1", MONDAY, 3), now)
    assert calls >= 4  # in slices, not at once
    free = {c: [state.free_count(c, d) for d in range(MONDAY, MONDAY + 3)] for c in sorted(state.clinics)}
    starts = {c: state.bookable_starts_of(c, "checkup", MONDAY, 3, now) for c in sorted(state.clinics)}
    assert region_summary(state, MONDAY, 3) == free
    assert bookable_summary(state, "checkup", MONDAY, 3, now) == starts
    assert list(free) == [f"AB-c{i}" for i in range(1, 10)] and free["AB-c8"][0] == free["AB-c2"][0] - 2
