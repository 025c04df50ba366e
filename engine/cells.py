"""Cell states of the slot table: one byte per cell."""

from __future__ import annotations

from enum import IntEnum


class Cell(IntEnum):
    CLOSED = 0  # outside opening hours, or a day not opened yet
    FREE = 1  # bookable
    HELD = 2  # a patient's short hold while confirming (has a TTL)
    BOOKED = 3  # part of a booking
    BLOCKED = 4  # the clinic took it out: lunch, leave
    BUFFER = 5  # freed by a clinic/admin cancellation; offered to the wait-list first, FREE later


CLOSED, FREE, HELD, BOOKED, BLOCKED, BUFFER = (int(c) for c in Cell)
