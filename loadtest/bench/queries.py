"""``python -m loadtest.bench queries``: what the reads of the Locust mix cost, on one region.

Loads one region (default Stockholm, ``AB``: ~1,100 clinics) with ``--booked`` share pre-booked,
from a seeded data directory's snapshot (``--data DIR``, e.g. what ``bench restart --keep`` left)
or built as ``bench memory`` builds it, then times each read the mix makes in the engine, as CPU
time of this thread (``time.thread_time``: what the read costs the event loop, whatever else the
machine runs) -- the median of ``--repeat`` calls, in ms:

- ``search_*``: the clinic search of the mix (``engine.search.earliest_clinics``: a service,
  from the day after tomorrow, 7 days, ``limit`` 20): ``cold`` the first search of a range (the
  region's ranking is built), ``warm`` nothing changed since the last, ``after_N`` after ``N``
  bookings at random clinics (what a search meets under load);
- ``summary_*``: the map's free counts of every clinic for 14 days (``engine.queries.region_summary``,
  a region topic's snapshot and ``/api/regions/{code}/summary``): cold, after N bookings;
- ``badges_*``: the map's badges, every clinic's bookable times of a service for 14 days
  (``engine.queries.bookable_summary``, in a region topic's snapshot): ``cold`` nothing counted
  yet (after a start), ``next_cell`` the clock moved into the next cell (today's times are
  counted again, every ``cell_minutes``), ``after_N`` after ``N`` bookings;
- ``*_longest_slice_ms``: the same cold builds as the server makes them (``Regions.prepare``:
  ``SLICE_CLINICS`` clinics per turn of its event loop, ``SEARCH_SLICE_CLINICS`` for a search
  ranking), the longest turn;
- ``availability``: one clinic's free starts for a service over 7 days (``queries.free_starts``);
- ``clinic_day``: one clinic's cells and bookings of a day (``queries.clinic_day``);
- ``my_bookings``: one patient's bookings (``RegionState.bookings_of``).

Prints one JSON line with the figures, the region's size and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from engine import queries, search
from engine.calendar import day_of_epoch
from engine.commands import Book
from engine.errors import Refused
from engine.starts import StartCounts
from engine.state import RegionState
from loadtest.bench.memory import _now_before, loadavg
from persistence.codec import unpack_snapshot
from persistence.file_journal import decode_snapshot
from server.demo.catalogue import build_catalog
from server.demo.seed import prebook_region, seed_commands
from server.regions.routing import SEARCH_SLICE_CLINICS, SLICE_CLINICS

SERVICES = ("checkup", "cleaning", "emergency", "filling", "child_checkup")


def load(args: argparse.Namespace) -> tuple[RegionState, int]:
    """(the region's state, now): from ``--data``'s snapshot, else built from the seed."""
    gc.disable()  # as recovery does
    try:
        if args.data is not None:
            stored = decode_snapshot((Path(args.data) / "snapshots" / f"{args.region}.snap").read_bytes())
            if stored is None:
                raise SystemExit(f"no intact snapshot of {args.region} in {args.data}")
            return RegionState.from_snapshot(unpack_snapshot(stored.payload)), int(time.time())
        first_day = date.today().toordinal()
        now = _now_before(first_day)
        state = RegionState(args.region)
        for command in seed_commands("sweden", first_day=first_day, days=90, rng_seed=1)[args.region]:
            state.apply(command, now)
        catalog = build_catalog("sweden", rng_seed=1)
        for command in prebook_region(
            args.region, catalog[args.region], args.booked, first_day=first_day, days=90, rng_seed=1
        ):
            state.apply(command, now)
        state.take_changes()
        return state, now
    finally:
        gc.enable()
        gc.freeze()


def cpu_ms(fn: Callable[[], object], repeat: int, before: Callable[[], object] | None = None) -> float:
    """Median thread CPU time of ``fn`` in ms over ``repeat`` calls (``before`` runs untimed first)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.thread_time()
        fn()
        times.append(time.thread_time() - started)
    return round(statistics.median(times) * 1000, 3)


def longest_slice_ms(step: Callable[[], bool]) -> float:
    """The longest call of ``step`` (thread CPU ms), called until it says done: what one turn of
    the event loop costs while the server builds a cold cache in slices (``Regions.prepare``)."""
    longest = 0.0
    while True:
        started = time.thread_time()
        done = step()
        longest = max(longest, time.thread_time() - started)
        if done:
            return round(longest * 1000, 3)


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench queries", description=__doc__)
    parser.add_argument("--data", default=None, help="a seeded data directory (its snapshots/)")
    parser.add_argument("--region", default="AB")
    parser.add_argument("--booked", type=float, default=0.3, help="share pre-booked when built")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--after", type=int, default=20, help="bookings between two searches (after_N)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    state, now = load(args)
    load_s = time.perf_counter() - started
    now = max(now, int(time.time())) if args.data else now
    today = day_of_epoch(now)
    first, days = today + 2, 7
    rng = random.Random(1)
    resources = list(state.resources)
    clinics = list(state.clinics)
    made = [0]

    def book_some() -> None:
        for _ in range(args.after):  # a booking that fits, at a random clinic and day of the range
            resource = rng.choice(resources)
            try:
                state.apply(
                    Book(
                        f"{args.region}-bq{made[0]}",
                        f"pq{made[0] % 500}",
                        resource,
                        "child_checkup",
                        first + rng.randrange(days),
                        rng.randrange(28, 68),
                    ),
                    now,
                )
                made[0] += 1
            except Refused:
                pass
        state.take_changes()

    service = iter(SERVICES * (args.repeat + 1))
    cell_s = 60 * min(c.cell_minutes for c in state.clinics.values())
    at = [now]

    def next_cell() -> None:
        queries.bookable_summary(state, "checkup", today, 14, at[0])  # counted and kept
        at[0] += cell_s  # the timed read: one cell later

    def cold_badges() -> object:
        queries._summaries.pop(state, None)
        state._starts = StartCounts()
        return queries.bookable_summary(state, "checkup", today, 14, now)

    def cold_badges_in_slices() -> float:
        queries._summaries.pop(state, None)
        queries._building.pop(state, None)
        state._starts = StartCounts()
        return longest_slice_ms(
            lambda: queries.prepare_summaries(state, "checkup", today, 14, now, SLICE_CLINICS)
        )

    def next_cell_in_slices() -> float:
        next_cell()
        return longest_slice_ms(
            lambda: queries.prepare_summaries(state, "checkup", today, 14, at[0], SLICE_CLINICS)
        )

    def cold_search_in_slices() -> float:
        search._rankings.pop(state, None)
        return longest_slice_ms(
            lambda: search.prepare(state, "checkup", first, days, now, SEARCH_SLICE_CLINICS)
        )

    def fresh_search_any() -> object:  # a search naming no service: the earliest time of any
        search._rankings.pop(state, None)
        return search.earliest_clinics(state, None, first, days, now, 20)

    def fresh_search() -> object:
        search._rankings.pop(state, None)
        return search.earliest_clinics(state, next(service), first, days, now, 20)

    result: dict[str, Any] = {
        "bench": "queries",
        "region": args.region,
        "clinics": len(state.clinics),
        "resources": len(state.resources),
        "bookings": state.booking_count(),
        "load_s": round(load_s, 2),
        "search_cold_ms": cpu_ms(fresh_search, min(args.repeat, 10)),
        "search_any_service_cold_ms": cpu_ms(fresh_search_any, min(args.repeat, 10)),
        # the same cold build as the server makes it: SEARCH_SLICE_CLINICS clinics per turn of its loop
        "search_cold_longest_slice_ms": cold_search_in_slices(),
        "search_warm_ms": cpu_ms(
            lambda: search.earliest_clinics(state, "checkup", first, days, now, 20), args.repeat
        ),
        f"search_after_{args.after}_ms": cpu_ms(
            lambda: search.earliest_clinics(state, "checkup", first, days, now, 20), args.repeat, book_some
        ),
        "summary_cold_ms": cpu_ms(
            lambda: (queries._summaries.pop(state, None), queries.region_summary(state, today, 14)),
            min(args.repeat, 10),
        ),
        f"summary_after_{args.after}_ms": cpu_ms(
            lambda: queries.region_summary(state, today, 14), args.repeat, book_some
        ),
        "badges_cold_ms": cpu_ms(cold_badges, min(args.repeat, 5)),
        "badges_next_cell_ms": cpu_ms(
            lambda: queries.bookable_summary(state, "checkup", today, 14, at[0]),
            min(args.repeat, 10),
            next_cell,
        ),
        "badges_cold_longest_slice_ms": cold_badges_in_slices(),
        "badges_next_cell_longest_slice_ms": next_cell_in_slices(),
        f"badges_after_{args.after}_ms": cpu_ms(
            lambda: queries.bookable_summary(state, "checkup", today, 14, at[0]), args.repeat, book_some
        ),
        "availability_ms": cpu_ms(
            lambda: queries.free_starts(state, rng.choice(clinics), "checkup", first, days, now), args.repeat
        ),
        "clinic_day_ms": cpu_ms(lambda: queries.clinic_day(state, rng.choice(clinics), first), args.repeat),
        "my_bookings_ms": cpu_ms(lambda: state.bookings_of(f"pq{rng.randrange(500)}"), args.repeat),
        "loadavg": loadavg(),
    }
    print(json.dumps(result), flush=True)
    return result
