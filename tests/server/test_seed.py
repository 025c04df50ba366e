"""Unit tests for server.demo.seed (no network): seed commands and pre-booked times, applied to the engine."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from engine.commands import Book, OpenDays, RegisterClinic
from engine.events import from_record
from engine.model import REGION_CODES, REGIONS, ResourceKind, region_of
from engine.queries import next_free
from persistence.codec import unpack_events
from server.demo.catalogue import build_catalog
from server.demo.seed import BOOKINGS_PER_PATIENT, FILL_MAX, fill_share, prebook_commands, seed_commands


def test_seed_commands_register_then_open_every_resource() -> None:
    catalog = build_catalog("demo", rng_seed=3)
    commands = seed_commands("demo", first_day=739_000, days=30, rng_seed=3)
    assert set(commands) == set(catalog)
    for region, cmds in commands.items():
        registers = [c for c in cmds if isinstance(c, RegisterClinic)]
        opens = [c for c in cmds if isinstance(c, OpenDays)]
        assert cmds == [*registers, *opens]
        assert [(r.clinic, r.resources) for r in registers] == [
            (replace(c, open_ahead_days=29), res) for c, res in catalog[region]
        ]
        assert [o.resource for o in opens] == [r.id for _, res in catalog[region] for r in res]
        assert all(o.first_day == 739_000 and o.days == 30 for o in opens)


def test_the_engine_accepts_every_seed_command() -> None:
    from datetime import date, datetime

    from engine.calendar import TZ
    from engine.state import RegionState

    first = date(2026, 3, 23)  # a Monday; the week holds the spring DST switch
    now = int(datetime(2026, 3, 22, 23, 59, tzinfo=TZ).timestamp())
    for region, commands in seed_commands(300, first_day=first.toordinal(), days=7, rng_seed=5).items():
        state = RegionState(region)
        for command in commands:
            state.apply(command, now)  # raises Refused if the engine rejects anything
        for clinic in state.clinics:
            assert state.free_count(clinic, first.toordinal()) > 0, clinic


def test_the_seeded_clinics_stay_open_ahead_as_the_days_pass() -> None:
    """The seed's clinics ask the rolling horizon for the days the seed opened: the day after the
    seed it opens one new day per resource (before: open_ahead_days 0, and the demo ran out of days)."""
    from engine.calendar import day_of_epoch
    from engine.commands import OpenAhead
    from engine.events import DaysOpened
    from server.demo.seed import seeded_state

    now = _midnight(PREBOOK_FIRST) + 8 * 3600
    region, clinics = next((r, c) for r, c in build_catalog(40).items() if c)
    state, _, _ = seeded_state(region, clinics, now=now, days=30)
    assert {c.open_ahead_days for c in state.clinics.values()} == {29}
    assert state.apply(OpenAhead(region, 400), now) == []  # the seed opened them all
    tomorrow = now + 24 * 3600
    opened = state.apply(OpenAhead(region, 400), tomorrow)
    assert sorted(opened, key=lambda e: e.resource) == [  # type: ignore[union-attr]
        DaysOpened(r, day_of_epoch(now) + 30, 1) for r in sorted(r.id for _, res in clinics for r in res)
    ]


# --- pre-booked times -----------------------------------------------------------------------

PREBOOK_FIRST = 740_062  # 2027-03-22, a Monday; the week holds the spring DST switch


def _seeded_states(scale: int, days: int, rng_seed: int = 2) -> tuple[dict[str, Any], int]:
    from engine.state import RegionState

    now = _midnight(PREBOOK_FIRST) - 60
    states: dict[str, Any] = {}
    for region, commands in seed_commands(
        scale, first_day=PREBOOK_FIRST, days=days, rng_seed=rng_seed
    ).items():
        state = states[region] = RegionState(region)
        for command in commands:
            state.apply(command, now)
        state.take_changes()
    return states, now


def _midnight(day: int) -> int:
    from datetime import date, datetime

    from engine.calendar import TZ

    d = date.fromordinal(day)
    return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp())


def test_prebook_is_deterministic_and_the_seed_matters() -> None:
    catalog = build_catalog(120, rng_seed=2)
    first = prebook_commands(catalog, 0.3, first_day=PREBOOK_FIRST, days=20, rng_seed=4)
    assert first == prebook_commands(catalog, 0.3, first_day=PREBOOK_FIRST, days=20, rng_seed=4)
    assert first != prebook_commands(catalog, 0.3, first_day=PREBOOK_FIRST, days=20, rng_seed=5)
    assert set(first) == REGION_CODES


def test_prebook_ids_are_opaque_and_carry_the_region() -> None:
    per_region = prebook_commands(build_catalog(120, rng_seed=2), 0.3, first_day=PREBOOK_FIRST, days=20)
    for region, books in per_region.items():
        assert books, region
        assert len({b.booking_id for b in books}) == len(books)
        for b in books:
            assert region_of(b.booking_id) == region and re.fullmatch(rf"{region}-s\d+", b.booking_id)
            assert re.fullmatch(r"seed-p\d+", b.patient), b.patient  # an opaque id, never a name
            assert region_of(b.resource) == region
        per_patient = Counter(b.patient for b in books)
        assert max(per_patient.values()) <= BOOKINGS_PER_PATIENT


@pytest.mark.parametrize("from_state", [False, True])
def test_the_engine_accepts_every_prebook_command_and_the_share_is_met(from_state: bool) -> None:
    days = 28
    states, now = _seeded_states(150, days)
    source: Any = states if from_state else build_catalog(150, rng_seed=2)
    per_region = prebook_commands(source, 0.3, first_day=PREBOOK_FIRST, days=days, rng_seed=1)
    free_before = {
        r: sum(s.free_count(c, d) for c in s.clinics for d in range(PREBOOK_FIRST, PREBOOK_FIRST + days))
        for r, s in states.items()
    }
    booked_cells = open_cells = 0
    for region, books in per_region.items():
        state = states[region]
        for book in books:
            state.apply(book, now)  # raises Refused if any time does not fit
        state.take_changes()
        assert state.booking_count() == len(books)
        booked_cells += sum(b.cells for b in state.all_bookings())
        open_cells += free_before[region]
    expected = sum(fill_share(d, 0.3, days) for d in range(days)) / days
    assert expected == pytest.approx(0.3, abs=0.02)
    # whole appointments: a day's last one may overshoot its target, a crowded day may fall short
    assert booked_cells / open_cells == pytest.approx(expected, abs=0.05)


def test_prebook_on_a_state_skips_cells_already_taken() -> None:
    states, now = _seeded_states(40, 7)
    first = prebook_commands(states, 0.5, first_day=PREBOOK_FIRST, days=7, rng_seed=1)
    for region, books in first.items():
        for book in books:
            states[region].apply(book, now)
    # a second round on the filled states books only cells still FREE: the engine takes all of it
    second = prebook_commands(states, 0.3, first_day=PREBOOK_FIRST, days=7, rng_seed=9)
    for region, books in second.items():
        state = states[region]
        for book in books:
            state.apply(
                replace(
                    book,
                    booking_id=book.booking_id.replace("-s", "-t"),
                    patient=book.patient.replace("seed-p", "seed-q"),
                ),
                now,
            )


def test_near_days_are_booked_more_than_far_days() -> None:
    days = 90
    assert fill_share(0, 0.3, days) > 0.8
    assert fill_share(14, 0.3, days) > 2 * fill_share(80, 0.3, days)
    assert all(fill_share(d, 0.3, days) >= fill_share(d + 1, 0.3, days) for d in range(days - 1))
    assert all(fill_share(d, 1.0, days) <= FILL_MAX for d in range(days))
    per_region = prebook_commands(build_catalog(60, rng_seed=2), 0.3, first_day=PREBOOK_FIRST, days=days)
    by_week = Counter((b.day - PREBOOK_FIRST) // 7 for books in per_region.values() for b in books)
    assert by_week[0] > 2 * by_week[11] > 0


def test_prebook_mix_fits_who_performs_it() -> None:
    catalog = build_catalog(120, rng_seed=2)
    kinds = {r.id: r.kind for entries in catalog.values() for _, res in entries for r in res}
    per_region = prebook_commands(catalog, 0.3, first_day=PREBOOK_FIRST, days=14)
    services = Counter(b.service for books in per_region.values() for b in books)
    assert set(services) == {"checkup", "cleaning", "emergency", "filling", "child_checkup"}
    assert services.most_common(1)[0][0] in ("checkup", "cleaning")
    for books in per_region.values():
        for b in books:
            if kinds[b.resource] is ResourceKind.HYGIENIST:
                assert b.service in ("cleaning", "child_checkup")


def test_prebook_starts_after_not_before_and_share_bounds() -> None:
    catalog = build_catalog(60, rng_seed=2)
    noon = _midnight(PREBOOK_FIRST) + 12 * 3600
    states, _ = _seeded_states(60, 3)
    per_region = prebook_commands(catalog, 0.5, first_day=PREBOOK_FIRST, days=3, not_before=noon)
    for region, books in per_region.items():
        state = states[region]
        for b in books:
            state.apply(b, noon)  # IN_PAST would raise
    assert any(b.day == PREBOOK_FIRST for books in per_region.values() for b in books)
    assert all(
        not books for books in prebook_commands(catalog, 0.0, first_day=PREBOOK_FIRST, days=3).values()
    )
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            prebook_commands(catalog, bad, first_day=PREBOOK_FIRST, days=3)


@pytest.mark.parametrize("workers", [1, 2])
async def test_seed_journal_stores_each_region_as_a_snapshot_the_actors_recover(
    tmp_path: Any, workers: int
) -> None:
    """Real actors over a real FileJournal: the seed is one journal entry per region (its clinics
    and opened days) and a snapshot at it with the pre-booked times; the actors recover exactly
    those times, and the journal takes new bookings after the snapshot (a restart has both)."""
    from persistence.file_journal import FileJournal
    from server.regions.routing import Regions
    from server.serve import journal_is_empty, seed_journal

    days = 14 if workers == 1 else 3
    now = _midnight(PREBOOK_FIRST) + 10 * 3600
    journal = FileJournal(tmp_path)
    await journal.open()
    try:
        assert await journal_is_empty(journal)
        seeded = await seed_journal(journal, "42", days=days, now=now, booked=0.3, workers=workers)
        assert not await journal_is_empty(journal)
        seeded_regions = {r for r, clinics in build_catalog(42).items() if clinics}
        assert {r.code: await journal.last_position(r.code) for r in REGIONS} == {
            r.code: int(r.code in seeded_regions) for r in REGIONS
        }
        events = [
            from_record(record)
            async for entry in journal.read("AB")
            for record in unpack_events(entry.payload)
        ]
        assert {type(e).__name__ for e in events} == {"ClinicRegistered", "DaysOpened"}
    finally:
        await journal.close()
    catalog = build_catalog(42)
    expected = prebook_commands(catalog, 0.3, first_day=PREBOOK_FIRST, days=days, not_before=now + 15 * 60)
    assert seeded.clinics == 42
    assert seeded.bookings == sum(len(books) for books in expected.values()) > 0
    assert seeded.refused == 0
    assert seeded.first_clinic == min(c.id for c, _ in catalog["AB"])

    def catalog_clinic_of(catalog: Any, resource: str) -> str:
        return next(c.id for c, resources in catalog[region] for r in resources if r.id == resource)

    def held(state: Any) -> dict[str, tuple[str, int, int]]:
        return {b.id: (b.resource, b.day, b.cell) for b in state.all_bookings()}

    region, books = next((r, b) for r, b in expected.items() if b)
    late: Book | None = None
    for _restart in range(2):  # the seeded store, then a restart of it with one booking journaled
        journal = FileJournal(tmp_path)
        await journal.open()
        regions = Regions(journal, clock=lambda: float(now))
        await regions.start()
        try:
            for code, books_of in expected.items():
                extra = {late.booking_id} if late is not None and code == region else set()
                got = await regions.query(code, held)
                assert set(got) == {b.booking_id for b in books_of} | extra
                assert all(got[b.booking_id] == (b.resource, b.day, b.cell) for b in books_of)
            if late is None:
                clinic, service = catalog_clinic_of(catalog, books[0].resource), books[0].service
                day, cell, resource = await regions.query(
                    region,
                    lambda s: next_free(s, clinic, service, PREBOOK_FIRST, days, now),  # noqa: B023
                )
                late = Book(f"{region}-late", "p-late", resource, service, day, cell)
                await regions.submit(late)
                assert await journal.last_position(region) == 2
        finally:
            await regions.stop()
            await journal.close()
