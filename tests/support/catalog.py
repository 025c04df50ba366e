"""Small hand-made clinics for tests: real engine values, a fixed clock, no randomness."""

from __future__ import annotations

from datetime import date, datetime

from engine.calendar import TZ, day_of
from engine.commands import Command, OpenDays, RegisterClinic
from engine.model import Clinic, ClinicKind, Resource, ResourceKind

# A Monday in winter: every test day is a normal opening day (08-12, 13-17).
FIRST_DATE = date(2026, 12, 7)
FIRST_DAY = day_of(FIRST_DATE)
NOW = int(datetime(2026, 12, 7, 6, 0, tzinfo=TZ).timestamp())  # before opening on the first day
CELL_0900 = 9 * 4  # 15-minute cells


def clinic(region: str = "AB", n: int = 1, resources: int = 2) -> tuple[Clinic, tuple[Resource, ...]]:
    clinic_id = f"{region}-c{n}"
    c = Clinic(
        id=clinic_id,
        name=f"Testkliniken {n}",
        region=region,
        municipality="0180",
        municipality_name="Stockholm",
        address="Testgatan 1, 111 11 Stockholm",
        lat=59.33,
        lon=18.06,
        kind=ClinicKind.PUBLIC,
        services=("checkup", "cleaning", "emergency", "filling", "child_checkup"),
    )
    res = tuple(
        Resource(
            id=f"{clinic_id}-r{i}",
            clinic=clinic_id,
            kind=ResourceKind.DENTIST,
            name=f"Tandläkare {i}",
            services=("checkup", "cleaning", "emergency", "filling", "child_checkup"),
        )
        for i in range(1, resources + 1)
    )
    return c, res


def setup_commands(region: str = "AB", clinics: int = 1, resources: int = 2, days: int = 5) -> list[Command]:
    commands: list[Command] = []
    for n in range(1, clinics + 1):
        c, res = clinic(region, n, resources)
        commands.append(RegisterClinic(c, res))
        commands.extend(OpenDays(r.id, FIRST_DAY, days) for r in res)
    return commands
