"""Refusals: the typed, stable-coded errors a command can meet.

Exception tree::

    TandtidError
     ├── Refused                 a command the engine declined; it changed nothing
     │    (code is one of RefusalCode)
     └── (persistence and server add their own subclasses of TandtidError)

A refused command leaves no event and no diff. The HTTP edge maps ``code`` to a
status (SLOT_TAKEN -> 409, HOLD_EXPIRED -> 410, NOT_FOUND/NOT_YOURS -> 404, ...).
"""

from __future__ import annotations

from enum import StrEnum


class TandtidError(Exception):
    """Root of every error this project raises on purpose."""


class RefusalCode(StrEnum):
    SLOT_TAKEN = "SLOT_TAKEN"
    HOLD_EXPIRED = "HOLD_EXPIRED"
    NOT_FOUND = "NOT_FOUND"
    NOT_YOURS = "NOT_YOURS"
    IN_PAST = "IN_PAST"
    OUTSIDE_HOURS = "OUTSIDE_HOURS"
    INVALID = "INVALID"
    TOO_LATE = "TOO_LATE"
    LIMIT_REACHED = "LIMIT_REACHED"
    SUSPENDED = "SUSPENDED"  # the clinic is suspended: it takes no new bookings
    HAS_BOOKINGS = "HAS_BOOKINGS"  # a setup change would strand bookings: ``bookings`` lists them


class Refused(TandtidError):
    """The engine declined a command. Nothing changed; ``code`` says why."""

    def __init__(self, code: RefusalCode, message: str, bookings: tuple[str, ...] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.bookings = bookings  # HAS_BOOKINGS: the booking ids in the way
