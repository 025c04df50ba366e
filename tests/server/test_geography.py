"""Unit tests for server.demo.geography (no network): the shipped municipality and county data."""

from __future__ import annotations

import pytest

from engine.model import REGION_CODES, REGIONS
from server.demo.geography import (
    SWEDEN_BBOX,
    attribution,
    counties,
    county,
    municipalities,
    municipalities_in,
    municipality,
    on_land,
)


def test_290_municipalities_in_21_counties() -> None:
    assert len(municipalities()) == 290
    assert {c.region for c in counties()} == REGION_CODES
    assert {m.region for m in municipalities()} == REGION_CODES
    assert len(municipalities_in("AB")) == 26 and len(municipalities_in("O")) == 49
    assert sum(m.population for m in municipalities()) == 10_327_589


def test_county_names_match_the_regions() -> None:
    for region in REGIONS:
        assert county(region.code).name == region.name
        assert county(region.code).population == sum(m.population for m in municipalities_in(region.code))


def test_known_municipalities() -> None:
    sthlm = municipality("0180")
    assert (sthlm.name, sthlm.region, sthlm.lat, sthlm.lon) == ("Stockholm", "AB", 59.3326, 18.0649)
    assert municipality("2584").name == "Kiruna"
    with pytest.raises(KeyError):
        municipality("9999")


def test_every_seat_in_the_bounding_box() -> None:
    min_lat, min_lon, max_lat, max_lon = SWEDEN_BBOX
    for m in municipalities():
        assert min_lat <= m.lat <= max_lat and min_lon <= m.lon <= max_lon


@pytest.mark.parametrize(
    ("lat", "lon", "land"),
    [
        (59.3326, 18.0649, True),  # Stockholm
        (67.8557, 20.2251, True),  # Kiruna
        (57.6409, 18.2960, True),  # Visby, Gotland
        (58.90, 13.20, False),  # Vänern
        (58.30, 14.50, False),  # Vättern
        (57.00, 19.50, False),  # the Baltic
        (59.91, 10.75, False),  # Oslo
    ],
)
def test_on_land(lat: float, lon: float, land: bool) -> None:
    assert on_land(lat, lon) is land


def test_attribution_names_geonames() -> None:
    assert "GeoNames" in attribution() and "CC BY 4.0" in attribution()
