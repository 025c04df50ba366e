"""Read-only questions over a ``RegionState``: free start times, next free time, summaries.

Pure functions; they never change the state. Runs of FREE cells are found with
``bytes.find`` on the resource's row, which keeps a 90-day search over a clinic cheap.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from engine.calendar import cell_epoch
from engine.cells import FREE
from engine.rows import FREE_RUNS, ResourceRow
from engine.state import RegionState

_DIGITS = bytes.maketrans(bytes(range(10)), b"0123456789")


def _candidates(state: RegionState, clinic: str, service: str) -> list[tuple[ResourceRow, int]]:
    """(row, cells needed) for every resource of the clinic that performs ``service`` there."""
    out = []
    for res in state.resources_of(clinic):
        row = state.resource_row(res.id)
        k = row.cells_for.get(service)
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
    state: RegionState, clinic: str, service: str, first_day: int, days: int, now: int
) -> tuple[int, int, str] | None:
    """The earliest (day, cell, resource) where ``service`` fits in the range, or None. Days
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


EARLIEST_ENTRIES = 65_536  # answers kept per region; past it the cache starts afresh

Earliest = tuple[int, int, int, tuple[int, int, str] | None]  # (clinic version, now, start, answer)
_earliest: WeakKeyDictionary[RegionState, dict[tuple[str, str, int, int], Earliest]] = WeakKeyDictionary()


def earliest_free(
    state: RegionState, clinic: str, service: str, first_day: int, days: int, now: int
) -> tuple[int, int, str] | None:
    """``next_free``, answered from an index of earlier answers per (clinic, service, range)
    while it still holds: the clinic's cells have not changed since (``clinic_version``) and
    ``now`` is not earlier than when it was found nor past the start it found (a later ``now``
    only takes starts away, and none lay between). Searches ask the same of every clinic of a
    region again and again; between two bookings at a clinic the answer is a dict look-up."""
    cache = _earliest.get(state)
    if cache is None:
        cache = _earliest[state] = {}
    key = (clinic, service, first_day, days)
    version = state.clinic_version(clinic)
    hit = cache.get(key)
    if hit is not None and hit[0] == version and hit[1] <= now <= hit[2]:
        return hit[3]
    found = next_free(state, clinic, service, first_day, days, now)
    if len(cache) >= EARLIEST_ENTRIES:
        cache.clear()
    until = cell_epoch(found[0], found[1], state.clinics[clinic].cell_minutes) if found else 2**62
    cache[key] = (version, now, until, found)
    return found


def region_summary(state: RegionState, first_day: int, days: int) -> dict[str, list[int]]:
    """Per clinic (sorted by id): FREE cell counts for each day of the range (the map colours)."""
    return {
        c: [state.free_count(c, d) for d in range(first_day, first_day + days)] for c in sorted(state.clinics)
    }


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
