"""``python -m loadtest.bench recovery``: journal N events (default 1,000,000), then time a region actor
from start to ready — from the latest snapshot + the journal tail after it, and (for
reference) by replaying the whole journal with no snapshot.

The journal is written exactly as the actor writes it (same codec, batches of events), but
by applying commands to a RegionState directly so that building the journal is quick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import ExitStack
from typing import Any

from engine.commands import Book, Cancel, OpenDays, Party, PlaceHold, RegisterClinic, ReleaseHold
from engine.errors import Refused
from engine.events import to_record
from engine.state import RegionState
from loadtest.bench.actor import open_bench_journal
from loadtest.bench.catalog import bench_catalog, bench_now
from persistence.codec import pack_events, pack_snapshot
from persistence.journal import Snapshot
from server.regions.actor import RegionActor


async def run(
    kind: str, events_wanted: int, snapshot_at: float, redis_url: str | None, batch: int
) -> dict[str, Any]:
    region = "AB"
    with ExitStack() as stack:
        journal = await open_bench_journal(kind, redis_url, stack)
        clinics, first_day, days = bench_catalog(region, clinics=300, resources=4, days=30)
        now = bench_now(first_day)
        state = RegionState(region)
        pending: list[list[Any]] = []
        written = 0
        snapshot_taken = False

        async def flush() -> None:
            nonlocal pending
            if pending:
                await journal.append(region, 1, pack_events(pending))
                pending = []

        async def emit(events: list[Any]) -> None:
            nonlocal written, snapshot_taken
            pending.extend(to_record(e) for e in events)
            written += len(events)
            if len(pending) >= batch:
                await flush()
                if not snapshot_taken and written >= events_wanted * snapshot_at:
                    position = await journal.last_position(region)
                    await journal.save_snapshot(
                        region, Snapshot(position, pack_snapshot(state.to_snapshot()))
                    )
                    snapshot_taken = True

        for clinic, resources in clinics:
            await emit(state.apply(RegisterClinic(clinic, resources), now))
            for r in resources:
                await emit(state.apply(OpenDays(r.id, first_day, days), now))
        slots = [
            (res, day, cell)
            for res in sorted(state.resources)
            for day in range(first_day, first_day + days)
            for cell, value in enumerate(state.row(res, day))
            if value == 1
        ]
        n = 0
        i = 0
        while written < events_wanted:
            res, day, cell = slots[i % len(slots)]
            i += 1
            n += 1
            bid = f"{region}-b{n}"
            patient = f"p{n % 10_000}"
            kind_of = n % 5
            if kind_of == 4:  # hold then release: two events
                await emit(
                    state.apply(PlaceHold(f"{region}-h{n}", patient, res, "child_checkup", day, cell), now)
                )
                await emit(state.apply(ReleaseHold(f"{region}-h{n}", patient), now))
            elif kind_of == 3:  # book then cancel: the cell is free again for later rounds
                await emit(state.apply(Book(bid, patient, res, "child_checkup", day, cell), now))
                await emit(state.apply(Cancel(bid, Party.PATIENT, patient), now))
            else:
                try:
                    events = state.apply(Book(bid, patient, res, "child_checkup", day, cell), now)
                except Refused:
                    events = []  # the cell is taken in a later round: refused commands leave nothing
                await emit(events)
            state.take_changes()
        await flush()
        entries = await journal.last_position(region)

        async def time_recovery() -> tuple[float, RegionActor]:
            actor = RegionActor(region, journal, clock=lambda: now)
            t0 = time.perf_counter()
            await actor.start()
            elapsed = time.perf_counter() - t0
            await actor.stop()
            return elapsed, actor

        with_snapshot, actor = await time_recovery()
        same = actor.state.to_snapshot() == state.to_snapshot()
        snap = await journal.load_snapshot(region)
        tail_entries = entries - (snap.position if snap else 0)
        # reference: the same journal replayed from the start (no snapshot)
        t0 = time.perf_counter()
        from engine.events import from_record
        from persistence.codec import unpack_events

        replay = RegionState(region)
        async for entry in journal.read(region):
            for record in unpack_events(entry.payload):
                replay.evolve(from_record(record))
        full_replay = time.perf_counter() - t0
        await journal.close()
    return {
        "bench": "recovery",
        "journal": kind,
        "events": written,
        "journal_entries": entries,
        "tail_entries": tail_entries,
        "recovery_s": round(with_snapshot, 3),
        "full_replay_s": round(full_replay, 3),
        "state_identical": same,
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench recovery")
    parser.add_argument("--journal", choices=["file", "redis"], default="file")
    parser.add_argument("--redis", default=None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--snapshot-at", type=float, default=0.9, help="fraction of the journal covered by the snapshot"
    )
    parser.add_argument("--batch", type=int, default=500, help="events per journal entry")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.journal, args.events, args.snapshot_at, args.redis, args.batch))
    print(json.dumps(result), flush=True)
    return result
