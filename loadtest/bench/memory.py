"""``python -m loadtest.bench memory``: resident memory of all of Sweden's slot tables and bookings.

Builds the seed catalogue (default ``--scale sweden``: ~4,430 clinics, ~13,000 resources),
applies its commands to one ``engine.state.RegionState`` per region with ``--days`` days
opened (default 90), then (with ``--booked F``) the seed's pre-booked times filling about
that share of the open cells (``server.demo.seed.prebook_region``), and reports the process RSS
(psutil) after a full GC. The target for the empty slot tables is < 512 MB RSS.

With bookings it also reports what a booking costs: ``bytes_per_booking_built`` is the RSS the
bookings added to this process (after - before booking, over the count); for
``bytes_per_booking_restored`` every region's snapshot is packed to a temporary directory, once
without and once with its bookings, and a fresh child process loads each set (unpack +
``RegionState.from_snapshot``): the RSS difference over the count, and the child's load time
(``load_s``) of the booked set. ``loadavg`` is the 1-minute load average at each figure (the
machine is shared). Prints one JSON line and returns the same dict.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psutil

from engine.calendar import TZ
from engine.cells import BOOKED
from engine.state import RegionState
from persistence.codec import pack_snapshot, unpack_snapshot
from server.demo.catalogue import build_catalog
from server.demo.seed import prebook_region, seed_commands


def _now_before(first_day: int) -> int:
    """Epoch seconds one minute before 00:00 Europe/Stockholm of ``first_day``."""
    d = date.fromordinal(first_day)
    return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp()) - 60


def rss_mb() -> float:
    """This process's RSS in MiB after a full collection."""
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def loadavg() -> float:
    return round(os.getloadavg()[0], 1)


def add_build_options(parser: argparse.ArgumentParser) -> None:
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


def build_tables(args: argparse.Namespace) -> tuple[dict[str, RegionState], int, int]:
    """One state per region with the seed's clinics and opened days, no bookings.
    Returns (states, first_day, now)."""
    scale: str | int = int(args.scale) if args.scale.isdigit() else args.scale
    first_day = (args.first_day or date.today()).toordinal()
    now = _now_before(first_day)
    states: dict[str, RegionState] = {}
    for region, commands in seed_commands(
        scale, first_day=first_day, days=args.days, rng_seed=args.seed
    ).items():
        state = states[region] = RegionState(region)
        for command in commands:
            state.apply(command, now)
            state.take_changes()  # nobody listens: drop the diff so it cannot pile up
    return states, first_day, now


def book(args: argparse.Namespace, states: dict[str, RegionState], first_day: int, now: int) -> int:
    """Apply the seed's pre-booked times to every region; returns the bookings made."""
    scale: str | int = int(args.scale) if args.scale.isdigit() else args.scale
    catalog = build_catalog(scale, rng_seed=args.seed)
    made = 0
    for region, state in states.items():
        for command in prebook_region(
            region, catalog[region], args.booked, first_day=first_day, days=args.days, rng_seed=args.seed
        ):
            state.apply(command, now)
            state.take_changes()
            made += 1
    return made


def write_snapshots(states: dict[str, RegionState], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for region, state in states.items():
        (directory / f"{region}.snap").write_bytes(pack_snapshot(state.to_snapshot()))


def load_snapshots(directory: Path) -> tuple[dict[str, RegionState], float]:
    """Every ``*.snap`` in ``directory`` read, unpacked and restored; returns (states, seconds)."""
    started = time.perf_counter()
    states = {
        path.stem: RegionState.from_snapshot(unpack_snapshot(path.read_bytes()))
        for path in sorted(directory.glob("*.snap"))
    }
    return states, time.perf_counter() - started


def restore_in_child(directory: Path) -> dict[str, Any]:
    """A fresh interpreter loads the snapshots in ``directory``: its RSS and load time."""
    out = subprocess.run(
        [sys.executable, "-m", "loadtest.bench.memory", "--restore", str(directory)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _restore_main(directory: Path) -> None:
    gc.disable()  # as the actor does while it recovers
    states, load_s = load_snapshots(directory)
    gc.enable()
    print(json.dumps({"rss_mb": round(rss_mb(), 1), "load_s": round(load_s, 2), "regions": len(states)}))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench memory", description=__doc__)
    add_build_options(parser)
    parser.add_argument("--restore", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> dict[str, Any]:
    args = _parse(argv)
    if args.restore is not None:
        _restore_main(args.restore)
        return {}
    started = time.perf_counter()
    states, first_day, now = build_tables(args)
    rss_tables = rss_mb()
    bookings = book(args, states, first_day, now) if args.booked else 0
    build_s = time.perf_counter() - started
    rss_booked = rss_mb()
    load_built = loadavg()

    clinics = sum(len(s.clinics) for s in states.values())
    resources = sum(len(s.resources) for s in states.values())
    cells = sum(len(s.resource_row(r).buf) for s in states.values() for r in s.resources)
    free_cells = sum(
        s.free_count(c, d)
        for s in states.values()
        for c in s.clinics
        for d in range(first_day, first_day + args.days)
    )
    booked_cells = sum(s.resource_row(r).buf.count(BOOKED) for s in states.values() for r in s.resources)
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
        "rss_mb": round(rss_booked, 1),
        "build_s": round(build_s, 2),
        "loadavg_built": load_built,
    }
    if bookings:
        result["bytes_per_booking_built"] = round((rss_booked - rss_tables) * 2**20 / bookings)
        with tempfile.TemporaryDirectory(prefix="tandtid-memory-") as tmp:
            write_snapshots(states, Path(tmp) / "booked")
            del states
            empty, _, _ = build_tables(args)
            write_snapshots(empty, Path(tmp) / "empty")
            del empty
            gc.collect()
            without = restore_in_child(Path(tmp) / "empty")
            restored = restore_in_child(Path(tmp) / "booked")
        result["bytes_per_booking_restored"] = round(
            (restored["rss_mb"] - without["rss_mb"]) * 2**20 / bookings
        )
        result["rss_mb_restored"] = restored["rss_mb"]
        result["load_s"] = restored["load_s"]
        result["loadavg_restored"] = loadavg()
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
