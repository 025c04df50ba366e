"""A deterministic region catalogue for benchmarks: many clinics, open days, a fixed clock."""

from __future__ import annotations

from datetime import date, datetime

from engine.calendar import TZ, day_of
from engine.model import Clinic, ClinicKind, Resource, ResourceKind

ALL_SERVICES = ("checkup", "cleaning", "emergency", "filling", "child_checkup")
FIRST_DATE = date(2027, 1, 11)  # a Monday


def bench_catalog(
    region: str, clinics: int, resources: int, days: int = 30
) -> tuple[list[tuple[Clinic, tuple[Resource, ...]]], int, int]:
    out = []
    for n in range(1, clinics + 1):
        cid = f"{region}-c{n}"
        clinic = Clinic(
            id=cid,
            name=f"Benchkliniken {n}",
            region=region,
            municipality="0180",
            municipality_name="Stockholm",
            address="Benchgatan 1",
            lat=59.3,
            lon=18.0,
            kind=ClinicKind.PRIVATE,
            services=ALL_SERVICES,
            # the benchmarks measure the mechanism, not the patient policies
            cancel_notice_hours=0,
            max_bookings_per_patient=1_000_000,
        )
        res = tuple(
            Resource(
                id=f"{cid}-r{i}",
                clinic=cid,
                kind=ResourceKind.DENTIST,
                name=f"Tandläkare {i}",
                services=ALL_SERVICES,
            )
            for i in range(1, resources + 1)
        )
        out.append((clinic, res))
    return out, day_of(FIRST_DATE), days


def bench_now(first_day: int) -> int:
    d = date.fromordinal(first_day)
    return int(datetime(d.year, d.month, d.day, 0, 1, tzinfo=TZ).timestamp()) - 120
