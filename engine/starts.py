"""Bookable start times per clinic and day: what the map's badge counts for a chosen service.

A time is bookable for a service when the service's cells from it are FREE on some resource of
the clinic that performs it (and the clinic offers it), the whole run inside the day, and the time
not before ``now``. It is counted once however many resources are free then, as the clinic page
and ``/api/clinics/{id}/availability`` list it. A suspended clinic has none.

Counted with integers as bit sets: a day's cells become one byte each (1 FREE, 0 not), read as
one big-endian integer ``m``; ``m & (m << 8) & … & (m << 8(k-1))`` keeps exactly the cells
where k FREE cells start (cells past the day's end shift in as 0, so no run leaves the day);
the resources' sets are or-ed per service and ``int.bit_count`` counts the times.

``StartCounts`` keeps those counts per clinic and day, made when first asked and forgotten
when a cell of that day changes (``changed``) or the clinic's resources, services or opening
change (``forget``): ``RegionState`` tells it, so a booking costs the recount of one
clinic-day at the next read, never a rescan of the region. Derived, never in a snapshot.
"""

from __future__ import annotations

from bisect import bisect_left
from functools import lru_cache

from engine.calendar import day_table_epochs
from engine.cells import FREE
from engine.model import SERVICES
from engine.rows import ResourceRow

SERVICE_INDEX: dict[str, int] = {s.id: i for i, s in enumerate(SERVICES)}
_FREE_BYTE = bytes(1 if v == FREE else 0 for v in range(256))  # bytes.translate table: FREE -> 1, else 0
NONE: Counts = (0,) * len(SERVICES)
MAX_CLINIC_DAYS = 1 << 18  # clinic-days kept per region; past it the counts start afresh

Counts = tuple[int, ...]
"""Bookable starts per service, in ``engine.model.SERVICES`` order (0 for one not offered)."""


def first_cell_from(day: int, now: int, cell_minutes: int) -> int:
    """The first cell of ``day`` that starts at or after epoch second ``now`` (the day's cell
    count when the whole day has begun before ``now``; 0 when it lies ahead)."""
    return bisect_left(day_table_epochs(day, cell_minutes), now)


@lru_cache(maxsize=256)
def day_cuts(first_day: int, days: int, now: int, cell_minutes: int) -> tuple[int, ...]:
    """``first_cell_from`` for each day of the range (one look-up for every clinic of a region)."""
    return tuple(first_cell_from(day, now, cell_minutes) for day in range(first_day, first_day + days))


def fits(free: int, k: int) -> int:
    """From ``free`` (one byte per cell, 1 where FREE, big-endian): the cells where ``k`` FREE
    cells start, in the same form."""
    starts = free
    for j in range(1, k):
        starts &= free << (8 * j)
    return starts


@lru_cache(maxsize=512)
def _open_cells(cuts: tuple[int, ...], cpd: int) -> int:
    """Days of ``cpd`` cells side by side, as in ``count_days``: 1 from each day's cut on."""
    return int.from_bytes(
        b"".join(bytes(min(cut, cpd)) + b"\1" * (cpd - min(cut, cpd)) for cut in cuts), "big"
    )


@lru_cache(maxsize=512)
def _in_day(k: int, days: int, cpd: int) -> int:
    """1 at each cell from which ``k`` cells end within its day (a run may not cross midnight)."""
    return int.from_bytes((b"\1" * (cpd - k + 1) + bytes(k - 1)) * days, "big")


def _slab(row: ResourceRow, first_day: int, days: int) -> bytes | bytearray:
    """The row's cells of ``days`` days from ``first_day`` side by side (CLOSED where not opened)."""
    cpd = row.cpd
    start = (first_day - row.first_day) * cpd
    end = start + days * cpd
    if row.buf and start >= 0 and end <= len(row.buf):
        return row.buf[start:end]
    return b"".join(row.day(day) for day in range(first_day, first_day + days))


