"""Reminders: due at fixed leads before a booking's start (24 h and 2 h by default).

Times are instants: ``start`` comes from ``engine.calendar.cell_epoch`` (Europe/Stockholm
wall clock -> epoch), and ``due = start - lead`` is plain arithmetic on epoch seconds, so a
DST change between the reminder and the appointment is handled by the time zone database,
not by us. (A 09:00 appointment on Monday 2026-10-26 gets its 24 h reminder at 08:00Z on
Sunday 2026-10-25, which is 09:00 local after the clocks went back.)

A reminder is keyed by the booking and the time it is for plus its lead
(``AB-b7.740000.36:r24``): a booking moved to another time gets fresh reminders, and one whose
booking has since moved or been cancelled is stale and dropped when it comes due. The key needs
nothing but the booking, so a notifier that starts from a snapshot derives the same keys as one
that saw every entry. A reminder whose due time had already passed when the booking was made
(or moved) is not sent (the confirmation said it all); one that fell due while the notifier was
down is sent late, as long as the appointment has not begun.

Only reminders of appointments starting within a horizon are planned (the notifier scans its
projection as the horizon moves): the schedule stays small whatever the number of bookings.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field

DEFAULT_LEADS: tuple[int, ...] = (24 * 3600, 2 * 3600)

_LEAD = re.compile(r"^\s*(\d+)\s*([hm])\s*$")


def parse_leads(text: str) -> tuple[int, ...]:
    """``"24h,2h"`` -> ``(86400, 7200)``; ``"90m"`` works too; ``""`` means no reminders."""
    leads: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _LEAD.match(part)
        if match is None:
            raise ValueError(f"not a reminder lead: {part!r} (use e.g. 24h or 90m)")
        amount, unit = int(match.group(1)), match.group(2)
        leads.append(amount * (3600 if unit == "h" else 60))
    return tuple(sorted(set(leads), reverse=True))


def lead_label(lead_s: int) -> str:
    """The key suffix of a lead: ``r24`` for 24 hours, ``r90m`` for 90 minutes."""
    return f"r{lead_s // 3600}" if lead_s % 3600 == 0 else f"r{lead_s // 60}m"


@dataclass(frozen=True, order=True, slots=True)
class Reminder:
    due: int
    key: str  # f"{booking_id}.{day}.{cell}:{lead_label}"
    region: str = field(compare=False)
    booking_id: str = field(compare=False)
    day: int = field(compare=False)  # the time the reminder is for
    cell: int = field(compare=False)
    lead_s: int = field(compare=False)
    start: int = field(compare=False)


def plan(
    region: str, booking_id: str, day: int, cell: int, start: int, decided_at: int, leads: tuple[int, ...]
) -> list[Reminder]:
    """The reminders of a booking at (``day``, ``cell``) starting at ``start``: one per lead whose
    due instant comes after the time was decided (booked or moved) at ``decided_at``."""
    return [
        Reminder(
            start - lead,
            f"{booking_id}.{day}.{cell}:{lead_label(lead)}",
            region,
            booking_id,
            day,
            cell,
            lead,
            start,
        )
        for lead in leads
        if start - lead > decided_at
    ]


class Schedule:
    """Reminders ordered by due time (a heap; a key already waiting is not added twice; stale
    entries are dropped when popped)."""

    def __init__(self) -> None:
        # (due, key, reminder): plain tuples, compared in C; the keys are unique here, so a
        # comparison never reaches the Reminder (its dataclass ordering builds two tuples in
        # Python per comparison: popping a country's due reminders took twice as long)
        self._heap: list[tuple[int, str, Reminder]] = []
        self._keys: set[str] = set()

    def add(self, reminders: list[Reminder]) -> None:
        for reminder in reminders:
            if reminder.key not in self._keys:
                self._keys.add(reminder.key)
                heapq.heappush(self._heap, (reminder.due, reminder.key, reminder))

    def due(self, now: float, limit: int | None = None) -> list[Reminder]:
        """Remove and return the reminders due at or before ``now`` (at most ``limit``), earliest first."""
        out: list[Reminder] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(out) < limit):
            reminder = heapq.heappop(self._heap)[2]
            self._keys.discard(reminder.key)
            out.append(reminder)
        return out

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
