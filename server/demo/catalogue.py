"""The demo catalogue: realistic, fictional Swedish clinics in real municipalities, with their
dentists and hygienists (``build_catalog``). ``server.demo.seed`` turns it into commands.

Scales (total clinics): ``"demo"`` 60 (every region has at least two, one of them
Folktandvården, so the map is alive everywhere), ``"small"`` 400, ``"sweden"`` 4,430
(about 880 Folktandvården and 3,550 private clinics, as TLV counts them; about 13,000
dentists and hygienists), or an ``int``.

How clinics are placed:

* Folktandvården: when there are at least as many public clinics as municipalities, every
  municipality gets one and the rest follow population; otherwise every region gets one
  (when there are 21 or more) and the rest follow population, within each region the
  largest towns first.
* Private clinics follow population to the power 1.15, so big cities get many and small
  towns few or none; every region gets at least one when there are 21 or more.
* A clinic sits within a radius of its municipality's seat that grows with the
  municipality's population (under a kilometre for the smallest, 9 km at most), and inside
  Sweden's outline (lakes excluded) whenever the seat itself is.

Names, streets, postcodes and phone numbers are made up. Phone numbers come from the
series PTS reserves for fiction (031-390 06 00..99 and 040-628 04 00..99), so none rings
a real subscriber. Everything is drawn from one ``random.Random(rng_seed)``: the same seed
gives the same catalogue.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from engine.model import (
    DEFAULT_HOURS,
    REGIONS,
    SERVICES,
    Clinic,
    ClinicKind,
    OpeningHours,
    Resource,
    ResourceKind,
)
from server.demo.geography import Municipality, municipalities, municipalities_in, on_land

Catalog = dict[str, list[tuple[Clinic, tuple[Resource, ...]]]]

SCALES: dict[str, int] = {"demo": 60, "small": 400, "sweden": 4430}
PUBLIC_SHARE = 880 / 4430  # TLV: ~880 Folktandvården of ~4,430 clinics
PRIVATE_POPULATION_EXPONENT = 1.15  # > 1: private clinics crowd into the big cities

DENTIST_SERVICES: tuple[str, ...] = tuple(s.id for s in SERVICES)
HYGIENIST_SERVICES: tuple[str, ...] = ("cleaning", "child_checkup")

# (count, weight) tables, tuned so "sweden" lands near 13,000 resources.
_PUBLIC_DENTISTS = ((3, 40), (4, 30), (5, 18), (6, 12))
_PUBLIC_HYGIENISTS = ((1, 55), (2, 33), (3, 12))
_PRIVATE_DENTISTS = ((1, 58), (2, 28), (3, 10), (4, 4))
_PRIVATE_HYGIENISTS = ((0, 48), (1, 40), (2, 12))

# First two digits of postcodes by region, roughly as the real series run.
_POSTCODE_PREFIXES: dict[str, tuple[int, int]] = {
    "AB": (10, 19),
    "C": (74, 75),
    "D": (61, 64),
    "E": (58, 61),
    "F": (55, 57),
    "G": (35, 36),
    "H": (38, 39),
    "I": (62, 62),
    "K": (37, 37),
    "M": (21, 29),
    "N": (30, 31),
    "O": (40, 54),
    "S": (65, 68),
    "T": (69, 71),
    "U": (72, 73),
    "W": (77, 79),
    "X": (80, 82),
    "Y": (85, 89),
    "Z": (83, 84),
    "AC": (90, 93),
    "BD": (94, 98),
}
_SOUTHERN_REGIONS = frozenset({"M", "K", "G", "H", "N", "F", "E", "I"})

_STREETS = (
    "Storgatan",
    "Drottninggatan",
    "Kungsgatan",
    "Järnvägsgatan",
    "Skolgatan",
    "Kyrkogatan",
    "Nygatan",
    "Torggatan",
    "Ågatan",
    "Parkgatan",
    "Sjögatan",
    "Östra Långgatan",
    "Västra vägen",
    "Södra vägen",
    "Norra allén",
    "Hantverkargatan",
    "Bergsgatan",
    "Prästgatan",
    "Trädgårdsgatan",
    "Stationsgatan",
    "Fabriksgatan",
    "Repslagargatan",
    "Vasagatan",
    "Köpmangatan",
    "Strandvägen",
    "Björkvägen",
    "Lindvägen",
    "Ekvägen",
    "Tallvägen",
    "Granvägen",
    "Rönnvägen",
    "Lärkvägen",
    "Mästargatan",
    "Smedjegatan",
    "Brogatan",
    "Kvarngatan",
    "Tullgatan",
    "Badhusgatan",
    "Magasinsgatan",
    "Sveavägen",
    "Linnégatan",
    "Esplanaden",
    "Långgatan",
    "Hamngatan",
)
_PLACES = (
    "Torget",
    "Stortorget",
    "Ån",
    "Hamnen",
    "Parken",
    "Stationen",
    "Kyrkan",
    "Bron",
    "Slottet",
    "Sjön",
    "Vattentornet",
    "Kanalen",
    "Esplanaden",
    "Lilla torget",
    "Strömmen",
)
_SURNAMES = (
    "Andersson",
    "Johansson",
    "Karlsson",
    "Nilsson",
    "Eriksson",
    "Larsson",
    "Olsson",
    "Persson",
    "Svensson",
    "Gustafsson",
    "Pettersson",
    "Jonsson",
    "Hansson",
    "Bengtsson",
    "Lindberg",
    "Lindström",
    "Lindqvist",
    "Bergström",
    "Lundberg",
    "Lundgren",
    "Sjöberg",
    "Holm",
    "Wallin",
    "Engström",
    "Hedlund",
    "Nyström",
    "Sandberg",
    "Forsberg",
    "Åberg",
    "Sundberg",
    "Ekström",
    "Håkansson",
    "Blom",
    "Lind",
    "Strand",
    "Falk",
    "Hellström",
    "Björklund",
    "Dahlberg",
    "Mattsson",
)
_COMPASS = ("Centrum", "Norr", "Söder", "Öster", "Väster")

# Where the municipality's short name is not the name of its seat town, the seat's name is
# what goes on signs and addresses.
_SEAT_TOWNS: dict[str, str] = {
    "Gotland": "Visby",
    "Botkyrka": "Tumba",
    "Haninge": "Handen",
    "Österåker": "Åkersberga",
    "Värmdö": "Gustavsberg",
    "Järfälla": "Jakobsberg",
    "Salem": "Rönninge",
    "Upplands-Bro": "Kungsängen",
    "Sigtuna": "Märsta",
    "Danderyd": "Djursholm",
    "Håbo": "Bålsta",
    "Härryda": "Mölnlycke",
    "Tjörn": "Skärhamn",
    "Orust": "Henån",
    "Ale": "Nödinge",
    "Sotenäs": "Kungshamn",
    "Tanum": "Tanumshede",
    "Mark": "Kinna",
    "Essunga": "Nossebro",
    "Dals-Ed": "Ed",
    "Härjedalen": "Sveg",
    "Berg": "Svenstavik",
    "Åre": "Järpen",
    "Ragunda": "Hammarstrand",
    "Burlöv": "Arlöv",
    "Östra Göinge": "Broby",
    "Kinda": "Kisa",
    "Ydre": "Österbymo",
    "Gagnef": "Djurås",
    "Älvkarleby": "Skutskär",
    "Lekeberg": "Fjugesta",
    "Ljusnarsberg": "Kopparberg",
    "Malung-Sälen": "Malung",
    "Nordanstig": "Bergsjö",
    "Ovanåker": "Edsbyn",
    "Hylte": "Hyltebruk",
    "Uppvidinge": "Åseda",
    "Hammarö": "Skoghall",
    "Eda": "Charlottenberg",
}

# Districts used to tell apart several clinics in one big city (keyed by municipality code).
_DISTRICTS: dict[str, tuple[str, ...]] = {
    "0180": (  # Stockholm
        "Kungsholmen",
        "Södermalm",
        "Östermalm",
        "Vasastan",
        "Norrmalm",
        "Gamla stan",
        "Liljeholmen",
        "Hornstull",
        "Fridhemsplan",
        "Hammarby sjöstad",
        "Skärholmen",
        "Farsta",
        "Vällingby",
        "Hässelby",
        "Bromma",
        "Rinkeby",
        "Tensta",
        "Spånga",
        "Kista",
        "Högdalen",
        "Hägersten",
        "Årsta",
        "Enskede",
        "Björkhagen",
        "Skarpnäck",
        "Bagarmossen",
        "Älvsjö",
        "Bandhagen",
        "Hökarängen",
        "Rågsved",
        "Sköndal",
        "Aspudden",
        "Midsommarkransen",
        "Västertorp",
        "Fruängen",
        "Gubbängen",
        "Johanneshov",
        "Gärdet",
        "Hjorthagen",
        "Akalla",
        "Husby",
        "Blackeberg",
        "Alvik",
        "Traneberg",
        "Stureby",
    ),
    "1480": (  # Göteborg
        "Centrum",
        "Majorna",
        "Linnéstaden",
        "Hisingen",
        "Backa",
        "Biskopsgården",
        "Frölunda",
        "Angered",
        "Hammarkullen",
        "Bergsjön",
        "Kortedala",
        "Gamlestaden",
        "Redbergslid",
        "Örgryte",
        "Johanneberg",
        "Guldheden",
        "Askim",
        "Torslanda",
        "Tynnered",
        "Hjällbo",
        "Lundby",
        "Eriksberg",
        "Kungsladugård",
        "Högsbo",
        "Härlanda",
        "Lunden",
        "Kvillebäcken",
    ),
    "1280": (  # Malmö
        "Centrum",
        "Möllevången",
        "Limhamn",
        "Rosengård",
        "Värnhem",
        "Västra hamnen",
        "Husie",
        "Oxie",
        "Kirseberg",
        "Fosie",
        "Hyllie",
        "Bunkeflo",
        "Lindängen",
        "Slottsstaden",
        "Ribersborg",
        "Augustenborg",
        "Kroksbäck",
    ),
    "0380": (
        "Centrum",
        "Gottsunda",
        "Sävja",
        "Luthagen",
        "Eriksberg",
        "Gränby",
        "Stenhagen",
        "Svartbäcken",
        "Kvarngärdet",
        "Storvreta",
    ),  # Uppsala
    "0580": ("Centrum", "Ryd", "Skäggetorp", "Berga", "Ekholmen", "Lambohov", "Tornby"),  # Linköping
    "1880": ("Centrum", "Vivalla", "Brickebacken", "Adolfsberg", "Varberga", "Tybble"),  # Örebro
    "1980": ("Centrum", "Bäckby", "Hammarby", "Råby", "Vallby", "Skultuna"),  # Västerås
    "1283": ("Centrum", "Råå", "Högasten", "Drottninghög", "Dalhem", "Påarp"),  # Helsingborg
    "0581": ("Centrum", "Hageby", "Navestad", "Skarphagen", "Klockaretorpet", "Lindö"),  # Norrköping
    "0680": ("Centrum", "Huskvarna", "Råslätt", "Öxnehaga", "Tenhult", "Ljungarum"),  # Jönköping
    "2480": ("Centrum", "Ersboda", "Holmsund", "Mariehem", "Ålidhem", "Teg"),  # Umeå
    "1281": ("Centrum", "Norra Fäladen", "Klostergården", "Linero", "Södra Sandby"),  # Lund
}


def clinic_count(scale: str | int) -> int:
    """The total number of clinics a scale stands for. Raises ValueError for an unknown name
    or a negative number."""
    if isinstance(scale, bool):
        raise ValueError(f"unknown scale {scale!r}")
    if isinstance(scale, int):
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}")
        return scale
    if scale in SCALES:
        return SCALES[scale]
    if scale.isdigit():
        return int(scale)
    raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)} or a number")


def build_catalog(scale: str | int, *, rng_seed: int = 1) -> Catalog:
    """Every clinic with its resources, per region code (all 21 keys present, in
    ``engine.model.REGIONS`` order). Ids carry the region: ``"AB-c17"``, ``"AB-c17-r2"``."""
    total = clinic_count(scale)
    rng = random.Random(rng_seed)
    public, private = _plan(total)
    catalog: Catalog = {}
    for region in REGIONS:
        clinics: list[tuple[Clinic, tuple[Resource, ...]]] = []
        for muni in municipalities_in(region.code):
            n_public, n_private = public.get(muni.code, 0), private.get(muni.code, 0)
            if not n_public and not n_private:
                continue
            town = _Town(muni, rng, n_public)
            for kind, n in ((ClinicKind.PUBLIC, n_public), (ClinicKind.PRIVATE, n_private)):
                for _ in range(n):
                    clinic_id = f"{region.code}-c{len(clinics) + 1}"
                    clinics.append(_clinic(clinic_id, kind, town, rng))
        catalog[region.code] = clinics
    return catalog


# --- how many clinics where --------------------------------------------------------------


def _apportion(total: int, weights: Sequence[float], floor: int = 0) -> list[int]:
    """Split ``total`` into integer shares proportional to ``weights`` (largest remainder),
    giving each at least ``floor``. The caller makes sure ``total >= floor * len(weights)``."""
    if not weights:
        return []
    rest = total - floor * len(weights)
    wsum = sum(weights)
    quotas = [rest * w / wsum for w in weights]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: rest - sum(counts)]:
        counts[i] += 1
    return [floor + c for c in counts]


def _two_level(total: int, weight: dict[str, float]) -> dict[str, int]:
    """Apportion over regions (at least one each when there are enough), then over each
    region's municipalities; returns a count per municipality code."""
    regions = [r.code for r in REGIONS]
    region_weights = [sum(weight[m.code] for m in municipalities_in(r)) for r in regions]
    per_region = _apportion(total, region_weights, floor=1 if total >= len(regions) else 0)
    out: dict[str, int] = {}
    for region, n in zip(regions, per_region, strict=True):
        munis = municipalities_in(region)
        for m, k in zip(munis, _apportion(n, [weight[m.code] for m in munis]), strict=True):
            out[m.code] = k
    return out


