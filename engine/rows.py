"""Compact slot storage: one ``bytearray`` per resource holding all its opened days.

A resource's row covers the days ``first_day .. first_day + days - 1`` contiguously;
day ``d`` starts at offset ``(d - first_day) * cells_per_day``. Each byte is a
``engine.cells.Cell``. Days outside the covered range read as all CLOSED. The row grows
(at either end) when days outside it are opened. Opening-hour masks live here too.

Writing: ``fill`` (a run of one value) and ``write`` (any bytes) are the only writes of
cells after a day is covered; both return the change in the day's FREE count, which the
caller (``RegionState``) adds to its per-clinic count.
"""

from __future__ import annotations

from engine.calendar import iso_weekday, nonexistent_cells
from engine.cells import BOOKED, BUFFER, CLOSED, FREE, HELD
from engine.model import Clinic, OpeningHours, Resource

MAX_CELLS_PER_DAY = 24 * 60
FREE_RUNS = [bytes([FREE]) * n for n in range(MAX_CELLS_PER_DAY + 1)]
"""``FREE_RUNS[k]``: k FREE cells, for comparing a slice of a row without building bytes."""
_RUNS = {FREE: FREE_RUNS} | {
    value: [bytes([value]) * n for n in range(MAX_CELLS_PER_DAY + 1)] for value in (HELD, BOOKED, BUFFER)
}


class ResourceRow:
    """The cells of one resource. Owned by ``RegionState``; read it, never write it."""

    __slots__ = ("id", "clinic", "cell_minutes", "cpd", "first_day", "buf", "cells_for")

    def __init__(self, resource: str, clinic: str, cell_minutes: int) -> None:
        self.id = resource
        self.clinic = clinic
        self.cell_minutes = cell_minutes
        self.cpd = 24 * 60 // cell_minutes
        self.first_day = 0
        self.buf = bytearray()
        # service id -> cells it needs, only for services this resource performs AND the clinic offers
        self.cells_for: dict[str, int] = {}

    @property
    def days(self) -> int:
        return len(self.buf) // self.cpd

    def offset(self, day: int) -> int:
        """Offset of ``day``'s first cell in ``buf``, or -1 when the day is not covered."""
        i = day - self.first_day
        if self.buf and i >= 0 and (i + 1) * self.cpd <= len(self.buf):
            return i * self.cpd
        return -1

    def cover(self, first_day: int, days: int) -> None:
        """Grow the row so it covers ``first_day .. first_day + days - 1`` (new cells CLOSED)."""
        if days <= 0:
            return
        if not self.buf:
            self.first_day = first_day
            self.buf = bytearray(days * self.cpd)
            return
        if first_day < self.first_day:
            self.buf[0:0] = bytes((self.first_day - first_day) * self.cpd)
            self.first_day = first_day
        end = first_day + days
        have_end = self.first_day + self.days
        if end > have_end:
            self.buf.extend(bytes((end - have_end) * self.cpd))

    def day(self, day: int) -> bytes:
        """The day's cells (all CLOSED when not covered)."""
        off = self.offset(day)
        if off < 0:
            return bytes(self.cpd)
        return bytes(self.buf[off : off + self.cpd])

    def cells(self, day: int, first: int, n: int) -> bytes:
        """Cells ``[first, first + n)`` of a covered ``day``."""
        off = (day - self.first_day) * self.cpd + first
        return bytes(self.buf[off : off + n])

    def fill(self, day: int, first: int, n: int, value: int) -> int:
        """Set cells ``[first, first + n)`` of a covered ``day`` to ``value`` (FREE, HELD,
        BOOKED or BUFFER). Returns the change in the day's FREE count."""
        off = (day - self.first_day) * self.cpd + first
        buf = self.buf
        was_free = buf.count(FREE, off, off + n)
        buf[off : off + n] = _RUNS[value][n]
        return n - was_free if value == FREE else -was_free

    def write(self, day: int, first: int, new: bytes | bytearray) -> int:
        """Write ``new`` over cells ``[first, first + len(new))`` of a covered ``day``.
        Returns the change in the day's FREE count."""
        off = (day - self.first_day) * self.cpd + first
        end = off + len(new)
        buf = self.buf
        was_free = buf.count(FREE, off, end)
        buf[off:end] = new
        return new.count(FREE) - was_free

    def free_count(self, day: int) -> int:
        """FREE cells of ``day`` in this row (0 when not covered)."""
        off = self.offset(day)
        return self.buf.count(FREE, off, off + self.cpd) if off >= 0 else 0


