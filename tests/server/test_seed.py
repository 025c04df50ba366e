"""Unit tests for server.demo.seed (no network): scales, determinism, ids, places, staff, hours."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from engine.commands import OpenDays, RegisterClinic
from engine.model import REGION_CODES, SERVICES, Clinic, ClinicKind, Resource, ResourceKind, region_of
from server.demo.geography import SWEDEN_BBOX, municipalities, municipality
from server.demo.seed import (
    BOOKINGS_PER_PATIENT,
    FILL_MAX,
    Catalog,
    build_catalog,
    clinic_count,
    fill_share,
    prebook_commands,
    seed_commands,
)

ALL_SERVICES = {s.id for s in SERVICES}


def clinics_of(catalog: Catalog) -> list[tuple[Clinic, tuple[Resource, ...]]]:
    return [entry for entries in catalog.values() for entry in entries]


@pytest.fixture(scope="module")
def sweden() -> Catalog:
    return build_catalog("sweden")


@pytest.fixture(scope="module")
def demo() -> Catalog:
    return build_catalog("demo")


def test_same_seed_same_catalog_other_seed_other_catalog() -> None:
    assert build_catalog("small", rng_seed=7) == build_catalog("small", rng_seed=7)
    assert build_catalog("small", rng_seed=7) != build_catalog("small", rng_seed=8)


def test_scale_names_and_numbers() -> None:
    assert clinic_count("demo") == 60
    assert clinic_count("small") == 400
    assert clinic_count("sweden") == 4430
    assert clinic_count(123) == 123
    assert clinic_count("77") == 77
    for bad in ("huge", -1, True):
        with pytest.raises(ValueError):
            clinic_count(bad)


@pytest.mark.parametrize("total", [0, 1, 5, 21, 42, 100, 291])
def test_an_int_scale_gives_exactly_that_many_clinics(total: int) -> None:
    catalog = build_catalog(total)
    assert set(catalog) == REGION_CODES
    assert len(clinics_of(catalog)) == total


def test_demo_has_every_region_alive(demo: Catalog) -> None:
    assert 55 <= len(clinics_of(demo)) <= 65
    for region, entries in demo.items():
        assert len(entries) >= 2, region
        assert any(c.kind is ClinicKind.PUBLIC for c, _ in entries), region


def test_small_scale_count() -> None:
    assert 380 <= len(clinics_of(build_catalog("small"))) <= 420


def test_sweden_counts_and_split(sweden: Catalog) -> None:
    entries = clinics_of(sweden)
    kinds = Counter(c.kind for c, _ in entries)
    assert 4300 <= len(entries) <= 4500
    assert 12_000 <= sum(len(res) for _, res in entries) <= 14_000
    assert set(sweden) == REGION_CODES and all(sweden.values())
    assert 850 <= kinds[ClinicKind.PUBLIC] <= 910
    assert 3450 <= kinds[ClinicKind.PRIVATE] <= 3650


def test_sweden_has_folktandvarden_in_every_municipality(sweden: Catalog) -> None:
    public = {c.municipality for c, _ in clinics_of(sweden) if c.kind is ClinicKind.PUBLIC}
    assert public == {m.code for m in municipalities()}


def test_big_cities_get_many_private_clinics(sweden: Catalog) -> None:
    private = Counter(c.municipality_name for c, _ in clinics_of(sweden) if c.kind is ClinicKind.PRIVATE)
    top3 = [name for name, _ in private.most_common(3)]
    assert top3 == ["Stockholm", "Göteborg", "Malmö"]
    assert private["Stockholm"] > 200


def test_every_id_carries_its_region(sweden: Catalog) -> None:
    seen: set[str] = set()
    for region, entries in sweden.items():
        for clinic, resources in entries:
            assert region_of(clinic.id) == region == clinic.region
            assert re.fullmatch(rf"{region}-c\d+", clinic.id)
            for res in resources:
                assert region_of(res.id) == region
                assert res.clinic == clinic.id and re.fullmatch(rf"{clinic.id}-r\d+", res.id)
            ids = [clinic.id, *(r.id for r in resources)]
            assert not seen.intersection(ids)
            seen.update(ids)


def test_every_clinic_is_in_a_real_municipality_of_its_region(sweden: Catalog) -> None:
    for clinic, _ in clinics_of(sweden):
        muni = municipality(clinic.municipality)  # KeyError if not real
        assert muni.region == clinic.region
        assert muni.name == clinic.municipality_name


def test_positions_are_in_sweden_and_near_the_seat(sweden: Catalog) -> None:
    min_lat, min_lon, max_lat, max_lon = SWEDEN_BBOX
    for clinic, _ in clinics_of(sweden):
        assert min_lat <= clinic.lat <= max_lat and min_lon <= clinic.lon <= max_lon, clinic.id
        muni = municipality(clinic.municipality)
        km = math.hypot(
            (clinic.lat - muni.lat) * 111.32,
            (clinic.lon - muni.lon) * 111.32 * math.cos(math.radians(muni.lat)),
        )
        assert km <= 9.01, clinic.id
        if muni.population < 20_000:
            assert km <= 2.0, clinic.id


def test_staff_counts_and_services(sweden: Catalog) -> None:
    for clinic, resources in clinics_of(sweden):
        kinds = Counter(r.kind for r in resources)
        if clinic.kind is ClinicKind.PUBLIC:
            assert 3 <= kinds[ResourceKind.DENTIST] <= 6 and 1 <= kinds[ResourceKind.HYGIENIST] <= 3
        else:
            assert 1 <= kinds[ResourceKind.DENTIST] <= 4 and 0 <= kinds[ResourceKind.HYGIENIST] <= 2
        for res in resources:
            if res.kind is ResourceKind.HYGIENIST:
                assert "filling" not in res.services
                assert set(res.services) == {"cleaning", "child_checkup"}
            else:
                assert set(res.services) == ALL_SERVICES
        assert set(clinic.services) == {s for r in resources for s in r.services}


def test_opening_hours_fit_the_cells(sweden: Catalog) -> None:
    cell_sizes = Counter(c.cell_minutes for c, _ in clinics_of(sweden))
    assert set(cell_sizes) <= {10, 15, 20} and cell_sizes[15] > 0.9 * sum(cell_sizes.values())
    saturday = 0
    for clinic, _ in clinics_of(sweden):
        assert set(clinic.hours) == set(range(1, 8))
        saturday += bool(clinic.hours[6])
        for intervals in clinic.hours.values():
            previous_close = 0
            for open_, close in intervals:
                assert previous_close <= open_ < close <= 24 * 60
                assert open_ % clinic.cell_minutes == 0 and close % clinic.cell_minutes == 0
                previous_close = close
    assert 0 < saturday < 0.3 * len(clinics_of(sweden))


def test_names_addresses_phones(sweden: Catalog) -> None:
    names_per_municipality: dict[str, set[str]] = {}
    for clinic, _ in clinics_of(sweden):
        assert clinic.name not in names_per_municipality.setdefault(clinic.municipality, set())
        names_per_municipality[clinic.municipality].add(clinic.name)
        assert clinic.name.startswith("Folktandvården ") == (clinic.kind is ClinicKind.PUBLIC)
        assert re.fullmatch(r"0\d\d-\d{3} \d\d \d\d", clinic.phone), clinic.phone
        assert re.fullmatch(r".+ \d+[AB]?, \d{3} \d\d .+", clinic.address), clinic.address


def test_seed_commands_register_then_open_every_resource() -> None:
    catalog = build_catalog("demo", rng_seed=3)
    commands = seed_commands("demo", first_day=739_000, days=30, rng_seed=3)
    assert set(commands) == set(catalog)
    for region, cmds in commands.items():
        registers = [c for c in cmds if isinstance(c, RegisterClinic)]
        opens = [c for c in cmds if isinstance(c, OpenDays)]
        assert cmds == [*registers, *opens]
        assert [(r.clinic, r.resources) for r in registers] == catalog[region]
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
        assert len(state.bookings) == len(books)
        booked_cells += sum(b.cells for b in state.bookings.values())
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


async def test_seed_regions_books_the_share_through_the_actors(tmp_path: Any) -> None:
    """Real actors over a real FileJournal: the pre-booked times are journaled like any booking."""
    from persistence.file_journal import FileJournal
    from server.regions.routing import Regions
    from server.serve import seed_regions

    journal = FileJournal(tmp_path)
    await journal.open()
    regions = Regions(journal)
    await regions.start()
    try:
        now = _midnight(PREBOOK_FIRST) + 10 * 3600
        clinics = await seed_regions(regions, "42", days=14, now=now, booked=0.3)
        assert clinics == 42
        expected = prebook_commands(
            build_catalog(42), 0.3, first_day=PREBOOK_FIRST, days=14, not_before=now + 15 * 60
        )
        for region, books in expected.items():
            held = await regions.query(
                region, lambda state: {b.id: (b.resource, b.day, b.cell) for b in state.bookings.values()}
            )
            assert held == {b.booking_id: (b.resource, b.day, b.cell) for b in books}
    finally:
        await regions.stop()
        await journal.close()


async def test_the_notifier_and_webhooks_start_after_the_seed(tmp_path: Any) -> None:
    """Nobody is told about pre-booked times: both consumers' cursors sit at the seed's end."""
    from engine.model import REGIONS
    from persistence.file_journal import FileJournal
    from server.consumers.notify.ledger import Ledger
    from server.consumers.webhooks.store import WebhookStore
    from server.regions.routing import Regions
    from server.serve import pass_over_seed, seed_regions
    from server.settings import Settings

    settings = Settings.from_env(data_dir=tmp_path)
    journal = FileJournal(tmp_path)
    await journal.open()
    regions = Regions(journal)
    await regions.start()
    try:
        await seed_regions(regions, "42", days=7, now=_midnight(PREBOOK_FIRST), booked=0.3)
        await pass_over_seed(settings, journal)
        ends = {r.code: await journal.last_position(r.code) for r in REGIONS}
    finally:
        await regions.stop()
        await journal.close()
    assert all(ends.values())
    ledger, hooks = Ledger(tmp_path / "notify.sqlite3"), WebhookStore(tmp_path / "webhooks.sqlite3")
    try:
        assert ledger.cursors() == ends
        assert hooks.cursors() == ends
    finally:
        ledger.close()
        hooks.close()
