"""The wait-list of one region: who waits for what, in join order, and what fits them.

What fits whom, and when time is offered, is decided in ``engine.offers`` (its rules are
documented there); this module keeps the entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.model import Clinic

MAX_ENTRIES_PER_PATIENT = 5
MAX_WAIT_DAYS = 180


@dataclass(slots=True)
class WaitEntry:
    id: str
    patient: str
    clinic: str  # "" when the entry is for a whole municipality
    municipality: str  # "" when the entry is for one clinic
    service: str
    first_day: int
    days: int
    from_minute: int
    to_minute: int
    seq: int  # join order in the region
    joined_at: int  # epoch seconds
    offer: str = ""  # the open offer's hold id, or ""

    def covers(self, day: int) -> bool:
        return self.first_day <= day < self.first_day + self.days

    def to_list(self) -> list[Any]:
        return [
            self.id,
            self.patient,
            self.clinic,
            self.municipality,
            self.service,
            self.first_day,
            self.days,
            self.from_minute,
            self.to_minute,
            self.seq,
            self.joined_at,
            self.offer,
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (opaque patient id, no personal data)."""
        return {
            "id": self.id,
            "patient": self.patient,
            "clinic": self.clinic or None,
            "municipality": self.municipality or None,
            "service": self.service,
            "first_day": self.first_day,
            "days": self.days,
            "from_minute": self.from_minute,
            "to_minute": self.to_minute,
            "position": self.seq,
            "joined_at": self.joined_at,
            "offer": self.offer or None,
        }


def entry_from_list(r: list[Any]) -> WaitEntry:
    return WaitEntry(*r)


def offer_hold_id(entry_id: str) -> str:
    """The hold id of an entry's offer: an entry is offered at most once, so this is unique."""
    return entry_id + "-o"


def _target(clinic: str, municipality: str) -> str:
    return clinic if clinic else "m:" + municipality


class Waitlist:
    """Entries by id, in join order, indexed by what they wait for. Owned by ``RegionState``."""

    __slots__ = ("entries", "seq", "_by_target")

    def __init__(self) -> None:
        self.entries: dict[str, WaitEntry] = {}  # insertion order is join order
        self.seq = 0  # the last seq given out
        self._by_target: dict[str, dict[str, WaitEntry]] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def add(self, entry: WaitEntry) -> None:
        self.entries[entry.id] = entry
        self._by_target.setdefault(_target(entry.clinic, entry.municipality), {})[entry.id] = entry

    def remove(self, entry_id: str) -> WaitEntry | None:
        entry = self.entries.pop(entry_id, None)
        if entry is not None:
            key = _target(entry.clinic, entry.municipality)
            bucket = self._by_target[key]
            del bucket[entry_id]
            if not bucket:
                del self._by_target[key]
        return entry

    def waiting_for(self, clinic: Clinic) -> list[WaitEntry]:
        """Entries that could take time at ``clinic``, in join order."""
        own = self._by_target.get(clinic.id)
        town = self._by_target.get("m:" + clinic.municipality)
        if not town:
            return list(own.values()) if own else []
        if not own:
            return list(town.values())
        return sorted([*own.values(), *town.values()], key=lambda e: e.seq)

    def wants(self, clinic: Clinic) -> bool:
        return clinic.id in self._by_target or "m:" + clinic.municipality in self._by_target

    def of_patient(self, patient: str) -> list[WaitEntry]:
        return [e for e in self.entries.values() if e.patient == patient]

    def to_snapshot(self) -> list[list[Any]]:
        return [e.to_list() for e in self.entries.values()]

    def load(self, records: list[list[Any]], seq: int) -> None:
        for rec in sorted(records, key=lambda r: r[9]):
            self.add(entry_from_list(rec))
        self.seq = seq
