"""BookingStore: a region's bookings as packed columns, not an object per booking.

A booking is a row number. Its fields live in ``array`` columns (one machine integer per
field); its id and its patient's id are stored once each in a ``Strings`` table (one utf-8
blob, found through an open-addressing table of crc32 hashes); clinic, resource, service and
the cancelling party are small codes into short lists. Per-patient and per-(clinic, day) lists
are linked through two more columns, so no index holds an object per booking either. About
100 bytes a booking, against ~400 for a slotted object with its strings and three indexes.
The few cancellations that carry a reason keep it in a dict by row (most carry none).

Readers get ``Booking`` values built on demand (copies: changing one changes nothing here).
Only the store's owner writes (``add``, ``set_status``, ``move``): a region's ``RegionState``, or
a journal follower's own replica (``server.consumers.feed.BookingsReplica``) in a process
that keeps no region state.

Snapshots: ``to_snapshot`` is a dict of a few ``bytes`` (each a memory copy of one column or
index) and short lists; ``from_snapshot`` copies them back, rebuilding nothing. The layout
follows the insertion order, so the same facts in the same order give the same bytes.
Columns are in the machine's byte order, which the snapshot records (a reader with the other
order swaps them). ``capture`` splits the copy in two: what changes in place is copied at once
(on the actor's turn), what only grows (ids, patient ids, six of the thirteen columns) is
copied later by the length it had, off the turn.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterator
from typing import Any
from zlib import crc32

from engine.calendar import cell_epoch
from engine.records import Booking, BookingStatus

STATUSES: tuple[BookingStatus, ...] = (BookingStatus.BOOKED, BookingStatus.CANCELLED, BookingStatus.NO_SHOW)
_STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}
_BOOKED = 0

# (column name, array type code); the order is the snapshot's
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("patient", "I"),  # code in ``patients``
    ("clinic", "I"),  # code in ``clinics``
    ("resource", "I"),  # code in ``resources``
    ("service", "B"),  # code in ``services``
    ("day", "I"),
    ("cell", "H"),
    ("cells", "H"),
    ("status", "B"),  # index in STATUSES
    ("booked_at", "I"),  # epoch seconds (to 2106)
    ("cancelled_at", "I"),
    ("cancelled_by", "B"),  # code in ``parties`` ("" first)
    ("next_of_patient", "i"),  # the patient's previous booking's row, or -1
    ("next_on_day", "i"),  # the next row starting the same clinic day, or -1
)
# Columns whose values never change once a row is added: a capture copies them later, by length.
_APPEND_ONLY = frozenset({"patient", "clinic", "service", "cells", "booked_at", "next_of_patient"})
# The others: while a capture is pending, each write to them is logged with the value it replaced.
_MUTABLE = tuple(name for name, _ in _COLUMNS if name not in _APPEND_ONLY)
_STATUS, _CANCELLED_AT, _CANCELLED_BY, _DAY, _RESOURCE, _CELL, _NEXT_ON_DAY = (
    _MUTABLE.index(name)
    for name in ("status", "cancelled_at", "cancelled_by", "day", "resource", "cell", "next_on_day")
)


class _Undo:
    """The writes to the mutable columns since a capture: (column, row, value before)."""

    __slots__ = ("entries", "done")

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, int]] = []
        self.done = False


def _swapped(data: bytes, typecode: str, byteorder: str) -> array[int]:
    column = array(typecode)
    column.frombytes(data)
    if byteorder != sys.byteorder:
        column.byteswap()
    return column


class Strings:
    """Distinct strings, each stored once in one utf-8 blob and numbered 0, 1, ... in order of
    arrival. ``find``/``add`` go through an open-addressing table (crc32, linear probing, at
    most half full) of those numbers. Growing never stalls: the table twice the size is filled
    a few entries per ``add`` (the kept hashes make that cheap) while lookups also search the
    old one, until every string has moved."""

    __slots__ = ("blob", "ends", "hashes", "table", "mask", "old", "old_mask", "moved")

    def __init__(self) -> None:
        self.blob = bytearray()
        self.ends = array("I")  # ends[i]: where string i ends in blob (it starts at ends[i-1] or 0)
        self.hashes = array("I")
        self.table = array("i", [-1]) * 8
        self.mask = 7
        self.old = array("i")  # while growing: the table before, holding codes >= moved
        self.old_mask = 0
        self.moved = 0  # while growing: codes below this are in ``table`` too

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, code: int) -> str:
        ends = self.ends
        return self.blob[ends[code - 1] if code else 0 : ends[code]].decode()

    def _probe(self, table: array[int], mask: int, raw: bytes, h: int) -> tuple[int, int]:
        """(slot, code) of the string in ``table``, or (the free slot where it would go, -1)."""
        hashes, ends, blob = self.hashes, self.ends, self.blob
        i = h & mask
        while True:
            code = table[i]
            if code < 0:
                return i, -1
            if hashes[code] == h and blob[ends[code - 1] if code else 0 : ends[code]] == raw:
                return i, code
            i = (i + 1) & mask

    def _slot(self, raw: bytes, h: int) -> tuple[int, int]:
        slot, code = self._probe(self.table, self.mask, raw, h)
        if code < 0 and self.old:
            code = self._probe(self.old, self.old_mask, raw, h)[1]
        return slot, code

    def find(self, s: str) -> int:
        """The string's code, or -1."""
        raw = s.encode()
        return self._slot(raw, crc32(raw))[1]

    def add(self, s: str) -> int:
        """The string's code, numbering it if new."""
        raw = s.encode()
        h = crc32(raw)
        slot, code = self._slot(raw, h)
        if code >= 0:
            return code
        code = len(self.ends)
        self.blob += raw
        self.ends.append(len(self.blob))
        self.hashes.append(h)
        self.table[slot] = code
        if self.old:
            self._move(8)
        elif 2 * (code + 1) > len(self.table):
            self.old, self.old_mask = self.table, self.mask
            self.table = array("i", [-1]) * (2 * len(self.old))
            self.mask = len(self.table) - 1
            self.table[self._probe(self.table, self.mask, raw, h)[0]] = code
            self.moved = 0
        return code

    def _move(self, n: int) -> None:
        """Put ``n`` more of the codes only the old table has into the new one."""
        table, mask, hashes = self.table, self.mask, self.hashes
        first = self.moved
        last = min(first + n, len(self.old) // 2)  # the old table held codes below half its size
        for code in range(first, last):
            i = hashes[code] & mask
            while table[i] >= 0:
                i = (i + 1) & mask
            table[i] = code
        self.moved = last
        if last == len(self.old) // 2:
            self.old, self.old_mask, self.moved = array("i"), 0, 0

    def to_snapshot(self) -> list[Any]:
        return self.capture()()

    def capture(self) -> Callable[[], list[Any]]:
        """The snapshot as it is now, in two steps: the returned function copies it, later, even
        from another thread while strings are added (each copy it makes is one call that holds
        the GIL). The blob, ends and hashes only grow: their first ``n`` entries are as now. A
        table is only ever filled in (a free slot takes a new code), and once it is the old one
        while growing it is only read: the function copies the table it had now and frees the
        slots of the codes added since (linear probing never passes through a slot that was
        free when the codes before were placed, so the result is the table as it was). While a
        growth is under way (rare: a few adds per doubling) the table is copied now."""
        n, size = len(self.ends), len(self.blob)
        blob, ends, hashes, old, moved = self.blob, self.ends, self.hashes, self.old, self.moved
        table: array[int] | bytes = self.table.tobytes() if old else self.table

        def rest() -> list[Any]:
            if isinstance(table, bytes):
                then = table
            else:
                copy = table[:]
                mask = len(copy) - 1
                # added since: free their slots again, the latest first (a later code's probe
                # may pass through an earlier one's slot, never the other way round)
                for code in range(len(ends) - 1, n - 1, -1):
                    i = hashes[code] & mask
                    while copy[i] >= 0 and copy[i] != code:
                        i = (i + 1) & mask
                    if copy[i] == code:
                        copy[i] = -1
                then = copy.tobytes()
            return [bytes(blob[:size]), ends[:n].tobytes(), hashes[:n].tobytes(), then, old.tobytes(), moved]

        return rest

    @classmethod
    def from_snapshot(cls, data: list[Any], byteorder: str) -> Strings:
        strings = cls()
        blob, ends, hashes, table, old, moved = data
        strings.blob = bytearray(blob)
        strings.ends = _swapped(ends, "I", byteorder)
        strings.hashes = _swapped(hashes, "I", byteorder)
        strings.table = _swapped(table, "i", byteorder)
        strings.mask = len(strings.table) - 1
        strings.old = _swapped(old, "i", byteorder)
        strings.old_mask = max(0, len(strings.old) - 1)
        strings.moved = moved
        return strings


class _Codes:
    """A short list of distinct strings (clinics, resources, services, parties) and their codes."""

    __slots__ = ("names", "codes")

    def __init__(self, names: list[str] | None = None) -> None:
        self.names: list[str] = list(names or ())
        self.codes: dict[str, int] = {n: i for i, n in enumerate(self.names)}

    def add(self, name: str) -> int:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.names)
            self.names.append(name)
        return code


