"""Swedish geography reference data: the 290 municipalities, the 21 counties (län), and
Sweden's outline for "is this point on land" checks.

Data ships in ``server/demo/geodata/`` (see ``SOURCES.md`` there); ``ATTRIBUTION`` is the line
the UI must show wherever the map or clinic list is displayed. A county's letter is the
region code used everywhere else (``engine.model.REGIONS``). Everything is loaded once,
lazily, and returned as immutable tuples.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

_PACKAGE = "server.demo"
_DIR = "geodata"


@dataclass(frozen=True, slots=True)
class Municipality:
    code: str  # SCB municipality code, "0180"
    name: str  # SCB short name, "Stockholm"
    region: str  # county letter = region code, "AB"
    lat: float  # the municipal seat (centralort)
    lon: float
    population: int  # SCB, 31 Dec 2019


@dataclass(frozen=True, slots=True)
class County:
    code: str  # SCB county code, "01"
    region: str  # county letter = region code, "AB"
    name: str  # "Stockholms län"
    seat: str  # residensstad, "Stockholm"
    lat: float  # the seat's coordinates
    lon: float
    population: int


def _read_text(name: str) -> str:
    return resources.files(_PACKAGE).joinpath(_DIR, name).read_text(encoding="utf-8")


def _rows(name: str) -> Iterator[dict[str, str]]:
    yield from csv.DictReader(_read_text(name).splitlines())


@cache
def municipalities() -> tuple[Municipality, ...]:
    """All 290 municipalities, ordered by code."""
    out = [
        Municipality(
            code=r["municipality_code"],
            name=r["municipality_name"],
            region=r["county_letter"],
            lat=float(r["lat"]),
            lon=float(r["lon"]),
            population=int(r["population"]),
        )
        for r in _rows("se_municipalities.csv")
    ]
    return tuple(sorted(out, key=lambda m: m.code))


@cache
def counties() -> tuple[County, ...]:
    """All 21 counties, ordered by SCB county code."""
    out = [
        County(
            code=r["county_code"],
            region=r["county_letter"],
            name=r["county_name"],
            seat=r["seat"],
            lat=float(r["lat"]),
            lon=float(r["lon"]),
            population=int(r["population"]),
        )
        for r in _rows("se_counties.csv")
    ]
    return tuple(sorted(out, key=lambda c: c.code))


@cache
def _municipalities_by_code() -> dict[str, Municipality]:
    return {m.code: m for m in municipalities()}


@cache
def _municipalities_by_region() -> dict[str, tuple[Municipality, ...]]:
    by: dict[str, list[Municipality]] = {}
    for m in municipalities():
        by.setdefault(m.region, []).append(m)
    return {k: tuple(v) for k, v in by.items()}


def municipality(code: str) -> Municipality:
    """The municipality with SCB ``code``. Raises KeyError if there is none."""
    return _municipalities_by_code()[code]


def municipalities_in(region: str) -> tuple[Municipality, ...]:
    """The municipalities of one region (county letter), ordered by code; empty if unknown."""
    return _municipalities_by_region().get(region, ())


def county(region: str) -> County:
    """The county whose letter is ``region``. Raises KeyError if there is none."""
    for c in counties():
        if c.region == region:
            return c
    raise KeyError(region)


@cache
def attribution() -> str:
    """The attribution line (GeoNames CC BY 4.0 requires it) as one line of plain text."""
    lines = [ln.strip() for ln in _read_text("ATTRIBUTION.md").splitlines()]
    return next(ln for ln in lines if ln.startswith("Municipal and county data"))


# Bounding box of Sweden (with a margin), for cheap sanity checks.
SWEDEN_BBOX = (55.0, 10.9, 69.2, 24.2)  # (min_lat, min_lon, max_lat, max_lon)


class _Outline:
    """Even-odd point-in-polygon over every ring of the national outline (holes for the big
    lakes included), with edges bucketed into latitude bands so a query checks a few dozen
    edges instead of thousands."""

    BAND = 0.05  # degrees of latitude per bucket

    def __init__(self, geometry: dict[str, Any]) -> None:
        polygons = (
            geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
        )
        self._bands: dict[int, list[tuple[float, float, float, float]]] = {}
        for polygon in polygons:
            for ring in polygon:
                for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
                    if y1 == y2:
                        continue
                    lo, hi = min(y1, y2), max(y1, y2)
                    for band in range(math.floor(lo / self.BAND), math.floor(hi / self.BAND) + 1):
                        self._bands.setdefault(band, []).append((x1, y1, x2, y2))

    def contains(self, lat: float, lon: float) -> bool:
        inside = False
        for x1, y1, x2, y2 in self._bands.get(math.floor(lat / self.BAND), ()):
            if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside


@cache
def _outline() -> _Outline:
    doc = json.loads(_read_text("se_outline.geojson"))
    return _Outline(doc["features"][0]["geometry"])


def on_land(lat: float, lon: float) -> bool:
    """True if (lat, lon) lies inside Sweden's generalised outline (Vänern, Vättern and
    Mälaren are holes). Coastal points can be off by a couple of km either way."""
    return _outline().contains(lat, lon)
