"""Unit tests for server.demo.catalogue (no network): scales, determinism, ids, places, staff, hours."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from engine.model import REGION_CODES, SERVICES, Clinic, ClinicKind, Resource, ResourceKind, region_of
from server.demo.catalogue import Catalog, build_catalog, clinic_count
from server.demo.geography import SWEDEN_BBOX, municipalities, municipality

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