class BookingStore:
    """All bookings of one region (booked, cancelled, no-show); they are never removed."""

    __slots__ = (
        "ids",
        "patients",
        "clinics",
        "resources",
        "services",
        "parties",
        "patient",
        "clinic",
        "resource",
        "service",
        "day",
        "cell",
        "cells",
        "status",
        "booked_at",
        "cancelled_at",
        "cancelled_by",
        "next_of_patient",
        "next_on_day",
        "last_of_patient",
        "day_base",
        "day_first",
        "keys",
        "key_row",
        "fingerprints",
        "key_fingerprint",
        "reasons",
        "_undo",
    )

    def __init__(self) -> None:
        self.ids = Strings()  # row -> booking id
        self.patients = Strings()  # patient code -> patient id
        self.clinics = _Codes()
        self.resources = _Codes()
        self.services = _Codes()
        self.parties = _Codes([""])
        for name, typecode in _COLUMNS:
            setattr(self, name, array(typecode))
        self.last_of_patient = array("i")  # patient code -> their latest booking's row
        self.day_base = array("I")  # clinic code -> the day day_first[code][0] stands for
        self.day_first: list[array[int]] = []  # clinic code -> per day from base: latest row, or -1
        # idempotency: "patient\0key" -> the row its Book made and that request's fingerprint
        self.keys = Strings()
        self.key_row = array("i")
        self.fingerprints = Strings()
        self.key_fingerprint = array("I")
        self.reasons: dict[int, str] = {}  # row -> the cancellation's reason, where one was given
        self._undo: tuple[_Undo, ...] = ()  # captures not yet finished; only the owner changes it

    # Declared for mypy; set in __init__ from _COLUMNS.
    patient: array[int]
    clinic: array[int]
    resource: array[int]
    service: array[int]
    day: array[int]
    cell: array[int]
    cells: array[int]
    status: array[int]
    booked_at: array[int]
    cancelled_at: array[int]
    cancelled_by: array[int]
    next_of_patient: array[int]
    next_on_day: array[int]

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ reads

    def row(self, booking_id: str) -> int:
        """The booking's row, or -1."""
        return self.ids.find(booking_id)

    def view(self, row: int) -> Booking:
        """The booking in ``row`` as a value (a copy)."""
        return Booking(
            self.ids[row],
            self.patients[self.patient[row]],
            self.clinics.names[self.clinic[row]],
            self.resources.names[self.resource[row]],
            self.services.names[self.service[row]],
            self.day[row],
            self.cell[row],
            self.cells[row],
            STATUSES[self.status[row]],
            self.booked_at[row],
            self.cancelled_at[row],
            self.parties.names[self.cancelled_by[row]],
            self.reasons.get(row, ""),
        )

    def get(self, booking_id: str) -> Booking | None:
        row = self.ids.find(booking_id)
        return self.view(row) if row >= 0 else None

    def __iter__(self) -> Iterator[Booking]:
        """Every booking, in the order they were made."""
        return (self.view(row) for row in range(len(self.ids)))

    def idempotent(self, patient: str, key: str) -> tuple[int, str] | None:
        """(row, fingerprint) of the booking an earlier Book with this key made, or None."""
        code = self.keys.find(f"{patient}\0{key}")
        if code < 0:
            return None
        return self.key_row[code], self.fingerprints[self.key_fingerprint[code]]

    def _rows_of(self, patient: str) -> Iterator[int]:
        code = self.patients.find(patient)
        row = self.last_of_patient[code] if code >= 0 else -1
        nxt = self.next_of_patient
        while row >= 0:
            yield row
            row = nxt[row]

    def has_patient(self, patient: str) -> bool:
        return self.patients.find(patient) >= 0

    def of_patient(self, patient: str) -> list[Booking]:
        """The patient's bookings, newest first."""
        return [self.view(row) for row in self._rows_of(patient)]

    def upcoming(self, patient: str, clinic: str, cell_minutes: int, now: int) -> int:
        """How many of the patient's booked bookings at ``clinic`` start at or after ``now``."""
        code = self.clinics.codes.get(clinic)
        if code is None:
            return 0
        status, clinic_of, day, cell = self.status, self.clinic, self.day, self.cell
        count = 0
        for row in self._rows_of(patient):
            if (
                status[row] == _BOOKED
                and clinic_of[row] == code
                and cell_epoch(day[row], cell[row], cell_minutes) >= now
            ):
                count += 1
        return count

    def on_day(self, clinic: str, day: int) -> list[Booking]:
        """The clinic's bookings starting on ``day``, newest first."""
        code = self.clinics.codes.get(clinic)
        if code is None:
            return []
        heads = self.day_first[code]
        i = day - self.day_base[code]
        row = heads[i] if 0 <= i < len(heads) else -1
        out = []
        nxt = self.next_on_day
        while row >= 0:
            out.append(self.view(row))
            row = nxt[row]
        return out

    # ------------------------------------------------------------------ writes (the owner only)

    def add(self, b: Booking) -> int:
        """Store a new booking (its id must be new); returns its row."""
        row = len(self.ids)
        if self.ids.add(b.id) != row:
            raise ValueError("booking id in use")
        patient = self.patients.add(b.patient)
        if patient == len(self.last_of_patient):
            self.last_of_patient.append(-1)
        clinic = self.clinics.add(b.clinic)
        if clinic == len(self.day_first):
            self.day_base.append(b.day)
            self.day_first.append(array("i"))
        self.patient.append(patient)
        self.clinic.append(clinic)
        self.resource.append(self.resources.add(b.resource))
        self.service.append(self.services.add(b.service))
        self.day.append(b.day)
        self.cell.append(b.cell)
        self.cells.append(b.cells)
        self.status.append(_STATUS_CODE[b.status])
        self.booked_at.append(b.booked_at)
        self.cancelled_at.append(b.cancelled_at)
        self.cancelled_by.append(self.parties.add(b.cancelled_by))
        if b.cancel_reason:
            self.reasons[row] = b.cancel_reason
        self.next_of_patient.append(self.last_of_patient[patient])
        self.last_of_patient[patient] = row
        self.next_on_day.append(-1)
        self._link_day(row, clinic, b.day)
        return row

    def remember(self, patient: str, key: str, row: int, fingerprint: str) -> None:
        """The Book with this idempotency key made ``row``."""
        code = self.keys.add(f"{patient}\0{key}")
        fp = self.fingerprints.add(fingerprint)
        if code == len(self.key_row):
            self.key_row.append(row)
            self.key_fingerprint.append(fp)
        else:
            self.key_row[code], self.key_fingerprint[code] = row, fp

    def _link_day(self, row: int, clinic: int, day: int) -> None:
        heads = self.day_first[clinic]
        base = self.day_base[clinic]
        if not heads:
            base = self.day_base[clinic] = day
        if day < base:
            heads[0:0] = array("i", [-1]) * (base - day)
            base = self.day_base[clinic] = day
        i = day - base
        if i >= len(heads):
            heads.extend(array("i", [-1]) * (i + 1 - len(heads)))
        self._put(_NEXT_ON_DAY, self.next_on_day, row, heads[i])
        heads[i] = row

    def _unlink_day(self, row: int) -> None:
        clinic = self.clinic[row]
        heads, nxt = self.day_first[clinic], self.next_on_day
        i = self.day[row] - self.day_base[clinic]
        at = heads[i]
        if at == row:
            heads[i] = nxt[row]
            return
        while nxt[at] != row:
            at = nxt[at]
        self._put(_NEXT_ON_DAY, nxt, at, nxt[row])

    def set_status(
        self, row: int, status: BookingStatus, at: int = 0, by: str = "", reason: str = ""
    ) -> None:
        """Cancel (with ``at``, ``by`` and maybe a ``reason``) or mark a no-show."""
        self._put(_STATUS, self.status, row, _STATUS_CODE[status])
        if status is BookingStatus.CANCELLED:
            self._put(_CANCELLED_AT, self.cancelled_at, row, at)
            self._put(_CANCELLED_BY, self.cancelled_by, row, self.parties.add(by))
            if reason:
                self.reasons[row] = reason

    def move(self, row: int, resource: str, day: int, cell: int) -> None:
        """Reschedule within the clinic."""
        if day != self.day[row]:
            self._unlink_day(row)
            self._put(_DAY, self.day, row, day)
            self._link_day(row, self.clinic[row], day)
        self._put(_RESOURCE, self.resource, row, self.resources.add(resource))
        self._put(_CELL, self.cell, row, cell)

    def _put(self, column: int, values: array[int], row: int, value: int) -> None:
        """``values[row] = value`` (``values`` is the mutable column numbered ``column``), logged
        for every capture still pending."""
        if self._undo:
            if any(undo.done for undo in self._undo):
                self._undo = tuple(undo for undo in self._undo if not undo.done)
            for undo in self._undo:
                undo.entries.append((column, row, values[row]))
        values[row] = value

    # ------------------------------------------------------------------ snapshots

    def to_snapshot(self) -> dict[str, Any]:
        """Memory copies of the columns and indexes (see the module docstring)."""
        return self.capture()()

    def capture(self) -> Callable[[], dict[str, Any]]:
        """Copy now only the small indexes that change in place (per-patient and per-day heads,
        the idempotency rows); the returned function copies the rest as it was now and returns
        the snapshot: the append-only columns and strings by the length they had, the columns a
        cancel or a move rewrites as they are then with every write since undone (the store logs
        the value each write replaced while a capture is pending). Call it exactly once, later,
        even from another thread while the owner goes on writing: each copy is one call that
        holds the GIL, nothing is resized under it, and only the owner changes the log list."""
        n = len(self.ids)
        ids, patients = self.ids.capture(), self.patients.capture()
        keys, fingerprints = self.keys.capture(), self.fingerprints.capture()
        columns = {name: getattr(self, name) for name, _ in _COLUMNS}
        undo = _Undo()
        self._undo = (*self._undo, undo)
        names = [list(codes.names) for codes in (self.clinics, self.resources, self.services, self.parties)]
        last_of_patient, day_base = self.last_of_patient.tobytes(), self.day_base.tobytes()
        day_first = [heads.tobytes() for heads in self.day_first]
        key_row, key_fingerprint = self.key_row.tobytes(), self.key_fingerprint.tobytes()
        reasons = dict(self.reasons)  # a few: cancellations given a reason

        def mutable_then() -> dict[str, bytes]:
            if undo.done:
                raise RuntimeError("a capture is finished once")
            copies = {name: columns[name][:n] for name in _MUTABLE}  # as now, or later
            written = list(undo.entries)  # every write after the copies above, and maybe more
            undo.done = True  # the owner drops the log at its next write
            for column, row, before in reversed(written):  # back to the values they had then
                if row < n:
                    copies[_MUTABLE[column]][row] = before
            return {name: copy.tobytes() for name, copy in copies.items()}

        def rest() -> dict[str, Any]:
            mutable = mutable_then()
            return {
                "byteorder": sys.byteorder,
                "ids": ids(),
                "patients": patients(),
                "clinics": names[0],
                "resources": names[1],
                "services": names[2],
                "parties": names[3],
                "columns": [
                    mutable[name] if name in mutable else columns[name][:n].tobytes() for name, _ in _COLUMNS
                ],
                "last_of_patient": last_of_patient,
                "day_base": day_base,
                "day_first": day_first,
                "keys": keys(),
                "key_row": key_row,
                "fingerprints": fingerprints(),
                "key_fingerprint": key_fingerprint,
                "reasons": sorted([row, reason] for row, reason in reasons.items() if row < n),
            }

        return rest

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> BookingStore:
        order = data["byteorder"]
        store = cls()
        store.ids = Strings.from_snapshot(data["ids"], order)
        store.patients = Strings.from_snapshot(data["patients"], order)
        store.clinics = _Codes(data["clinics"])
        store.resources = _Codes(data["resources"])
        store.services = _Codes(data["services"])
        store.parties = _Codes(data["parties"])
        for (name, typecode), raw in zip(_COLUMNS, data["columns"], strict=True):
            setattr(store, name, _swapped(raw, typecode, order))
        store.last_of_patient = _swapped(data["last_of_patient"], "i", order)
        store.day_base = _swapped(data["day_base"], "I", order)
        store.day_first = [_swapped(raw, "i", order) for raw in data["day_first"]]
        store.keys = Strings.from_snapshot(data["keys"], order)
        store.key_row = _swapped(data["key_row"], "i", order)
        store.fingerprints = Strings.from_snapshot(data["fingerprints"], order)
        store.key_fingerprint = _swapped(data["key_fingerprint"], "I", order)
        store.reasons = {row: reason for row, reason in data.get("reasons", ())}  # none before version 3
        return store
