"""The domain catalogue: regions, services, clinics, resources, opening hours.

Plain frozen values. Days are ``int`` proleptic ordinals (``date.toordinal()``);
a cell is an index into a clinic-local (Europe/Stockholm) wall-clock day split into
``cell_minutes`` pieces. Conversion to and from instants lives in ``engine.calendar``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class Region:
    code: str  # län letter code: "AB", "O", "M", ...
    name: str


REGIONS: tuple[Region, ...] = (
    Region("AB", "Stockholms län"),
    Region("C", "Uppsala län"),
    Region("D", "Södermanlands län"),
    Region("E", "Östergötlands län"),
    Region("F", "Jönköpings län"),
    Region("G", "Kronobergs län"),
    Region("H", "Kalmar län"),
    Region("I", "Gotlands län"),
    Region("K", "Blekinge län"),
    Region("M", "Skåne län"),
    Region("N", "Hallands län"),
    Region("O", "Västra Götalands län"),
    Region("S", "Värmlands län"),
    Region("T", "Örebro län"),
    Region("U", "Västmanlands län"),
    Region("W", "Dalarnas län"),
    Region("X", "Gävleborgs län"),
    Region("Y", "Västernorrlands län"),
    Region("Z", "Jämtlands län"),
    Region("AC", "Västerbottens län"),
    Region("BD", "Norrbottens län"),
)
REGION_CODES: frozenset[str] = frozenset(r.code for r in REGIONS)


def region_of(entity_id: str) -> str:
    """The region code an id carries (``"AB-…"`` -> ``"AB"``). Raises ValueError if none."""
    code, sep, _ = entity_id.partition("-")
    if not sep or code not in REGION_CODES:
        raise ValueError(f"id {entity_id!r} carries no region code")
    return code


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    name: str  # Swedish
    name_en: str
    minutes: int

    def cells(self, cell_minutes: int) -> int:
        """The cells it takes at a clinic with ``cell_minutes`` cells (a part cell counts whole)."""
        return -(-self.minutes // cell_minutes)


SERVICES: tuple[Service, ...] = (
    Service("checkup", "Undersökning", "Check-up", 30),
    Service("cleaning", "Tandrengöring", "Cleaning", 45),
    Service("emergency", "Akut tandvård", "Emergency", 30),
    Service("filling", "Lagning", "Filling", 60),
    Service("child_checkup", "Barnundersökning", "Child check-up", 15),
)
SERVICES_BY_ID: dict[str, Service] = {s.id: s for s in SERVICES}


class ResourceKind(StrEnum):
    DENTIST = "dentist"
    HYGIENIST = "hygienist"
    CHAIR = "chair"


class ClinicKind(StrEnum):
    PUBLIC = "public"  # Folktandvården
    PRIVATE = "private"


# Opening hours: for each ISO weekday 1..7 (Monday=1) a tuple of (open_minute, close_minute)
# intervals in local wall-clock minutes since midnight; an empty tuple means closed.
OpeningHours = dict[int, tuple[tuple[int, int], ...]]


def intervals_record(days: dict[int, tuple[tuple[int, int], ...]]) -> dict[str, list[list[int]]]:
    """Weekly hours or day exceptions (day -> intervals) as a msgpack/JSON-friendly dict."""
    return {str(d): [list(iv) for iv in ivs] for d, ivs in sorted(days.items())}


def intervals_from_record(r: dict[str, list[list[int]]]) -> dict[int, tuple[tuple[int, int], ...]]:
    """Inverse of ``intervals_record``."""
    return {int(d): tuple((int(a), int(b)) for a, b in ivs) for d, ivs in r.items()}


@dataclass(frozen=True, slots=True)
class Resource:
    id: str  # carries the region: "AB-c12-r3"
    clinic: str
    kind: ResourceKind
    name: str  # display name, e.g. "Tandläkare 1" (staff, not patients)
    services: tuple[str, ...]  # service ids this resource performs
    retired: bool = False  # no longer takes bookings; kept so past bookings still name it
    # its own weekly hours (a hygienist on Tuesdays and Thursdays); None: the clinic's week
    hours: OpeningHours | None = None
    # its own days (leave, a late evening): day -> intervals; other days follow the clinic's
    exceptions: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)


DEFAULT_HOURS: OpeningHours = {
    1: ((8 * 60, 12 * 60), (13 * 60, 17 * 60)),
    2: ((8 * 60, 12 * 60), (13 * 60, 17 * 60)),
    3: ((8 * 60, 12 * 60), (13 * 60, 17 * 60)),
    4: ((8 * 60, 12 * 60), (13 * 60, 19 * 60)),
    5: ((8 * 60, 12 * 60), (13 * 60, 15 * 60)),
    6: (),
    7: (),
}


@dataclass(frozen=True, slots=True)
class Clinic:
    id: str  # carries the region: "AB-c12"
    name: str
    region: str
    municipality: str  # SCB municipality code, e.g. "0180"
    municipality_name: str
    address: str
    lat: float
    lon: float
    kind: ClinicKind
    services: tuple[str, ...]
    hours: OpeningHours = field(default_factory=lambda: dict(DEFAULT_HOURS))
    cell_minutes: int = 15
    phone: str = ""  # the clinic's switchboard (public business data)
    buffer_minutes: int = 10  # how long a clinic-cancelled time stays BUFFER before FREE
    cancel_notice_hours: int = 24
    max_bookings_per_patient: int = 3
    offer_minutes: int = 10  # how long a wait-list offer (an exclusive hold) stays open
    # days whose hours differ from the week's (a holiday: (), a late evening): day -> intervals
    exceptions: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    open_ahead_days: int = 0  # days opened automatically ahead of today from the hours (0: by hand)
    suspended: bool = False  # by the platform: no new bookings or holds; existing bookings stay

    @property
    def cells_per_day(self) -> int:
        return 24 * 60 // self.cell_minutes

    def to_record(self) -> dict[str, Any]:
        """A msgpack/JSON-friendly dict; ``clinic_from_record`` is its inverse."""
        return {
            "id": self.id,
            "name": self.name,
            "region": self.region,
            "municipality": self.municipality,
            "municipality_name": self.municipality_name,
            "address": self.address,
            "lat": self.lat,
            "lon": self.lon,
            "kind": str(self.kind),
            "services": list(self.services),
            "hours": intervals_record(self.hours),
            "cell_minutes": self.cell_minutes,
            "phone": self.phone,
            "buffer_minutes": self.buffer_minutes,
            "cancel_notice_hours": self.cancel_notice_hours,
            "max_bookings_per_patient": self.max_bookings_per_patient,
            "offer_minutes": self.offer_minutes,
            "exceptions": intervals_record(self.exceptions),
            "open_ahead_days": self.open_ahead_days,
        } | ({"suspended": True} if self.suspended else {})


def clinic_from_record(r: dict[str, Any]) -> Clinic:
    return Clinic(
        id=r["id"],
        name=r["name"],
        region=r["region"],
        municipality=r["municipality"],
        municipality_name=r["municipality_name"],
        address=r["address"],
        lat=float(r["lat"]),
        lon=float(r["lon"]),
        kind=ClinicKind(r["kind"]),
        services=tuple(r["services"]),
        hours=intervals_from_record(r["hours"]),
        cell_minutes=int(r["cell_minutes"]),
        phone=r.get("phone", ""),
        buffer_minutes=int(r.get("buffer_minutes", 10)),
        cancel_notice_hours=int(r.get("cancel_notice_hours", 24)),
        max_bookings_per_patient=int(r.get("max_bookings_per_patient", 3)),
        offer_minutes=int(r.get("offer_minutes", 10)),
        exceptions=intervals_from_record(r.get("exceptions", {})),
        open_ahead_days=int(r.get("open_ahead_days", 0)),
        suspended=bool(r.get("suspended", False)),
    )


def resource_to_record(res: Resource) -> dict[str, Any]:
    """A msgpack/JSON-friendly dict; ``resource_from_record`` is its inverse. Fields at their
    default (not retired, the clinic's hours) are left out, so such records keep their bytes."""
    record: dict[str, Any] = {
        "id": res.id,
        "clinic": res.clinic,
        "kind": str(res.kind),
        "name": res.name,
        "services": list(res.services),
    }
    if res.retired:
        record["retired"] = True
    if res.hours is not None:
        record["hours"] = intervals_record(res.hours)
    if res.exceptions:
        record["exceptions"] = intervals_record(res.exceptions)
    return record


def resource_from_record(r: dict[str, Any]) -> Resource:
    return Resource(
        id=r["id"],
        clinic=r["clinic"],
        kind=ResourceKind(r["kind"]),
        name=r["name"],
        services=tuple(r["services"]),
        retired=bool(r.get("retired", False)),
        hours=intervals_from_record(r["hours"]) if "hours" in r else None,
        exceptions=intervals_from_record(r.get("exceptions", {})),
    )
