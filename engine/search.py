"""Clinic search by earliest free time: the first ``limit`` clinics of a region in the order of
their earliest free start for a service, at a cost of what changed since the last search.

A ``Ranking`` per (service, first day, days) holds every clinic offering the service (service
None: any service, for a search that names none) with its earliest free start
(``queries.next_free``) in order. A search first asks again only what can
have changed since the ranking was last brought up to date: the clinics whose cells changed
since (``RegionState.changed_since``) and the clinics at the head whose start ``now`` has passed
(a later ``now`` only takes starts away, so every other answer still holds); then it reads the
head of the order. Between two bookings a search is a walk of ``limit`` entries. Pure: the
rankings are answers kept per state object (a reloaded state starts afresh), never state.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from weakref import WeakKeyDictionary

from engine.calendar import cell_epoch
from engine.model import Clinic
from engine.queries import next_free
from engine.state import RegionState

LATE_S = 60  # a search's ``now`` up to this far behind the ranking's is answered as of the ranking's
RANKINGS = 64  # rankings kept per region (~300 kB each for Stockholm); past it they start afresh

Start = tuple[int, int, str]  # (day, cell, resource)
Found = tuple[Clinic, Start | None, int | None]  # (clinic, its earliest free start, as epoch seconds)


class Ranking:
    """Every clinic offering ``service`` (None: any service), ordered by its earliest free start in
    [first_day, first_day + days). Brought up to date by ``refresh(state, now)`` before each read."""

    __slots__ = ("days", "first_day", "found", "order", "service", "version", "asked", "pending")

    def __init__(self, service: str | None, first_day: int, days: int) -> None:
        self.service = service
        self.first_day = first_day
        self.days = days
        self.order: list[tuple[int, str]] = []  # (start as epoch seconds, clinic), ascending
        self.found: dict[str, tuple[int, Start] | None] = {}  # clinic -> (at, start); None: none free
        self.version = -1  # the state's version this ranking reflects (-1: never built)
        self.asked = 0  # the latest ``now`` an answer was found at
        self.pending: list[str] = []  # clinics still to ask (a build in slices)

    def refresh(self, state: RegionState, now: int, budget: int | None = None) -> bool:
        """Bring the ranking up to date at ``now``; True when it is. With ``budget``, ask at most
        that many clinics and return False if some are left: a first build of a big region (every
        clinic's ``next_free``) made in slices, between which the caller lets others run."""
        if 0 < self.asked - now <= LATE_S:
            # a search begun a moment before the one that last refreshed: answer as of that one's
            # ``now`` (a start begun in between has begun by the time either answers). Going back
            # would throw away the ranking: two searches a second apart each building it in slices
            # would start it afresh after each other's slice, for ever.
            now = self.asked
        if self.version < 0 or now < self.asked:  # new, or a clock set back: ask everything
            self.order.clear()
            self.found.clear()
            self.pending = list(state.clinics)
        else:
            self.pending.extend(state.changed_since(self.version))
        self.version = state.version
        self.asked = now
        pending = self.pending
        while pending:
            if budget is not None:
                if budget <= 0:
                    return False
                budget -= 1
            self._ask(state, pending.pop(), now)
        order = self.order
        while order and order[0][0] < now:  # its earliest start has begun: the next one
            self._ask(state, order[0][1], now)
        return True

    def _ask(self, state: RegionState, clinic_id: str, now: int) -> None:
        old = self.found.pop(clinic_id, None)
        if old is not None:
            del self.order[bisect_left(self.order, (old[0], clinic_id))]
        clinic = state.clinics.get(clinic_id)
        if clinic is None or (self.service is not None and self.service not in clinic.services):
            return
        start = next_free(state, clinic_id, self.service, self.first_day, self.days, now)
        if start is None:
            self.found[clinic_id] = None
            return
        at = cell_epoch(start[0], start[1], clinic.cell_minutes)
        self.found[clinic_id] = (at, start)
        insort(self.order, (at, clinic_id))


_rankings: WeakKeyDictionary[RegionState, dict[tuple[str | None, int, int], Ranking]] = WeakKeyDictionary()


def ranking(state: RegionState, service: str | None, first_day: int, days: int, now: int) -> Ranking:
    """The region's ranking for ``service`` over the range, up to date at ``now``."""
    found = _kept(state, service, first_day, days)
    found.refresh(state, now)
    return found


def prepare(
    state: RegionState, service: str | None, first_day: int, days: int, now: int, budget: int
) -> bool:
    """Bring the ranking of ``service`` over the range up to date, asking at most ``budget``
    clinics; True when it is (a search then costs what changed). Call it again after letting
    others run while it says False: a cold ranking is built in slices, not in one go."""
    return _kept(state, service, first_day, days).refresh(state, now, budget)


def _kept(state: RegionState, service: str | None, first_day: int, days: int) -> Ranking:
    kept = _rankings.get(state)
    if kept is None:
        kept = _rankings[state] = {}
    key = (service, first_day, days)
    found = kept.get(key)
    if found is None:
        if len(kept) >= RANKINGS:
            kept.clear()
        found = kept[key] = Ranking(service, first_day, days)
    return found


def earliest_clinics(
    state: RegionState,
    service: str | None,
    first_day: int,
    days: int,
    now: int,
    limit: int,
    *,
    municipality: str | None = None,
    has_free: bool = True,
) -> list[Found]:
    """At most ``limit`` clinics offering ``service`` (None: any; in ``municipality`` if given), by their
    earliest free start in the range (not before ``now``), then id; without ``has_free`` the
    clinics with no free start follow, by id. Walks the ranking only as far as the answer."""
    rank = ranking(state, service, first_day, days, now)
    clinics = state.clinics
    out: list[Found] = []
    for at, clinic_id in rank.order:
        if len(out) >= limit:
            return out
        clinic = clinics[clinic_id]
        if municipality and clinic.municipality != municipality:
            continue
        entry = rank.found[clinic_id]
        assert entry is not None
        out.append((clinic, entry[1], at))
    if not has_free:
        for clinic_id in sorted(c for c, entry in rank.found.items() if entry is None):
            if len(out) >= limit:
                break
            clinic = clinics[clinic_id]
            if not municipality or clinic.municipality == municipality:
                out.append((clinic, None, None))
    return out
