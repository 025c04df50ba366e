"""``python -m loadtest.bench snapshot``: what a region snapshot costs the actor, and loading them all.

Builds the same states as ``bench memory`` (seed catalogue, ``--days`` opened, ``--booked``
share pre-booked), then per region times the steps of a snapshot as the actor runs them: ``capture``
(``RegionState.capture_snapshot()``, the only step on the event loop, inside the actor's turn:
what changes in place), ``finish`` (the returned function: the append-only rest, copied in a
worker thread), ``pack`` (``persistence.codec.pack_snapshot``, in that thread) and the write. Then a
fresh child process loads every snapshot (read, unpack, ``RegionState.from_snapshot``) as a
restart does. Prints one JSON line: the largest region's capture (``capture_ms_largest``,
wall clock, and ``capture_cpu_ms_largest``, this thread's CPU time: on a loaded machine the
wall clock also counts the time the process waited for a core), the slowest region's, the sum
over regions, pack seconds, snapshot size and ``load_s``; ``loadavg`` is the 1-minute load
average at each figure (the machine is shared).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.bench.memory import add_build_options, book, build_tables, loadavg, restore_in_child
from persistence.codec import pack_snapshot


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench snapshot", description=__doc__)
    add_build_options(parser)
    parser.set_defaults(booked=0.3)
    return parser.parse_args(argv)


def main(argv: list[str]) -> dict[str, Any]:
    args = _parse(argv)
    states, first_day, now = build_tables(args)
    bookings = book(args, states, first_day, now) if args.booked else 0
    gc.collect()
    captures: dict[str, float] = {}
    captures_cpu: dict[str, float] = {}
    pack_s: dict[str, float] = {}
    finished: dict[str, float] = {}
    size = 0
    with tempfile.TemporaryDirectory(prefix="tandtid-snapshot-") as tmp:
        directory = Path(tmp)
        for region, state in states.items():
            started, started_cpu = time.perf_counter(), time.thread_time()
            finish = state.capture_snapshot()
            captured, captured_cpu = time.perf_counter(), time.thread_time()
            data = finish()
            finished[region] = (time.perf_counter() - captured) * 1000
            payload = pack_snapshot(data)
            packed = time.perf_counter()
            (directory / f"{region}.snap").write_bytes(payload)
            captures[region] = (captured - started) * 1000
            captures_cpu[region] = (captured_cpu - started_cpu) * 1000
            pack_s[region] = packed - captured - finished[region] / 1000
            size += len(payload)
            del data, payload, finish
        load_capture = loadavg()
        sizes = {region: len(state.resources) for region, state in states.items()}
        largest = max(sizes, key=lambda r: sizes[r])
        del states
        gc.collect()
        restored = restore_in_child(directory)
    worst = max(captures, key=lambda r: captures[r])
    result: dict[str, Any] = {
        "bench": "snapshot",
        "bookings": bookings,
        "largest_region": largest,
        "capture_ms_largest": round(captures[largest], 1),
        "capture_cpu_ms_largest": round(captures_cpu[largest], 1),
        "capture_ms_max": round(captures[worst], 1),
        "capture_ms_max_region": worst,
        "capture_ms_total": round(sum(captures.values()), 1),
        "capture_cpu_ms_max": round(max(captures_cpu.values()), 1),
        "finish_ms_largest": round(finished[largest], 1),
        "pack_s_largest": round(pack_s[largest], 2),
        "pack_s_total": round(sum(pack_s.values()), 2),
        "snapshot_mb": round(size / 2**20, 1),
        "loadavg_capture": load_capture,
        "load_s": restored["load_s"],
        "rss_mb_loaded": restored["rss_mb"],
        "loadavg_load": loadavg(),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
