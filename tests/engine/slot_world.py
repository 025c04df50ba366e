"""Shared builders for the engine unit tests (not a test module): a small region to work on."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import msgpack

from engine.calendar import TZ, day_of
from engine.commands import OpenDays, RegisterClinic
from engine.model import Clinic, ClinicKind, Resource, ResourceKind
from engine.state import RegionState

ALL_SERVICES = ("checkup", "cleaning", "emergency", "filling", "child_checkup")
MONDAY = day_of(date(2026, 11, 23))  # an ordinary Monday, 08-12 and 13-17


def epoch(day: int, hh: int, mm: int = 0) -> int:
    d = date.fromordinal(day)
    return int(datetime(d.year, d.month, d.day, hh, mm, tzinfo=TZ).timestamp())


def cell(hh: int, mm: int = 0) -> int:
    return (hh * 60 + mm) // 15


def make_clinic(cid: str = "AB-c1", **kw: Any) -> Clinic:
    base: dict[str, Any] = dict(
        id=cid,
        name="Klinik",
        region="AB",
        municipality="0180",
        municipality_name="Stockholm",
        address="Gatan 1",
        lat=59.33,
        lon=18.06,
        kind=ClinicKind.PUBLIC,
        services=ALL_SERVICES,
    )
    base.update(kw)
    return Clinic(**base)


def make_resources(
    cid: str = "AB-c1", n: int = 2, services: tuple[str, ...] = ALL_SERVICES
) -> tuple[Resource, ...]:
    return tuple(
        Resource(f"{cid}-r{i}", cid, ResourceKind.DENTIST, f"Tandläkare {i}", services)
        for i in range(1, n + 1)
    )


def world(
    first_day: int = MONDAY, days: int = 5, now: int | None = None, n: int = 2, **clinic_kw: Any
) -> tuple[RegionState, int]:
    """A region with one clinic AB-c1 (resources AB-c1-r1..rn) opened for ``days`` days.
    ``now`` defaults to 00:00 on ``first_day``."""
    now = epoch(first_day, 0) if now is None else now
    state = RegionState("AB")
    state.apply(RegisterClinic(make_clinic(**clinic_kw), make_resources(n=n)), now)
    for i in range(1, n + 1):
        state.apply(OpenDays(f"AB-c1-r{i}", first_day, days), now)
    return state, now


def packed(state: RegionState) -> bytes:
    return msgpack.packb(state.to_snapshot())
