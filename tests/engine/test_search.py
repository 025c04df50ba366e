"""Unit tests: engine.search — the earliest-free ranking answers as asking every clinic would (no network)."""

from __future__ import annotations

import random

from slot_world import ALL_SERVICES, MONDAY, cell, epoch, make_clinic, make_resources

from engine.calendar import cell_epoch
from engine.commands import Block, Book, Cancel, OpenDays, Party, RegisterClinic, Unblock
from engine.errors import Refused
from engine.model import Clinic
from engine.queries import next_free
from engine.search import earliest_clinics, prepare, ranking
from engine.state import RegionState

CLINICS = 12
MUNICIPALITIES = ("0180", "0114")


def region(days: int = 4) -> tuple[RegionState, int]:
    """Twelve clinics AB-c0..c11 of two resources, some without fillings, half in each municipality."""
    now = epoch(MONDAY, 0)
    state = RegionState("AB")
    for i in range(CLINICS):
        cid = f"AB-c{i}"
        services = ALL_SERVICES if i % 4 else ("checkup", "cleaning")
        clinic = make_clinic(cid, services=services, municipality=MUNICIPALITIES[i % 2], name=f"K{i}")
        state.apply(RegisterClinic(clinic, make_resources(cid, services=services)), now)
        for r in (1, 2):
            state.apply(OpenDays(f"{cid}-r{r}", MONDAY, days), now)
    return state, now


def brute(
    state: RegionState, service: str | None, first_day: int, days: int, now: int, limit: int, **kw: object
) -> list[tuple[Clinic, tuple[int, int, str] | None, int | None]]:
    """Reference: ask every clinic (for service None: every service it offers, the earliest
    answer), sort by start then id, the clinics with none after (by id)."""
    rows = []
    for clinic in state.clinics.values():
        if (service is not None and service not in clinic.services) or (
            kw.get("municipality") and clinic.municipality != kw["municipality"]
        ):
            continue
        asked = [service] if service is not None else list(clinic.services)
        found = [
            (cell_epoch(s[0], s[1], clinic.cell_minutes), s)
            for a in asked
            if (s := next_free(state, clinic.id, a, first_day, days, now))
        ]
        at, start = min(found) if found else (None, None)
        if start is None and kw.get("has_free", True):
            continue
        rows.append((clinic, start, at))
    rows.sort(key=lambda r: (r[2] is None, r[2] or 0, r[0].id))
    return rows[:limit]


def test_the_ranking_answers_as_every_clinic_asked_through_changes_and_time() -> None:
    state, now = region()
    rng = random.Random(7)
    booked: list[tuple[str, str]] = []
    blocked: list[tuple[str, int, int]] = []
    for step in range(400):
        roll = rng.random()
        resource = f"AB-c{rng.randrange(CLINICS)}-r{rng.randrange(1, 3)}"
        day = MONDAY + rng.randrange(4)
        try:
            if roll < 0.6:
                state.apply(
                    Book(f"AB-b{step}", f"p{step}", resource, "checkup", day, rng.randrange(32, 68)), now
                )
                booked.append((f"AB-b{step}", f"p{step}"))
            elif roll < 0.75 and booked:
                booking, patient = booked.pop(rng.randrange(len(booked)))
                state.apply(Cancel(booking, Party.PATIENT, patient), now)
            elif roll < 0.9:
                first = rng.randrange(32, 60)
                state.apply(Block(resource, day, first, 8), now)
                blocked.append((resource, day, first))
            elif blocked:
                resource, day, first = blocked.pop(rng.randrange(len(blocked)))
                state.apply(Unblock(resource, day, first, 8), now)
        except Refused:
            pass
        if step % 7 == 0:
            now += rng.choice((0, 60, 900, 3600))  # time goes on: starts it passes drop out
        service = rng.choice((*ALL_SERVICES, None))
        first_day, days = MONDAY + rng.randrange(2), rng.choice((1, 3))
        limit = rng.choice((1, 3, 20))
        kw = rng.choice(({}, {"municipality": "0114"}, {"has_free": False}))
        got = earliest_clinics(state, service, first_day, days, now, limit, **kw)  # type: ignore[arg-type]
        assert got == brute(state, service, first_day, days, now, limit, **kw), (step, service, kw)


