"""The commands that seed a demo region: register its clinics and open their days
(``seed_commands``), then book part of the open time (``prebook_commands``,
``prebook_region``). The clinics themselves come from ``server.demo.catalogue``.
``seeded_state`` applies one region's commands to a fresh ``RegionState`` with the engine's
own ``apply`` (no actor): ``server.serve.seed_journal`` journals the catalogue's events (clinics,
opened days) as one entry and stores the whole state, pre-booked times included, as the
region's snapshot at that entry, so millions of pre-booked times cost no journal entry each.

Pre-booked times (``prebook_commands``): a Swedish clinic is nearly full for the next week
or two (recall check-ups are sent out weeks ahead, and the gaps go to emergencies), about
half full a month out and lightly booked two to three months out. The share booked on a
day ``d`` days ahead follows ``fill_share``; its mean over the opened days is the ``share``
asked for. Patients are opaque ids (``"seed-p17"``), never names; each has at most two of
the pre-booked times, well under a clinic's ``max_bookings_per_patient``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from engine.calendar import cell_epoch, day_of_epoch
from engine.cells import FREE
from engine.commands import Book, Command, OpenDays, RegisterClinic
from engine.errors import Refused
from engine.events import Event, to_record
from engine.model import SERVICES_BY_ID, Clinic, Resource, ResourceKind
from engine.rows import OpeningMasks
from engine.state import RegionState
from persistence.codec import pack_events, pack_snapshot
from server.demo.catalogue import Catalog, build_catalog


def kept_open(clinic: Clinic, days: int) -> Clinic:
    """``clinic`` as the seed registers it: its ``open_ahead_days`` is what the seed opens (the
    first day and ``days - 1`` after it), so the rolling horizon opens each new day as the demo
    runs on (without it the demo's days run out ``days`` days after the seed)."""
    return replace(clinic, open_ahead_days=max(0, days - 1))


def seed_commands(
    scale: str | int, *, first_day: int, days: int = 90, rng_seed: int = 1
) -> dict[str, list[Command]]:
    """Per region code: a ``RegisterClinic`` for each clinic (``kept_open``), then an ``OpenDays``
    for each resource over ``days`` days from ``first_day`` (a ``date.toordinal()``). Apply them in
    order to an empty region state."""
    out: dict[str, list[Command]] = {}
    for region, clinics in build_catalog(scale, rng_seed=rng_seed).items():
        commands: list[Command] = [
            RegisterClinic(kept_open(clinic, days), resources) for clinic, resources in clinics
        ]
        commands.extend(OpenDays(res.id, first_day, days) for _, resources in clinics for res in resources)
        out[region] = commands
    return out


# --- times already booked ----------------------------------------------------------------

# Service mix of booked times, by who performs them (weights; services a resource does not
# perform are skipped). Dentists: mostly check-ups and fillings; hygienists: cleanings.
DENTIST_MIX: dict[str, int] = {
    "checkup": 40,
    "filling": 22,
    "emergency": 10,
    "cleaning": 10,
    "child_checkup": 18,
}
HYGIENIST_MIX: dict[str, int] = {"cleaning": 75, "child_checkup": 25}
BOOKINGS_PER_PATIENT = 2  # < Clinic.max_bookings_per_patient (3) by construction
FILL_DECAY_DAYS = 21.0  # the booked share falls off with this time constant...
FILL_FLOOR = 0.12  # ...towards this fraction of its start value
FILL_MAX = 0.92  # never quite full: emergencies need gaps

_ATTEMPTS_PER_DAY = 48


def fill_share(days_ahead: int, share: float, days: int) -> float:
    """The fraction of a day's open cells booked ``days_ahead`` days from the first day, for
    an overall ``share`` over ``days`` days: ``exp(-d/21) + 0.12`` scaled to mean ``share``,
    capped at 0.92 (so the mean is a little under ``share`` when the cap bites)."""
    if share <= 0 or days <= 0:
        return 0.0
    mean = sum(math.exp(-d / FILL_DECAY_DAYS) for d in range(days)) / days + FILL_FLOOR
    return min(FILL_MAX, share * (math.exp(-days_ahead / FILL_DECAY_DAYS) + FILL_FLOOR) / mean)


Rows = Callable[[Resource, Clinic, int], bytes]


def _opening_rows() -> Rows:
    """The cells the seed's ``OpenDays`` opens on a day: the engine's own opening masks."""
    masks = OpeningMasks()
    return lambda resource, clinic, day: masks.of(clinic, day, resource)


def _state_rows(state: RegionState) -> Rows:
    return lambda resource, clinic, day: state.row(resource.id, day)


def prebook_region(
    region: str,
    clinics: Sequence[tuple[Clinic, Sequence[Resource]]],
    share: float,
    *,
    first_day: int,
    days: int,
    rng_seed: int = 1,
    not_before: int = 0,
    rows: Rows | None = None,
) -> Iterator[Book]:
    """One region's pre-booked times as ``Book`` commands, lazily (so a caller can submit them
    in chunks). Every command fits: it books FREE cells of ``rows`` (by default the cells the
    seed's ``OpenDays`` opens) that no earlier command of this call took, starting at or after
    epoch second ``not_before``. Booking ids are ``"<region>-s<n>"``, patients ``"seed-p<n>"``."""
    rng = random.Random(f"prebook-{rng_seed}-{region}")
    rows = rows or _opening_rows()
    fills = [fill_share(offset, share, days) for offset in range(days)]
    last_past_day = day_of_epoch(not_before) if not_before else 0
    n = 0
    for clinic, resources in clinics:
        cm = clinic.cell_minutes
        offered = set(clinic.services)
        for res in resources:
            mix = DENTIST_MIX if res.kind is not ResourceKind.HYGIENIST else HYGIENIST_MIX
            services = [s for s in mix if s in res.services and s in offered]
            if not services:
                continue
            cumulative = list(itertools.accumulate(mix[s] for s in services))
            total = cumulative[-1]
            cells_for = [SERVICES_BY_ID[s].cells(cm) for s in services]
            for offset in range(days):
                day = first_day + offset
                cells = bytearray(rows(res, clinic, day))
                target = round(cells.count(FREE) * fills[offset])
                if not target:
                    continue
                check_past = day <= last_past_day
                span = len(cells)
                booked = 0
                for _ in range(_ATTEMPTS_PER_DAY):
                    i = bisect.bisect_right(cumulative, rng.random() * total)
                    k = cells_for[i]
                    start = int(rng.random() * (span - k + 1))
                    if cells[start : start + k] != _FREE_RUNS[k] or (
                        check_past and cell_epoch(day, start, cm) < not_before
                    ):
                        continue
                    cells[start : start + k] = _TAKEN_RUNS[k]
                    booked += k
                    yield Book(
                        f"{region}-s{n}",
                        f"seed-p{n // BOOKINGS_PER_PATIENT}",
                        res.id,
                        services[i],
                        day,
                        start,
                    )
                    n += 1
                    if booked >= target:
                        break


_FREE_RUNS = [bytes([FREE]) * k for k in range(24 * 60 + 1)]
_TAKEN_RUNS = [bytes(k) for k in range(24 * 60 + 1)]  # any value but FREE marks a cell taken here


def prebook_commands(
    catalog_or_state: Catalog | Mapping[str, RegionState],
    share: float,
    *,
    first_day: int,
    days: int = 90,
    rng_seed: int = 1,
    not_before: int = 0,
) -> dict[str, list[Book]]:
    """Per region code: ``Book`` commands that fill about ``share`` (0..1) of the open cells
    over ``days`` days from ``first_day``, more in the next weeks than far out (see
    ``fill_share``). From a ``Catalog`` the open cells are the seed's opening hours; from
    region states (after the seed's commands) they are the states' FREE cells. Deterministic
    for a given ``rng_seed``. Apply them after the seed's commands, with ``now <= not_before``."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be within 0..1, got {share}")
    out: dict[str, list[Book]] = {}
    for region, source in catalog_or_state.items():
        rows: Rows | None
        clinics: Sequence[tuple[Clinic, Sequence[Resource]]]
        if isinstance(source, RegionState):
            clinics = [(c, source.resources_of(c.id)) for c in source.clinics.values()]
            rows = _state_rows(source)
        else:
            clinics, rows = source, None
        out[region] = list(
            prebook_region(
                region,
                clinics,
                share,
                first_day=first_day,
                days=days,
                rng_seed=rng_seed,
                not_before=not_before,
                rows=rows,
            )
        )
    return out


SEED_LEAD_S = 15 * 60  # pre-booked times start at least this long after ``now``
_CHANGES_EVERY = 4096  # commands between take_changes(): the seed has no subscriber to tell


def seeded_state(
    region: str,
    clinics: Sequence[tuple[Clinic, Sequence[Resource]]],
    *,
    now: int,
    days: int = 90,
    booked: float = 0.0,
    rng_seed: int = 1,
) -> tuple[RegionState, list[Event], int]:
    """One region's demo state built by ``RegionState.apply`` at epoch second ``now``: every
    clinic registered (``kept_open``: the rolling horizon goes on opening its days), every resource opened for ``days`` days from ``now``'s day, then
    (``booked`` > 0) ``prebook_region``'s times from ``SEED_LEAD_S`` after ``now``. Returns the
    state, the events of the catalogue (clinics registered, days opened: a few per resource)
    and how many Book commands the engine refused (0 unless the generator and the engine
    disagree). The state is exactly what an actor would hold after those commands."""
    first_day = day_of_epoch(now)
    state = RegionState(region)
    apply = state.apply
    catalogue: list[Event] = []
    for clinic, resources in clinics:
        catalogue.extend(apply(RegisterClinic(kept_open(clinic, days), tuple(resources)), now))
    for _, resources in clinics:
        for res in resources:
            catalogue.extend(apply(OpenDays(res.id, first_day, days), now))
    state.take_changes()
    refused = 0
    if booked:
        books = prebook_region(
            region,
            clinics,
            booked,
            first_day=first_day,
            days=days,
            rng_seed=rng_seed,
            not_before=now + SEED_LEAD_S,
        )
        for n, book in enumerate(books, 1):
            try:
                apply(book, now)
            except Refused:
                refused += 1
            if not n % _CHANGES_EVERY:
                state.take_changes()
        state.take_changes()
    return state, catalogue, refused


@dataclass(frozen=True, slots=True)
class SeededRegion:
    region: str
    catalogue: bytes  # persistence.codec.pack_events of the clinics registered and days opened
    snapshot: bytes  # persistence.codec.pack_snapshot of the whole seeded state
    clinics: int
    bookings: int
    refused: int
    first_clinic: str | None  # the lowest clinic id


def seeded_region(
    region: str,
    clinics: Sequence[tuple[Clinic, Sequence[Resource]]],
    *,
    now: int,
    days: int = 90,
    booked: float = 0.0,
) -> SeededRegion:
    """``seeded_state`` packed for the journal: the catalogue's events as one journal payload and
    the whole state as a snapshot payload (what a worker process hands back; the state itself
    stays in the worker)."""
    state, catalogue, refused = seeded_state(region, clinics, now=now, days=days, booked=booked)
    return SeededRegion(
        region,
        pack_events([to_record(e) for e in catalogue]),
        pack_snapshot(state.to_snapshot()),
        len(state.clinics),
        state.booking_count(),
        refused,
        min(state.clinics, default=None),
    )