def _plan(total: int) -> tuple[dict[str, int], dict[str, int]]:
    """(public, private) clinic counts per municipality code."""
    n_regions = len(REGIONS)
    n_public = round(total * PUBLIC_SHARE)
    if total >= 2 * n_regions:
        n_public = max(n_public, n_regions)  # one Folktandvården per region keeps the map alive
    n_private = total - n_public
    munis = municipalities()
    population = {m.code: float(m.population) for m in munis}
    if n_public >= len(munis):
        counts = _apportion(n_public, [population[m.code] for m in munis], floor=1)
        public = {m.code: k for m, k in zip(munis, counts, strict=True)}
    else:
        public = _two_level(n_public, population)
    private = _two_level(n_private, {c: p**PRIVATE_POPULATION_EXPONENT for c, p in population.items()})
    return public, private


# --- one town's names and addresses -------------------------------------------------------


class _Town:
    """Naming and placing state for one municipality: names already used, its postcode area."""

    def __init__(self, muni: Municipality, rng: random.Random, n_public: int) -> None:
        self.muni = muni
        self.name = _SEAT_TOWNS.get(muni.name, muni.name)
        self.n_public = n_public
        self.used: set[str] = set()
        self.public_made = 0
        lo, hi = _POSTCODE_PREFIXES[muni.region]
        self.postcode_area = rng.randint(lo, hi) * 10 + rng.randint(0, 9)
        self.districts = _DISTRICTS.get(muni.code, ())
        self.radius_km = min(9.0, 0.4 + math.sqrt(muni.population) / 110)

    def claim(self, name: str) -> bool:
        if name in self.used:
            return False
        self.used.add(name)
        return True

    def public_name(self, rng: random.Random) -> str:
        k = self.public_made
        self.public_made += 1
        if self.n_public == 1 and self.claim(f"Folktandvården {self.name}"):
            return f"Folktandvården {self.name}"
        if k < len(self.districts):
            candidate = f"Folktandvården {self.districts[k]}"
        elif not self.districts and k < len(_COMPASS):
            candidate = f"Folktandvården {self.name} {_COMPASS[k]}"
        else:
            candidate = f"Folktandvården {self.name}, {rng.choice(_STREETS)}"
        if self.claim(candidate):
            return candidate
        return self._numbered(f"Folktandvården {self.name}")

    def private_name(self, rng: random.Random) -> str:
        for _ in range(20):
            candidate = self._private_candidate(rng)
            if self.claim(candidate):
                return candidate
        return self._numbered(f"Tandläkarna {self.name}")

    def _private_candidate(self, rng: random.Random) -> str:
        town = self.name
        if self.districts and rng.random() < 0.5:
            town = rng.choice(self.districts[1:] or self.districts)
        pick = rng.randrange(12)
        if pick == 0:
            return f"Tandläkarna vid {rng.choice(_PLACES)}"
        if pick == 1:
            return f"Citytandläkarna {town}"
        if pick == 2:
            return f"Familjetandvården {town}"
        if pick in (3, 4):
            return f"{rng.choice(_SURNAMES)}s Tandvård"
        if pick == 5:
            a, b = rng.sample(_SURNAMES, 2)
            return f"Tandläkarna {a} & {b}"
        if pick == 6:
            return f"{town} Tandklinik"
        if pick == 7:
            return f"Tandvårdshuset {town}"
        if pick == 8:
            return f"Tandhälsan i {town}"
        if pick == 9:
            return f"{rng.choice(_STREETS)}s Tandläkare"
        if pick == 10:
            return f"Tandläkarhuset {town}"
        return f"Din Tandläkare i {town}"

    def _numbered(self, base: str) -> str:
        n = 2
        while not self.claim(f"{base} {n}"):
            n += 1
        return f"{base} {n}"

    def address(self, rng: random.Random) -> str:
        number = f"{rng.randint(1, 60)}{rng.choice('AB') if rng.random() < 0.15 else ''}"
        postcode = f"{self.postcode_area} {rng.randint(10, 99)}"
        return f"{rng.choice(_STREETS)} {number}, {postcode} {self.name}"

    def position(self, rng: random.Random) -> tuple[float, float]:
        """A point near the seat, further out in bigger towns, inside the outline if we can."""
        m = self.muni
        km_per_deg_lon = 111.32 * math.cos(math.radians(m.lat))
        for attempt in range(13):
            # after 12 misses the seat is off the generalised coastline: stay within 300 m
            radius = self.radius_km if attempt < 12 else 0.3
            d = radius * math.sqrt(rng.random())
            theta = rng.uniform(0.0, 2 * math.pi)
            lat = m.lat + d * math.cos(theta) / 111.32
            lon = m.lon + d * math.sin(theta) / km_per_deg_lon
            if attempt == 12 or on_land(lat, lon):
                break
        return round(lat, 5), round(lon, 5)


