"""Read-only questions over a ``RegionState``: free start times, next free time, summaries.

Pure functions; they never change the state. Runs of FREE cells are found with
``bytes.find`` on the resource's row, which keeps a 90-day search over a clinic cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from engine.calendar import cell_epoch
from engine.cells import FREE
from engine.rows import FREE_RUNS, ResourceRow
from engine.state import RegionState

_DIGITS = bytes.maketrans(bytes(range(10)), b"0123456789")


def _candidates(state: RegionState, clinic: str, service: str | None) -> list[tuple[ResourceRow, int]]:
    """(row, cells needed) for every resource of the clinic that performs ``service`` there. For
    ``service`` None (any service the clinic offers), each resource's shortest: wherever a longer
    service fits, the shortest fits too, so the first fit of the shortest is the first of any."""
    out = []
    for res in state.resources_of(clinic):
        row = state.resource_row(res.id)
        k = row.cells_for.get(service) if service is not None else min(row.cells_for.values(), default=None)
        if k is not None:
            out.append((row, k))
    return out


def _starts_on(row: ResourceRow, k: int, day: int, now: int) -> list[int]:
    off = row.offset(day)
    if off < 0:
        return []
    buf, end, run = row.buf, off + row.cpd, bytes([FREE]) * k
    cm = row.cell_minutes
    out = []
    i = buf.find(run, off, end)
    while i >= 0:
        cell = i - off
        if cell_epoch(day, cell, cm) >= now:
            out.append(cell)
        i = buf.find(run, i + 1, end)
    return out


def free_starts(
    state: RegionState, clinic: str, service: str, first_day: int, days: int, now: int
) -> list[tuple[int, list[tuple[int, str]]]]:
    """For each day of the range: the (cell, resource) starts where ``service`` fits on FREE
    cells, not before ``now``, sorted by cell then resource. Every day appears (maybe empty)."""
    cands = _candidates(state, clinic, service)
    result: list[tuple[int, list[tuple[int, str]]]] = []
    for day in range(first_day, first_day + days):
        starts = [(cell, row.id) for row, k in cands for cell in _starts_on(row, k, day, now)]
        starts.sort()
        result.append((day, starts))
    return result


def first_start(row: ResourceRow, k: int, day: int, now: int) -> int | None:
    """The first cell of ``day`` where ``k`` FREE cells start, not before ``now``; None if none.
    Stops at the first fit (``bytes.find``), never lists the day."""
    off = row.offset(day)
    if off < 0:
        return None
    buf, end, run, cm = row.buf, off + row.cpd, FREE_RUNS[k], row.cell_minutes
    i = buf.find(run, off, end)
    while i >= 0:
        if cell_epoch(day, i - off, cm) >= now:
            return i - off
        i = buf.find(run, i + 1, end)
    return None


def next_free(
    state: RegionState, clinic: str, service: str | None, first_day: int, days: int, now: int
) -> tuple[int, int, str] | None:
    """The earliest (day, cell, resource) where ``service`` (None: any service the clinic
    offers) fits in the range, or None. Days
    without a FREE cell are skipped by their count; on a day with some, each resource is
    searched only up to its first fit."""
    cands = _candidates(state, clinic, service)
    if not cands:
        return None
    free_count = state.free_count
    for day in range(first_day, first_day + days):
        if free_count(clinic, day) == 0:
            continue
        best: tuple[int, str] | None = None
        for row, k in cands:
            cell = first_start(row, k, day, now)
            if cell is not None and (best is None or (cell, row.id) < best):
                best = (cell, row.id)
        if best is not None:
            return day, best[0], best[1]
    return None


SUMMARIES = 64  # summaries kept per region (ranges, services, minutes); past it they start afresh
Rows = dict[str, list[int]]
Row = Callable[[str], list[int]]
_summaries: WeakKeyDictionary[RegionState, dict[tuple[Any, ...], tuple[int, Rows]]] = WeakKeyDictionary()
# summaries being built in slices (``budget``): key -> (version at the start, rows so far, clinics left)
_building: WeakKeyDictionary[RegionState, dict[tuple[Any, ...], tuple[int, Rows, list[str]]]] = (
    WeakKeyDictionary()
)


def _kept_per_clinic(state: RegionState, key: tuple[Any, ...], row: Row) -> Rows:
    """``{clinic: row(clinic)}`` for every clinic (sorted by id), kept under ``key`` and brought up
    to date from the clinics changed since (``changed_since``), so it costs what changed, not the
    region. A new dict each call; the lists in it are shared with later answers and never changed
    (a changed clinic gets a new list)."""
    _build(state, key, row, None)
    version, rows = _summaries[state][key]
    changed = state.changed_since(version)
    for c in changed:
        rows[c] = row(c)
    _summaries[state][key] = (state.version, rows)
    return dict(rows)


def _build(state: RegionState, key: tuple[Any, ...], row: Row, budget: int | None) -> bool:
    """Make sure a summary is kept under ``key`` (not necessarily up to date: the rows of the
    clinics changed since its version are stale): True when it is. With ``budget``, compute at
    most that many rows and return False while clinics are left: a cold summary of a big region
    built in slices, between which the caller lets others run."""
    kept = _summaries.get(state)
    if kept is None:
        kept = _summaries[state] = {}
    hit = kept.get(key)
    if hit is not None:
        if all(c in hit[1] for c in state.changed_since(hit[0])):
            return True
        del kept[key]  # a clinic was registered: start afresh (sorted)
    building = _building.get(state)
    if building is None:
        building = _building[state] = {}
    started = building.pop(key, None)
    version, rows, left = started or (state.version, {}, sorted(state.clinics, reverse=True))
    while left:
        if budget is not None:
            if budget <= 0:
                if len(building) >= SUMMARIES:
                    building.clear()
                building[key] = (version, rows, left)
                return False
            budget -= 1
        c = left.pop()
        if c in state.clinics:
            rows[c] = row(c)
    if any(c not in rows for c in state.changed_since(version)):  # registered meanwhile: again
        return _build(state, key, row, budget)
    if len(kept) >= SUMMARIES:
        kept.clear()
    kept[key] = (version, rows)
    return True


def region_summary(state: RegionState, first_day: int, days: int) -> Rows:
    """Per clinic (sorted by id): FREE cell counts for each day of the range (``_kept_per_clinic``)."""
    return _kept_per_clinic(state, ("free", first_day, days), _free_counts(state, first_day, days))


def _free_counts(state: RegionState, first_day: int, days: int) -> Row:
    span = range(first_day, first_day + days)
    free_count = state.free_count
    return lambda c: [free_count(c, d) for d in span]


def bookable_summary(state: RegionState, service: str, first_day: int, days: int, now: int) -> Rows:
    """Per clinic (sorted by id): how many times ``service`` can be booked on each day of the
    range at epoch second ``now`` (what the map's badges count; ``engine.starts``). Kept per
    range, service and minute (within a minute ``now`` moves no cell into the past: cells start
    on whole minutes) and brought up to date from the clinics changed since
    (``_kept_per_clinic``); the state keeps the counts per clinic-day, so the next minute's
    answer is a look-up per clinic-day."""
    return _kept_per_clinic(
        state, _starts_key(service, first_day, days, now), _starts(state, service, first_day, days, now)
    )


def _starts_key(service: str, first_day: int, days: int, now: int) -> tuple[Any, ...]:
    return ("starts", service, first_day, days, -(-now // 60))


def _starts(state: RegionState, service: str, first_day: int, days: int, now: int) -> Row:
    starts = state.bookable_starts_of
    return lambda c: starts(c, service, first_day, days, now)


def prepare_summaries(
    state: RegionState, service: str, first_day: int, days: int, now: int, budget: int
) -> bool:
    """Build what ``region_summary`` and ``bookable_summary`` keep for the range, at most
    ``budget`` clinics' rows of each per call; True when both are kept (they then cost what
    changed). Call it again after letting others run while it says False."""
    return _build(state, ("free", first_day, days), _free_counts(state, first_day, days), budget) and _build(
        state,
        _starts_key(service, first_day, days, now),
        _starts(state, service, first_day, days, now),
        budget,
    )


def clinic_day(state: RegionState, clinic: str, day: int) -> dict[str, Any]:
    """The clinic's resources with their cells that day (one digit per cell, ``engine.cells``
    values) and the bookings starting that day. KeyError for an unknown clinic."""
    c = state.clinics[clinic]
    return {
        "clinic": clinic,
        "day": day,
        "cell_minutes": c.cell_minutes,
        "resources": [
            {
                "id": r.id,
                "name": r.name,
                "kind": str(r.kind),
                "services": list(r.services),
                "cells": state.row(r.id, day).translate(_DIGITS).decode("ascii"),
            }
            for r in state.resources_of(clinic)
        ],
        "bookings": [b.to_dict() for b in state.bookings_on(clinic, day)],
    }
