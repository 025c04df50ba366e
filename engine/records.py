"""Hold and Booking: the mutable records a region keeps beside its slot rows.

Both are plain slotted dataclasses owned by ``RegionState``; callers read them and must
not mutate them (only ``RegionState.evolve`` does). ``to_list``/``*_from_list`` are the
compact snapshot form (msgpack-native, field order fixed).

A booking's status is a ``BookingStatus``; a ``StrEnum``, so it packs, serialises and
compares as its plain value ("booked", ...) and snapshots, journals and the API are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class BookingStatus(StrEnum):
    """booked -> cancelled (by the patient, the clinic or an admin), or booked -> no_show
    (marked by the clinic once the time has started). Only a booked booking changes again."""

    BOOKED = "booked"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"  # the patient did not come; the cells stay BOOKED


@dataclass(slots=True)
class Hold:
    id: str
    patient: str
    clinic: str
    resource: str
    service: str
    day: int
    cell: int
    cells: int
    expires_at: int  # epoch seconds; the hold is dead at expires_at <= now
    offer: str = ""  # the wait-list entry id when this hold is an exclusive offer, else ""

    def to_list(self) -> list[Any]:
        return [
            self.id,
            self.patient,
            self.clinic,
            self.resource,
            self.service,
            self.day,
            self.cell,
            self.cells,
            self.expires_at,
            self.offer,
        ]


def hold_from_list(r: list[Any]) -> Hold:
    return Hold(*r)  # snapshots older than offers have 9 fields: ``offer`` defaults to ""


@dataclass(slots=True)
class Booking:
    id: str
    patient: str
    clinic: str
    resource: str
    service: str
    day: int
    cell: int
    cells: int
    status: BookingStatus
    booked_at: int  # epoch seconds
    cancelled_at: int = 0
    cancelled_by: str = ""  # "" or a Party value
    cancel_reason: str = ""  # the clinic's or admin's words to the patient; "" for none

    def to_list(self) -> list[Any]:
        return [
            self.id,
            self.patient,
            self.clinic,
            self.resource,
            self.service,
            self.day,
            self.cell,
            self.cells,
            self.status,
            self.booked_at,
            self.cancelled_at,
            self.cancelled_by,
            self.cancel_reason,
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON/msgpack-friendly view (opaque patient id, no personal data)."""
        return {
            "id": self.id,
            "patient": self.patient,
            "clinic": self.clinic,
            "resource": self.resource,
            "service": self.service,
            "day": self.day,
            "cell": self.cell,
            "cells": self.cells,
            "status": self.status,
            "booked_at": self.booked_at,
            "cancelled_at": self.cancelled_at,
            "cancelled_by": self.cancelled_by,
            "cancel_reason": self.cancel_reason,
        }


def booking_from_list(r: list[Any]) -> Booking:
    b = Booking(*r)  # lists from before reasons have 12 fields: ``cancel_reason`` defaults to ""
    b.status = BookingStatus(b.status)
    return b
