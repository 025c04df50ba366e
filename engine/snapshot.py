"""Snapshots of a ``RegionState``: the whole state as msgpack-native data, and back.

``encode`` is deterministic: the catalogue, rows, holds and windows sorted, the bookings in
the order they were made (their store's own layout), so the same history packs to the same
bytes. The actor calls it inside its turn (it must stay a memory copy: it runs on the event
loop), packs it in a worker thread and stores it with the journal position it covers;
recovery replays the tail after it. ``capture`` is the actor's split of ``encode``: the parts
that change in place copied on its turn, the append-only rest later in a worker thread. Heaps are derived, never stored: ``decode`` rebuilds them; the free counts and the booking
store's indexes are stored as they are.

This module is the other half of ``engine.state``: it reads and refills the state's private
stores, and nothing else may. Changing what is stored means a new ``SNAPSHOT_VERSION``.

Version 4 (what ``encode`` writes): as version 3, and a resource's record may carry its own
``"hours"`` and ``"exceptions"`` (``engine.model.resource_to_record``). A version 3 reader would
drop them without a word, so the version says they may be there; a version 3 snapshot reads as
one whose resources all follow their clinic's hours.

Version 3 (read, never written): as version 2, and the booking store's dict carries
``"reasons": [[row, reason], ...]`` (the cancellations that gave one, by row).

Version 2 (read, never written; its bookings have no reasons)::

    {"v": 2, "region": "AB",
     ...                                              as version 1, except:
     "free": [[clinic, [day, ...], [free cells, ...]], ...],  by clinic: each day's FREE count
     "bookings": BookingStore.to_snapshot()}          a few bytes buffers, see engine.bookings
     (no "idempotency": the store keeps the keys)

Capturing it is memory copies of the rows and the booking columns plus the short lists of
clinics, resources (cached between changes), holds, windows and wait-list entries.

Version 1 (read, never written)::

    {"v": 1, "region": "AB",
     "clinics": [Clinic.to_record(), ...],           by id
     "resources": [resource_to_record(r), ...],       by id
     "rows": [[resource, first_day, cells], ...],     by resource; cells: one byte per cell
     "bookings": [Booking.to_list(), ...],            by id
     "holds": [Hold.to_list(), ...],                  by id
     "windows": [[resource, day, cell, cells, until], ...],   open BUFFER windows, sorted
     "idempotency": [[patient, key, booking, fingerprint], ...],  sorted
     "waitlist": [WaitEntry.to_list(), ...],          in join order
     "wait_seq": int}                                 the last wait-list seq given out
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from engine.bookings import BookingStore
from engine.model import Clinic, Resource, clinic_from_record, resource_from_record, resource_to_record
from engine.records import booking_from_list, hold_from_list
from engine.rows import ResourceRow

if TYPE_CHECKING:
    from engine.state import RegionState

T = TypeVar("T")

SNAPSHOT_VERSION = 4
READABLE_VERSIONS = frozenset({1, 2, 3, 4})


def encode(state: RegionState) -> dict[str, Any]:
    """The whole state as msgpack-native data, deterministic. Callers must not change it (the
    catalogue's records are the state's own)."""
    return capture(state)()


class RowCopies:
    """The rows of a pending capture that were written since: row -> (first day, cells) as
    they were at the capture (``RegionState._save_row`` fills it before a row's first write)."""

    __slots__ = ("rows", "done")

    def __init__(self) -> None:
        self.rows: dict[ResourceRow, tuple[int, bytes]] = {}
        self.done = False


def capture(state: RegionState) -> Callable[[], dict[str, Any]]:
    """Copy now what changes in place (rows, free counts, the catalogue's records, holds,
    windows, wait-list, the booking store's mutable columns); the returned function copies the
    booking store's append-only rest as it was now and returns what ``encode`` would have
    returned now. The actor calls this on its turn and the function in a worker thread while
    the state goes on changing (``engine.bookings.BookingStore.capture`` says why that is safe)."""
    free = state._free
    now: dict[str, Any] = {
        "v": SNAPSHOT_VERSION,
        "region": state.region,
        "clinics": _records(state.clinics, state._clinic_records, Clinic.to_record),
        "resources": _records(state.resources, state._resource_records, resource_to_record),
        "free": [[c, list(free[c]), list(free[c].values())] for c in sorted(free)],
    }
    rows = [(r, state._rows[r]) for r in sorted(state._rows)]
    saved = RowCopies()
    state._row_copies = (*state._row_copies, saved)

    def rows_then() -> list[list[Any]]:
        # A row not saved yet is copied as it is, then looked up again: a write between the
        # copy and the look-up saved the row first (the copy may be torn; the saved one is not).
        out: list[list[Any]] = []
        for rid, row in rows:
            then = saved.rows.get(row)
            if then is None:
                copied = (row.first_day, bytes(row.buf))
                then = saved.rows.get(row) or copied
            out.append([rid, then[0], then[1]])
        saved.done = True  # the state drops it at its next write
        return out

    bookings = state._bookings.capture()
    rest = {
        "holds": [state.holds[h].to_list() for h in sorted(state.holds)],
        "windows": sorted([res, day, *w] for (res, day), ws in state._windows.items() for w in ws),
        "waitlist": state.waitlist.to_snapshot(),
        "wait_seq": state.waitlist.seq,
    }

    def finish() -> dict[str, Any]:
        return {**now, "rows": rows_then(), "bookings": bookings(), **rest}

    return finish


def _records(
    objects: Mapping[str, T],
    cache: dict[str, tuple[T, dict[str, Any]]],
    to_record: Callable[[T], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The records of ``objects`` by id, from ``cache`` where it was made of the same object."""
    out = []
    for key in sorted(objects):
        obj = objects[key]
        cached = cache.get(key)
        if cached is None or cached[0] is not obj:
            cached = cache[key] = (obj, to_record(obj))
        out.append(cached[1])
    return out


def decode_bookings(data: dict[str, Any]) -> tuple[dict[str, Clinic], BookingStore]:
    """Only the clinics and the bookings of a snapshot (any readable version), without the slot
    rows: what a follower of the journal that keeps no region state needs. ValueError for a
    version this build does not read."""
    if data.get("v") not in READABLE_VERSIONS:
        raise ValueError(f"unknown snapshot version {data.get('v')!r}")
    clinics = [clinic_from_record(c) for c in data["clinics"]]
    return {c.id: c for c in clinics}, _booking_store(data)


def _booking_store(data: dict[str, Any]) -> BookingStore:
    if data["v"] != 1:
        return BookingStore.from_snapshot(data["bookings"])
    store = BookingStore()
    for rec in data["bookings"]:  # by id: the order the store gives them rows
        store.add(booking_from_list(rec))
    return store


def decode(data: dict[str, Any], new_state: Callable[[str], RegionState]) -> RegionState:
    """The state ``encode`` was given, rebuilt into ``new_state(region)`` (an empty state).
    ValueError for a version this build does not read."""
    version = data.get("v")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"unknown snapshot version {version!r}")
    state = new_state(data["region"])
    by_clinic: dict[str, list[Resource]] = {}
    for r in data["resources"]:
        res = resource_from_record(r)
        by_clinic.setdefault(res.clinic, []).append(res)
    for c in data["clinics"]:
        clinic = clinic_from_record(c)
        state._install(clinic, by_clinic.get(clinic.id, []))
    for rid, first_day, cells in data["rows"]:
        row = state._rows[rid]
        row.first_day = first_day
        row.buf = bytearray(cells)
        if version == 1:
            free = state._free[row.clinic]
            for day in range(first_day, first_day + row.days):
                free[day] = free.get(day, 0) + row.free_count(day)
    if version != 1:
        for clinic_id, days, counts in data["free"]:
            state._free[clinic_id] = dict(zip(days, counts, strict=True))
    state._bookings = store = _booking_store(data)
    if version == 1:
        for patient, key, booking, fingerprint in data["idempotency"]:
            store.remember(patient, key, store.row(booking), fingerprint)
    for rec in data["holds"]:
        state._add_hold(hold_from_list(rec))
    for res, day, cell, cells, until in data["windows"]:
        state._add_window(res, day, cell, cells, until)
    state.waitlist.load(data.get("waitlist", []), int(data.get("wait_seq", 0)))
    return state
