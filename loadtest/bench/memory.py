"""``python -m loadtest.bench memory``: resident memory of all of Sweden's slot tables.

Builds the seed catalogue (default ``--scale sweden``: ~4,430 clinics, ~13,000 resources),
applies its commands to one ``engine.state.RegionState`` per region with ``--days`` days
opened (default 90), then (with ``--booked F``) the seed's pre-booked times filling about
that share of the open cells (``server.demo.seed.prebook_region``), and reports the process RSS
(psutil) after a full GC. The target for the empty slot tables is < 512 MB RSS. Prints one
JSON line and returns the same dict.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from datetime import date, datetime
from typing import Any

import psutil

from engine.calendar import TZ
from engine.state import RegionState
from server.demo.seed import build_catalog, prebook_region, seed_commands


def _now_before(first_day: int) -> int:
    """Epoch seconds one minute before 00:00 Europe/Stockholm of ``first_day``."""
    d = date.fromordinal(first_day)
    return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp()) - 60


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench memory", description=__doc__)
    parser.add_argument("--scale", default="sweden", help="demo, small, sweden or a number of clinics")
    parser.add_argument("--days", type=int, default=90, help="days opened per resource")
    parser.add_argument(
        "--first-day",
        type=date.fromisoformat,
        default=None,
        help="YYYY-MM-DD of the first opened day (default: today)",
    )
    parser.add_argument("--seed", type=int, default=1, help="rng seed of the catalogue")
    parser.add_argument(
        "--booked",
        type=float,
        default=0.0,
        help="share of the open cells pre-booked (0..1), as `tandtid seed --booked`",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> dict[str, Any]:
    args = _parse(argv)
    scale: str | int = int(args.scale) if args.scale.isdigit() else args.scale
    first_day = (args.first_day or date.today()).toordinal()
    now = _now_before(first_day)

    started = time.perf_counter()
    states: dict[str, RegionState] = {}
    clinics = resources = bookings = 0
    catalog = build_catalog(scale, rng_seed=args.seed) if args.booked else {}
    for region, commands in seed_commands(
        scale, first_day=first_day, days=args.days, rng_seed=args.seed
    ).items():
        state = states[region] = RegionState(region)
        for command in commands:
            state.apply(command, now)
            state.take_changes()  # nobody listens: drop the diff so it cannot pile up
        if args.booked:
            for book in prebook_region(
                region, catalog[region], args.booked, first_day=first_day, days=args.days, rng_seed=args.seed
            ):
                state.apply(book, now)
                state.take_changes()
        clinics += len(state.clinics)
        resources += len(state.resources)
        bookings += len(state.bookings)
    del catalog
    build_s = time.perf_counter() - started

    gc.collect()
    rss_mb = psutil.Process().memory_info().rss / 2**20
    cells = sum(len(s.resource_row(r).buf) for s in states.values() for r in s.resources)
    free_cells = sum(
        s.free_count(c, d)
        for s in states.values()
        for c in s.clinics
        for d in range(first_day, first_day + args.days)
    )
    booked_cells = sum(b.cells for s in states.values() for b in s.bookings.values())
    result: dict[str, Any] = {
        "bench": "memory",
        "clinics": clinics,
        "resources": resources,
        "cells": cells,
        "free_cells": free_cells,
        "bookings": bookings,
        "booked_cells": booked_cells,
        "booked_share": round(booked_cells / max(1, booked_cells + free_cells), 3),
        "days": args.days,
        "rss_mb": round(rss_mb, 1),
        "build_s": round(build_s, 2),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
