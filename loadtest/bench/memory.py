"""``tandtid bench memory``: resident memory of all of Sweden's slot tables.

Builds the seed catalogue (default ``--scale sweden``: ~4,430 clinics, ~13,000 resources),
applies its commands to one ``engine.state.RegionState`` per region with ``--days`` days
opened (default 90), and reports the process RSS (psutil) after a full GC. The target is
< 512 MB RSS. Prints one JSON line and returns the same dict.
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
from server.seed import seed_commands


def _now_before(first_day: int) -> int:
    """Epoch seconds one minute before 00:00 Europe/Stockholm of ``first_day``."""
    d = date.fromordinal(first_day)
    return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp()) - 60


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tandtid bench memory", description=__doc__)
    parser.add_argument("--scale", default="sweden", help="demo, small, sweden or a number of clinics")
    parser.add_argument("--days", type=int, default=90, help="days opened per resource")
    parser.add_argument("--first-day", type=date.fromisoformat, default=None,
                        help="YYYY-MM-DD of the first opened day (default: today)")
    parser.add_argument("--seed", type=int, default=1, help="rng seed of the catalogue")
    return parser.parse_args(argv)


def main(argv: list[str]) -> dict[str, Any]:
    args = _parse(argv)
    scale: str | int = int(args.scale) if args.scale.isdigit() else args.scale
    first_day = (args.first_day or date.today()).toordinal()
    now = _now_before(first_day)

    started = time.perf_counter()
    states: dict[str, RegionState] = {}
    clinics = resources = 0
    for region, commands in seed_commands(scale, first_day=first_day, days=args.days,
                                          rng_seed=args.seed).items():
        state = states[region] = RegionState(region)
        for command in commands:
            state.apply(command, now)
            state.take_changes()   # nobody listens: drop the diff so it cannot pile up
        clinics += len(state.clinics)
        resources += len(state.resources)
    build_s = time.perf_counter() - started

    gc.collect()
    rss_mb = psutil.Process().memory_info().rss / 2**20
    cells = sum(len(s.resource_row(r).buf) for s in states.values() for r in s.resources)
    free_cells = sum(s.free_count(c, d) for s in states.values() for c in s.clinics
                     for d in range(first_day, first_day + args.days))
    result: dict[str, Any] = {
        "bench": "memory", "clinics": clinics, "resources": resources, "cells": cells,
        "free_cells": free_cells, "days": args.days, "rss_mb": round(rss_mb, 1),
        "build_s": round(build_s, 2),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