def count_days(rows: list[ResourceRow], first_day: int, cuts: tuple[int, ...]) -> list[Counts]:
    """Bookable starts per service on each day from ``first_day`` over the clinic's ``rows``, the
    day ``first_day + i`` from cell ``cuts[i]`` on. All days of a resource are one integer: a few
    operations per resource, not per day."""
    days = len(cuts)
    unions = [0] * len(SERVICES)
    cpd = 0
    for row in rows:
        cells_for = row.cells_for
        if not cells_for or not row.buf:
            continue
        cpd = row.cpd
        free = int.from_bytes(_slab(row, first_day, days).translate(_FREE_BYTE), "big")
        if not free:
            continue
        free &= _open_cells(cuts, cpd)
        # runs of 1, 2, 3 … cells built on each other: k-1 shifts for the longest service in all
        by_k, starts, k = {1: free}, free, 1
        for service, need in sorted(cells_for.items(), key=_by_cells):
            while k < need:
                starts &= free << (8 * k)
                k += 1
                by_k[k] = starts
            unions[SERVICE_INDEX[service]] |= by_k[need] & _in_day(need, days, cpd)
    if not cpd:
        return [NONE] * days
    width = days * cpd
    per_service = [u.to_bytes(width, "big") if u else b"" for u in unions]
    return [tuple(b.count(1, i * cpd, (i + 1) * cpd) if b else 0 for b in per_service) for i in range(days)]


def _by_cells(item: tuple[str, int]) -> int:
    return item[1]


class StartCounts:
    """Bookable starts per clinic-day, kept for ``RegionState`` (which owns the rows and calls
    ``changed``/``forget`` on every change). Read with ``of``."""

    __slots__ = ("_days", "_size")

    def __init__(self) -> None:
        # clinic -> day -> (first cell counted, counts): a day that has begun is counted from the
        # first cell not yet begun, again once that moves on
        self._days: dict[str, dict[int, tuple[int, Counts]]] = {}
        self._size = 0

    def changed(self, clinic: str, day: int) -> None:
        """A cell of ``clinic`` on ``day`` changed."""
        days = self._days.get(clinic)
        if days is not None and days.pop(day, None) is not None:
            self._size -= 1

    def forget(self, clinic: str) -> None:
        """The clinic's resources, services, suspension or opened days changed."""
        days = self._days.pop(clinic, None)
        if days is not None:
            self._size -= len(days)

    def of(self, clinic: str, rows: list[ResourceRow], first_day: int, cuts: tuple[int, ...]) -> list[Counts]:
        """The clinic's bookable starts per service on each day from ``first_day``, the day
        ``first_day + i`` counted from cell ``cuts[i]`` on (``day_cuts``). The days kept from the
        same cut are looked up; the others (not kept, changed, or today's as its cells begin)
        are counted, each run of them in one go, and kept. A booking, or the clock moving on
        into a new cell, costs the recount of one day, not of the range."""
        days = self._days.get(clinic)
        if days is None:
            days = self._days[clinic] = {}
        out: list[Counts] = []
        stale: list[int] = []  # indexes into cuts of the days to count
        for i, cut in enumerate(cuts):
            kept = days.get(first_day + i)
            if kept is not None and kept[0] == cut:
                out.append(kept[1])
            else:
                out.append(NONE)
                stale.append(i)
        if not stale:
            return out
        if self._size + len(stale) > MAX_CLINIC_DAYS:
            self._days.clear()
            self._size = 0
            days = self._days[clinic] = {}
        start = 0
        while start < len(stale):
            end = start + 1
            while end < len(stale) and stale[end] == stale[end - 1] + 1:
                end += 1
            first, last = stale[start], stale[end - 1] + 1
            for i, counts in enumerate(count_days(rows, first_day + first, cuts[first:last]), first):
                if first_day + i not in days:
                    self._size += 1
                days[first_day + i] = (cuts[i], counts)
                out[i] = counts
            start = end
        return out
