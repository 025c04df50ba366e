"""Wait-list offers: who in the wait-list gets time that became available, and where.

Rules (``RegionState`` applies them with ``first_offer``; tests in ``tests/engine/test_waitlist.py``):

- An entry waits for one service at one clinic, or at any clinic of one municipality of the
  region, on a day range, for a start at or after ``from_minute`` whose end is by
  ``to_minute`` (local wall-clock minutes).
- Entries are served strictly in join order (``seq``, a per-region counter kept in the
  snapshot). When cells become available — a patient cancellation (FREE), a clinic/admin
  cancellation (BUFFER), a reschedule's old cells, an unblock, the end of a BUFFER window, an
  offer that expired or was declined — the same ``apply`` step offers them: the earliest
  entry that fits gets an exclusive hold (an *offer*) of its service's cells at the earliest
  freed cell it can start on (its run may reach into FREE/BUFFER neighbours), for the
  clinic's ``offer_minutes``. What is left
  goes to the next fitting entry, and so on.
- An entry is skipped (not removed) while its patient holds anything (one open hold per
  patient), while it has an open offer, when its day range does not cover the day, or when
  the patient has reached the clinic's booking limit.
- A confirmed offer (``Book(hold_id=…)``) ends the entry. So does an offer that expires or
  is released: a missed offer ends that wait (join again to wait again), which is what lets
  the time pass to the next in line. With nobody fitting, the cells stay as the freeing
  step left them (FREE, or BUFFER until the window ends and then FREE).
- Joining does not turn already FREE time into an offer (it is bookable by anyone), but
  BUFFER time waiting at a matching clinic is offered at once.

Pure functions: they read a row and the entries and return the ``OfferMade`` fact; the
state evolves it (so the next search sees its cells HELD).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.calendar import cell_epoch
from engine.cells import BUFFER, FREE
from engine.events import OfferMade
from engine.model import Clinic
from engine.rows import ResourceRow
from engine.waitlist import WaitEntry, offer_hold_id

_AVAILABLE = (FREE, BUFFER)


def available_runs(row: ResourceRow, day: int, span: tuple[int, int]) -> list[tuple[int, int]]:
    """The maximal FREE/BUFFER runs ``(lo, hi)`` of ``day`` that overlap the freed cells
    ``span`` (first, end); [] when the day is not covered."""
    off = row.offset(day)
    if off < 0:
        return []
    seg = row.buf[off : off + row.cpd]
    out: list[tuple[int, int]] = []
    c = span[0]
    while c < span[1]:
        if seg[c] not in _AVAILABLE:
            c += 1
            continue
        lo = c
        while lo > 0 and seg[lo - 1] in _AVAILABLE:
            lo -= 1
        hi = c + 1
        while hi < row.cpd and seg[hi] in _AVAILABLE:
            hi += 1
        out.append((lo, hi))
        c = hi
    return out


def first_start(
    entry: WaitEntry, k: int, cell_minutes: int, day: int, lo: int, hi: int, span: tuple[int, int], now: int
) -> int | None:
    """The earliest start ``s`` for ``entry`` (needing ``k`` cells) on a freed cell of ``span``
    (first, end) whose cells lie in the available run ``[lo, hi)`` (so an offer may reach into
    FREE/BUFFER neighbours, never start before the freed time), fits the entry's time-of-day
    window and is not before ``now``; None if there is none."""
    first = max(lo, span[0], -(-entry.from_minute // cell_minutes))
    last = min(hi - k, span[1] - 1, entry.to_minute // cell_minutes - k)
    for s in range(first, last + 1):
        if cell_epoch(day, s, cell_minutes) >= now:
            return s
    return None


def first_offer(
    row: ResourceRow,
    clinic: Clinic,
    day: int,
    span: tuple[int, int],
    entries: list[WaitEntry],
    now: int,
    may_be_offered: Callable[[str, Clinic, int], bool],
) -> OfferMade | None:
    """The offer of freed cells ``span`` (first, end) of ``row``'s ``day`` to the first of
    ``entries`` (in join order) that fits, or None. ``may_be_offered(patient, clinic, now)``:
    False while the patient holds something or has reached the clinic's booking limit."""
    runs = available_runs(row, day, span)
    if not runs:
        return None
    cm = clinic.cell_minutes
    for entry in entries:
        k = row.cells_for.get(entry.service)
        if (
            k is None
            or entry.offer
            or not entry.covers(day)
            or not may_be_offered(entry.patient, clinic, now)
        ):
            continue
        best: int | None = None
        for lo, hi in runs:
            s = first_start(entry, k, cm, day, lo, hi, span, now)
            if s is not None and (best is None or s < best):
                best = s
        if best is not None:
            return OfferMade(
                offer_hold_id(entry.id),
                entry.id,
                entry.patient,
                clinic.id,
                row.id,
                entry.service,
                day,
                best,
                k,
                now + clinic.offer_minutes * 60,
            )
    return None