def weekday_template(hours: OpeningHours, iso_weekday: int, cell_minutes: int) -> bytes:
    """One byte per cell: FREE where the whole cell lies inside an opening interval, else CLOSED."""
    cpd = 24 * 60 // cell_minutes
    out = bytearray(cpd)
    for start, end in hours.get(iso_weekday, ()):
        for cell in range(cpd):
            m = cell * cell_minutes
            if start <= m and m + cell_minutes <= end:
                out[cell] = FREE
    return bytes(out)


def day_mask(template: bytes, day: int, cell_minutes: int) -> bytes:
    """``template`` with the cells whose wall time does not exist on ``day`` (DST) closed."""
    gaps = nonexistent_cells(day, cell_minutes)
    if not gaps:
        return template
    out = bytearray(template)
    for cell in gaps:
        out[cell] = CLOSED
    return bytes(out)


class OpeningMasks:
    """The cells ``OpenDays`` opens on a day for a resource: ``day_mask`` of that day's hours.
    Whose hours, the most specific first:

    1. the resource's own hours for that day (its leave, its late evening);
    2. the resource's own weekly hours, within the clinic's own hours for that day when the
       clinic has them (a clinic holiday closes the resource too, a clinic late evening does
       not lengthen the resource's day);
    3. the clinic's own hours for that day (a holiday, a late evening);
    4. the clinic's weekly hours.

    Weekly templates are cached per clinic and per resource with hours of its own: ``forget``
    one whose hours may have changed (a clinic registered again, new weekly hours)."""

    __slots__ = ("_templates",)

    def __init__(self) -> None:
        self._templates: dict[str, dict[int, bytes]] = {}  # clinic or resource -> iso weekday -> template

    def of(self, clinic: Clinic, day: int, resource: Resource | None = None) -> bytes:
        cm = clinic.cell_minutes
        special = clinic.exceptions.get(day)
        if resource is not None and (resource.hours is not None or resource.exceptions):
            own = resource.exceptions.get(day)
            if own is not None:
                return day_mask(weekday_template({0: own}, 0, cm), day, cm)
            if resource.hours is not None:
                mask = self._weekly(resource.id, resource.hours, day, cm)
                if special is None:
                    return mask
                bound = weekday_template({0: special}, 0, cm)
                return bytes(
                    FREE if m == FREE and b == FREE else CLOSED for m, b in zip(mask, bound, strict=True)
                )
        if special is not None:  # a holiday or a late evening: that day's own hours
            return day_mask(weekday_template({0: special}, 0, cm), day, cm)
        return self._weekly(clinic.id, clinic.hours, day, cm)

    def _weekly(self, owner: str, hours: OpeningHours, day: int, cell_minutes: int) -> bytes:
        weekday = iso_weekday(day)
        templates = self._templates.setdefault(owner, {})
        template = templates.get(weekday)
        if template is None:
            template = templates[weekday] = weekday_template(hours, weekday, cell_minutes)
        return day_mask(template, day, cell_minutes)

    def forget(self, owner: str) -> None:
        """Drop the templates of a clinic or a resource (by id)."""
        self._templates.pop(owner, None)


def runs(
    cells: bytes | bytearray, value: int, start: int = 0, end: int | None = None
) -> list[tuple[int, int]]:
    """Maximal runs ``(first, length)`` of ``value`` in ``cells[start:end]`` (positions absolute)."""
    stop = len(cells) if end is None else end
    out: list[tuple[int, int]] = []
    i = start
    while i < stop:
        if cells[i] == value:
            j = i + 1
            while j < stop and cells[j] == value:
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return out
