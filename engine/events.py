"""Events: the facts the journal keeps. Replaying them rebuilds a region exactly.

Each event is a frozen dataclass of msgpack-native fields (str, int, list, dict) with a
``KIND`` tag. ``to_record``/``from_record`` turn an event into a plain list
``[KIND, VERSION, field1, field2, ...]`` and back; ``persistence`` packs those lists.
Events carry opaque patient ids only, never personal data.

Versions keep every journal ever written replayable. ``VERSIONS[kind]`` is the version of
the kind's fields as declared below. To change a kind's fields: bump its version and add
an upcaster ``UPCASTERS[(kind, old_version)]`` that turns the old field values into the new
ones (e.g. appends a default for a new field); ``from_record`` chains them. Records from
before versions existed are version 1 (``persistence.codec`` says so when it reads them).
``tests/persistence/fixtures/journal-v1`` is such a journal, replayed by the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    reason: str = ""  # v2: the clinic's or admin's words to the patient ("" for none, always for a patient)


@dataclass(frozen=True, slots=True)
class Rescheduled:
    KIND: ClassVar[str] = "Rescheduled"
    booking_id: str
    resource: str
    day: int
    cell: int
    at: int
    # the time it had before (version 2): a follower tells "moved from ... to ..." without keeping
    # every booking's time itself; "" and -1 when not known (version 1 records)
    from_resource: str = ""
    from_day: int = -1
    from_cell: int = -1

    @property
    def from_known(self) -> bool:
        return self.from_day >= 0


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


@dataclass(frozen=True, slots=True)
class ClinicEdited:
    KIND: ClassVar[str] = "ClinicEdited"
    clinic: str
    changes: dict[str, Any]  # field -> new value (kind as str, services as list)


@dataclass(frozen=True, slots=True)
class ClinicSuspended:
    KIND: ClassVar[str] = "ClinicSuspended"
    clinic: str
    suspended: bool  # False: the suspension is lifted


@dataclass(frozen=True, slots=True)
class ResourcePut:
    KIND: ClassVar[str] = "ResourcePut"
    resource: dict[str, Any]  # resource_to_record()


@dataclass(frozen=True, slots=True)
class ResourceRetired:
    KIND: ClassVar[str] = "ResourceRetired"
    resource: str
    from_day: int  # cells of this day on that are not BOOKED close


@dataclass(frozen=True, slots=True)
class HoursSet:
    KIND: ClassVar[str] = "HoursSet"
    clinic: str
    # "1".."7" -> [[open, close], ...]; None (a resource's only): it follows the clinic's week again
    hours: dict[str, list[list[int]]] | None
    from_day: int  # opened days from this one on take the new hours
    resource: str = ""  # v2: whose hours: "" the clinic's, else that resource's own


@dataclass(frozen=True, slots=True)
class DayHoursSet:
    KIND: ClassVar[str] = "DayHoursSet"
    clinic: str
    day: int
    hours: list[list[int]] | None  # None: the day follows the week again (a resource's: the clinic's day)
    resource: str = ""  # v2: whose day: "" the clinic's, else that resource's own


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
    | ClinicEdited
    | ResourcePut
    | ResourceRetired
    | HoursSet
    | DayHoursSet
    | ClinicSuspended
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
        ClinicEdited,
        ResourcePut,
        ResourceRetired,
        HoursSet,
        DayHoursSet,
        ClinicSuspended,
    )
}
_FIELD_NAMES: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in fields(cls)) for kind, cls in _EVENT_TYPES.items()
}


Upcaster = Callable[[list[Any]], list[Any]]

# The version of each kind's fields as declared above (bump on change, add an upcaster).
VERSIONS: dict[str, int] = {kind: 1 for kind in _EVENT_TYPES} | {
    "Rescheduled": 2,
    "Cancelled": 2,
    "HoursSet": 2,
    "DayHoursSet": 2,
}
# (kind, version) -> the field values of version + 1, from those of ``version``.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("Rescheduled", 1): lambda values: [*values, "", -1, -1],  # the time before: not recorded
    ("Cancelled", 1): lambda values: [*values, ""],  # v2 added ``reason``: none before
    ("HoursSet", 1): lambda values: [*values, ""],  # v2 added ``resource``: the clinic's before
    ("DayHoursSet", 1): lambda values: [*values, ""],  # v2 added ``resource``: the clinic's before
}


def to_record(event: Event) -> list[Any]:
    """``[KIND, VERSION, *field values]`` in declaration order: compact and msgpack-native."""
    return [event.KIND, VERSIONS[event.KIND], *(getattr(event, name) for name in _FIELD_NAMES[event.KIND])]


def from_record(record: list[Any]) -> Event:
    """Inverse of ``to_record``; older versions are upcast first. Raises ValueError on an
    unknown kind, a version newer than this code, a missing upcaster or a wrong arity; the
    message never quotes field values (a cancellation's reason is free text for the patient)."""
    if len(record) < 2 or not isinstance(record[1], int):
        raise ValueError(f"not an event record: a {type(record).__name__} of {len(record)} items")
    kind, version, *values = record
    cls = _EVENT_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"not an event record: unknown kind {str(kind)[:40]!r}")
    values = upcast(kind, version, values)
    if len(values) != len(_FIELD_NAMES[kind]):
        raise ValueError(f"not an event record: {kind} v{version} with {len(values)} fields")
    event: Event = cls(*values)
    return event


def upcast(
    kind: str,
    version: int,
    values: list[Any],
    versions: Mapping[str, int] = VERSIONS,
    upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS,
) -> list[Any]:
    """The field values of ``kind`` at ``versions[kind]``, from those of ``version``."""
    current = versions[kind]
    if version > current:
        raise ValueError(f"{kind} record of version {version}: this release reads up to {current}")
    while version < current:
        step = upcasters.get((kind, version))
        if step is None:
            raise ValueError(f"{kind} record of version {version}: no upcaster to {version + 1}")
        values = step(values)
        version += 1
    return values
