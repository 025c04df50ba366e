"""Events: the facts the journal keeps. Replaying them rebuilds a region exactly.

Each event is a frozen dataclass of msgpack-native fields (str, int, list, dict) with a
``KIND`` tag. ``to_record``/``from_record`` turn an event into a plain list
``[KIND, field1, field2, ...]`` and back; ``persistence`` packs those lists.
Events carry opaque patient ids only, never personal data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ClinicRegistered:
    KIND: ClassVar[str] = "ClinicRegistered"
    clinic: dict[str, Any]  # Clinic.to_record()
    resources: list[dict[str, Any]]  # resource_to_record() each


@dataclass(frozen=True, slots=True)
class DaysOpened:
    KIND: ClassVar[str] = "DaysOpened"
    resource: str
    first_day: int
    days: int


@dataclass(frozen=True, slots=True)
class HoldPlaced:
    KIND: ClassVar[str] = "HoldPlaced"
    hold_id: str
    patient: str
    clinic: str
    resource: str
    service: str
    day: int
    cell: int
    cells: int
    expires_at: int  # epoch seconds


@dataclass(frozen=True, slots=True)
class HoldReleased:
    KIND: ClassVar[str] = "HoldReleased"
    hold_id: str


@dataclass(frozen=True, slots=True)
class HoldExpired:
    KIND: ClassVar[str] = "HoldExpired"
    hold_id: str


@dataclass(frozen=True, slots=True)
class Booked:
    KIND: ClassVar[str] = "Booked"
    booking_id: str
    patient: str
    clinic: str
    resource: str
    service: str
    day: int
    cell: int
    cells: int
    at: int  # epoch seconds of the decision
    hold_id: str  # "" when booked directly
    idempotency_key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    KIND: ClassVar[str] = "Cancelled"
    booking_id: str
    by: str  # Party value
    at: int
    buffer_until: int  # 0: cells went FREE; else BUFFER until this epoch second


@dataclass(frozen=True, slots=True)
class Rescheduled:
    KIND: ClassVar[str] = "Rescheduled"
    booking_id: str
    resource: str
    day: int
    cell: int
    at: int


@dataclass(frozen=True, slots=True)
class CellsBlocked:
    KIND: ClassVar[str] = "CellsBlocked"
    resource: str
    day: int
    cell: int
    cells: int


@dataclass(frozen=True, slots=True)
class CellsUnblocked:
    KIND: ClassVar[str] = "CellsUnblocked"
    resource: str
    day: int
    cell: int
    cells: int


@dataclass(frozen=True, slots=True)
class BufferReleased:
    KIND: ClassVar[str] = "BufferReleased"
    resource: str
    day: int
    cell: int
    cells: int


@dataclass(frozen=True, slots=True)
class WaitlistJoined:
    KIND: ClassVar[str] = "WaitlistJoined"
    entry_id: str
    patient: str
    clinic: str  # "" when the entry is for a whole municipality
    municipality: str  # "" when the entry is for one clinic
    service: str
    first_day: int
    days: int
    from_minute: int
    to_minute: int
    at: int


@dataclass(frozen=True, slots=True)
class WaitlistLeft:
    KIND: ClassVar[str] = "WaitlistLeft"
    entry_id: str


@dataclass(frozen=True, slots=True)
class OfferMade:
    """Freed cells became an exclusive hold for the first matching wait-list entry."""

    KIND: ClassVar[str] = "OfferMade"
    hold_id: str
    entry_id: str
    patient: str
    clinic: str
    resource: str
    service: str
    day: int
    cell: int
    cells: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class OfferExpired:
    """The offer was not confirmed in time: its entry is done, its cells pass on or go FREE."""

    KIND: ClassVar[str] = "OfferExpired"
    hold_id: str


@dataclass(frozen=True, slots=True)
class NoShowMarked:
    KIND: ClassVar[str] = "NoShowMarked"
    booking_id: str
    at: int


Event = (
    ClinicRegistered
    | DaysOpened
    | HoldPlaced
    | HoldReleased
    | HoldExpired
    | Booked
    | Cancelled
    | Rescheduled
    | CellsBlocked
    | CellsUnblocked
    | BufferReleased
    | WaitlistJoined
    | WaitlistLeft
    | OfferMade
    | OfferExpired
    | NoShowMarked
)

_EVENT_TYPES: dict[str, Any] = {
    cls.KIND: cls
    for cls in (
        ClinicRegistered,
        DaysOpened,
        HoldPlaced,
        HoldReleased,
        HoldExpired,
        Booked,
        Cancelled,
        Rescheduled,
        CellsBlocked,
        CellsUnblocked,
        BufferReleased,
        WaitlistJoined,
        WaitlistLeft,
        OfferMade,
        OfferExpired,
        NoShowMarked,
    )
}
_FIELD_NAMES: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in fields(cls)) for kind, cls in _EVENT_TYPES.items()
}


def to_record(event: Event) -> list[Any]:
    """``[KIND, *field values]`` in declaration order: compact and msgpack-native."""
    return [event.KIND, *(getattr(event, name) for name in _FIELD_NAMES[event.KIND])]


def from_record(record: list[Any]) -> Event:
    """Inverse of ``to_record``. Raises ValueError on an unknown kind or a wrong arity."""
    kind, *values = record
    cls = _EVENT_TYPES.get(kind)
    if cls is None or len(values) != len(_FIELD_NAMES[kind]):
        raise ValueError(f"not an event record: {record!r:.200}")
    event: Event = cls(*values)
    return event