# --- one clinic ---------------------------------------------------------------------------


def _pick(rng: random.Random, table: tuple[tuple[int, int], ...]) -> int:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def _phone(rng: random.Random, region: str) -> str:
    if region in _SOUTHERN_REGIONS:
        return f"040-628 04 {rng.randint(0, 99):02d}"
    return f"031-390 06 {rng.randint(0, 99):02d}"


def _hours(rng: random.Random, kind: ClinicKind, big_city: bool) -> tuple[OpeningHours, int]:
    """Opening hours and cell size: mostly the default, some evenings or Saturday mornings,
    a few with a 30-minute lunch."""
    hours: OpeningHours = dict(DEFAULT_HOURS)
    saturday_odds = 0.18 if kind is ClinicKind.PRIVATE and big_city else 0.07
    r = rng.random()
    if r < 0.10:  # Tuesday evenings as well as Thursday
        hours[2] = ((8 * 60, 12 * 60), (13 * 60, 19 * 60))
    elif r < 0.10 + saturday_odds:  # Saturday mornings
        hours[6] = ((9 * 60, 13 * 60),)
    elif r < 0.18 + saturday_odds:  # 30-minute lunch
        for day in (1, 2, 3):
            hours[day] = ((8 * 60, 12 * 60), (12 * 60 + 30, 16 * 60 + 30))
        hours[4] = ((8 * 60, 12 * 60), (12 * 60 + 30, 18 * 60 + 30))
        hours[5] = ((8 * 60, 12 * 60), (12 * 60 + 30, 14 * 60 + 30))
    elif r < 0.24 + saturday_odds:  # early birds, 30-minute lunch
        for day in (1, 2, 3, 4):
            hours[day] = ((7 * 60 + 30, 11 * 60 + 30), (12 * 60, 16 * 60))
        hours[5] = ((7 * 60 + 30, 11 * 60 + 30), (12 * 60, 14 * 60))
    r = rng.random()
    on_the_hour = all(a % 20 == 0 and b % 20 == 0 for ivs in hours.values() for a, b in ivs)
    if r < 0.03 and on_the_hour:
        return hours, 20
    if r < 0.06:
        return hours, 10
    return hours, 15


