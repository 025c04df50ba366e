"""Europe/Stockholm wall-clock calendar: the one place that turns (day, cell) into instants.

A day is ``date.toordinal()``; a cell is an index into the day's wall clock split into
``cell_minutes`` pieces, so a day always has ``24 * 60 // cell_minutes`` cells, DST or not.

DST rules (Sweden: last Sunday of March 02:00 -> 03:00, last Sunday of October 03:00 -> 02:00):

- spring forward: the wall times 02:00-02:59 do not exist. Their cells are never opened;
  ``cell_epoch``/``cell_start``/``iso`` raise ValueError for them.
- fall back: 02:00-02:59 happens twice. A cell means its *first* occurrence (summer time,
  +02:00); an instant in the repeated (second) hour is not a cell start, so ``locate``
  raises ValueError for it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Europe/Stockholm")


def day_of(d: date) -> int:
    return d.toordinal()


def date_of(day: int) -> date:
    return date.fromordinal(day)


def iso_weekday(day: int) -> int:
    """1 (Monday) .. 7 (Sunday), as ``date.isoweekday()``; ordinal day 1 (0001-01-01) is a Monday."""
    return (day - 1) % 7 + 1


def cells_per_day(cell_minutes: int) -> int:
    return 24 * 60 // cell_minutes


@lru_cache(maxsize=4096)
def _day_table(day: int, cell_minutes: int) -> tuple[tuple[int, ...], frozenset[int]]:
    """(epoch of every cell start, the cells whose wall time does not exist).

    For a nonexistent cell the epoch stored is that of the next existing cell: the
    instant the clocks jumped, which is the cell's first real moment (see ``earliest_epoch``).
    """
    d = date.fromordinal(day)
    n = cells_per_day(cell_minutes)
    epochs: list[int] = []
    gaps: set[int] = set()
    for cell in range(n):
        minute = cell * cell_minutes
        wall = datetime(d.year, d.month, d.day, minute // 60, minute % 60, tzinfo=TZ)
        epoch = int(wall.timestamp())
        back = datetime.fromtimestamp(epoch, TZ)
        if back.replace(tzinfo=None) != wall.replace(tzinfo=None):
            gaps.add(cell)
        epochs.append(epoch)
    # A gap cell's first real moment is the start of the next existing cell.
    for cell in sorted(gaps, reverse=True):
        if cell + 1 < n:
            epochs[cell] = epochs[cell + 1]
    return tuple(epochs), frozenset(gaps)


def nonexistent_cells(day: int, cell_minutes: int) -> frozenset[int]:
    """Cells of ``day`` whose wall time does not exist (the spring-forward hour); usually empty."""
    return _day_table(day, cell_minutes)[1]


def day_table_epochs(day: int, cell_minutes: int) -> tuple[int, ...]:
    """Epoch seconds of every cell start of ``day``, non-decreasing (a nonexistent cell has the
    instant the clocks jumped past it, as ``earliest_epoch``): for bisecting an instant."""
    return _day_table(day, cell_minutes)[0]


@lru_cache(maxsize=1 << 16)
def cell_epoch(day: int, cell: int, cell_minutes: int) -> int:
    """Epoch seconds of the start of (day, cell). ValueError for a nonexistent wall time
    or a cell outside the day. Cached: this is on the engine's hot path."""
    epochs, gaps = _day_table(day, cell_minutes)
    if not 0 <= cell < len(epochs):
        raise ValueError(f"cell {cell} outside the day ({len(epochs)} cells)")
    if cell in gaps:
        raise ValueError(f"wall time of cell {cell} on {date.fromordinal(day)} does not exist (DST)")
    return epochs[cell]


def earliest_epoch(day: int, cell: int, cell_minutes: int) -> int:
    """Like ``cell_epoch`` but total over the day: a nonexistent cell gives the instant the
    clocks jumped past it. For 'is this already in the past' checks on arbitrary runs."""
    epochs, _ = _day_table(day, cell_minutes)
    if not 0 <= cell < len(epochs):
        raise ValueError(f"cell {cell} outside the day ({len(epochs)} cells)")
    return epochs[cell]


def cell_start(day: int, cell: int, cell_minutes: int) -> datetime:
    """The aware (TZ) start of (day, cell). ValueError for a nonexistent wall time."""
    return datetime.fromtimestamp(cell_epoch(day, cell, cell_minutes), TZ)


def locate(instant: datetime, cell_minutes: int) -> tuple[int, int]:
    """(day, cell) whose start is ``instant``. ValueError if naive, not on a cell boundary,
    or in the repeated hour of the autumn DST change (not a cell start, see module doc)."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("naive datetime: an instant needs a time zone")
    local = instant.astimezone(TZ)
    if local.second or local.microsecond:
        raise ValueError(f"{instant.isoformat()} is not on a cell boundary")
    minute = local.hour * 60 + local.minute
    if minute % cell_minutes:
        raise ValueError(f"{instant.isoformat()} is not on a {cell_minutes}-minute cell boundary")
    day, cell = local.date().toordinal(), minute // cell_minutes
    if cell_epoch(day, cell, cell_minutes) != int(instant.timestamp()):
        raise ValueError(f"{instant.isoformat()} is in the repeated DST hour, not a cell start")
    return day, cell


def day_of_epoch(epoch_s: int) -> int:
    """The Stockholm-local day (ordinal) of an instant."""
    return datetime.fromtimestamp(epoch_s, TZ).date().toordinal()


@lru_cache(maxsize=1 << 16)
def iso(day: int, cell: int, cell_minutes: int) -> str:
    """ISO 8601 with offset, e.g. ``2026-03-29T09:00:00+02:00``. Cached: every time an
    availability answer lists is one (a clinic's week: ~60 of them)."""
    return cell_start(day, cell, cell_minutes).isoformat()


def epoch_of(instant: datetime) -> int:
    """Epoch seconds of an aware instant. ValueError if naive."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("naive datetime: an instant needs a time zone")
    return int(instant.astimezone(UTC).timestamp())