def test_a_clinic_whose_start_has_begun_is_asked_again() -> None:
    state, now = region(days=1)
    [(clinic, start, at)] = earliest_clinics(state, "checkup", MONDAY, 1, now, 1)
    assert start is not None and at == epoch(MONDAY, 8) and clinic.id == "AB-c0"
    later = epoch(MONDAY, 8, 5)  # 08:00 has begun everywhere: 08:15 is the earliest now
    assert [s for _, s, _ in earliest_clinics(state, "checkup", MONDAY, 1, later, 2)] == [
        (MONDAY, cell(8, 15), "AB-c0-r1"),
        (MONDAY, cell(8, 15), "AB-c1-r1"),
    ]
    past = epoch(MONDAY, 23)  # nothing left that day: no clinic, and asking earlier again works
    assert earliest_clinics(state, "checkup", MONDAY, 1, past, 5) == []
    assert [c.id for c, _, _ in earliest_clinics(state, "checkup", MONDAY, 1, now, 2)] == ["AB-c0", "AB-c1"]


def test_any_service_is_the_earliest_start_of_the_shortest_service_that_fits() -> None:
    """AB-c1 blocked from 08:00: on r1 for four cells, on r2 for two. The first free start of any
    service is r2's 08:30 (the shortest service fits there first), not r1's 09:00."""
    state, now = region(days=2)
    state.apply(Block("AB-c1-r1", MONDAY, cell(8), 4), now)
    state.apply(Block("AB-c1-r2", MONDAY, cell(8), 2), now)
    at, start = ranking(state, None, MONDAY, 2, now).found["AB-c1"] or (0, None)
    assert start == (MONDAY, cell(8, 30), "AB-c1-r2") and at == epoch(MONDAY, 8, 30)
    assert ranking(state, "filling", MONDAY, 2, now).found.get("AB-c0") is None  # AB-c0 offers none


def test_a_ranking_built_in_slices_answers_as_one_built_at_once() -> None:
    """``prepare`` with a budget asks a few clinics per call; bookings and the clock moving on
    between the calls are in the search made afterwards."""
    state, now = region()
    calls = 0
    while not all(prepare(state, s, MONDAY, 2, now, budget=3) for s in ("checkup", "filling")):
        calls += 1
        state.apply(
            Book(f"AB-b{calls}", f"p{calls}", f"AB-c{calls % CLINICS}-r1", "checkup", MONDAY, 32), now
        )
        now += 600
    assert calls >= 4  # in slices, not at once
    for service in ("checkup", "filling"):
        assert earliest_clinics(state, service, MONDAY, 2, now, 20) == brute(
            state, service, MONDAY, 2, now, 20
        )


def test_searches_a_second_apart_build_one_ranking_in_slices_together() -> None:
    """Two searches whose clocks are a second apart, each building the cold ranking a slice at a
    time in turn, finish it together: the later clock's slice never makes the earlier one start
    afresh (which, under load, kept searches rebuilding each other's ranking for ever)."""
    state, now = region()
    turns = 0
    done = [False, False]
    while not all(done):
        for i, at in enumerate((now, now + 1)):
            done[i] = prepare(state, "checkup", MONDAY, 2, at, budget=3)
        turns += 1
        assert turns <= CLINICS, "the slices never finish"
    late = earliest_clinics(state, "checkup", MONDAY, 2, now, 20)
    assert late == brute(state, "checkup", MONDAY, 2, now + 1, 20)
    back = epoch(MONDAY, 0) - 3600  # a clock set back an hour: asked afresh, answered as of then
    assert earliest_clinics(state, "checkup", MONDAY, 2, back, 20) == brute(
        state, "checkup", MONDAY, 2, back, 20
    )