def _clinic(
    clinic_id: str, kind: ClinicKind, town: _Town, rng: random.Random
) -> tuple[Clinic, tuple[Resource, ...]]:
    muni = town.muni
    if kind is ClinicKind.PUBLIC:
        name = town.public_name(rng)
        dentists, hygienists = _pick(rng, _PUBLIC_DENTISTS), _pick(rng, _PUBLIC_HYGIENISTS)
    else:
        name = town.private_name(rng)
        dentists, hygienists = _pick(rng, _PRIVATE_DENTISTS), _pick(rng, _PRIVATE_HYGIENISTS)
    lat, lon = town.position(rng)
    hours, cell_minutes = _hours(rng, kind, big_city=muni.population >= 100_000)
    resources = tuple(
        Resource(
            id=f"{clinic_id}-r{i + 1}",
            clinic=clinic_id,
            kind=ResourceKind.DENTIST,
            name=f"Tandläkare {i + 1}",
            services=DENTIST_SERVICES,
        )
        for i in range(dentists)
    ) + tuple(
        Resource(
            id=f"{clinic_id}-r{dentists + i + 1}",
            clinic=clinic_id,
            kind=ResourceKind.HYGIENIST,
            name=f"Tandhygienist {i + 1}",
            services=HYGIENIST_SERVICES,
        )
        for i in range(hygienists)
    )
    offered = {s for res in resources for s in res.services}
    clinic = Clinic(
        id=clinic_id,
        name=name,
        region=muni.region,
        municipality=muni.code,
        municipality_name=muni.name,
        address=town.address(rng),
        lat=lat,
        lon=lon,
        kind=kind,
        services=tuple(s.id for s in SERVICES if s.id in offered),
        hours=hours,
        cell_minutes=cell_minutes,
        phone=_phone(rng, muni.region),
    )
    return clinic, resources
