"""``python -m loadtest.bench actor --journal file|redis``: bookings/s through one region actor with
group commit, from many concurrent producers, with per-booking latency p50/p99.

Every booking is a real ``Book`` on its own free cell, acknowledged only after the batch's
journal append is durable (fsync for files; appendfsync always for the Redis it starts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from typing import Any

from engine.commands import Book, OpenDays, RegisterClinic
from loadtest.bench.catalog import bench_catalog, bench_now
from persistence.journal import Journal
from server.regions.actor import RegionActor
from server.runtime import tune_gc


async def open_bench_journal(kind: str, redis_url: str | None, stack: ExitStack) -> Journal:
    journal: Journal
    if kind == "redis":
        from persistence.redis_journal import RedisStreamJournal

        if redis_url is None:
            from loadtest.redis_server import RedisServer

            server = RedisServer().start()
            stack.callback(server.stop)
            redis_url = server.url
        journal = RedisStreamJournal(redis_url)
    else:
        from persistence.file_journal import FileJournal

        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="tandtid-bench-"))
        journal = FileJournal(directory)
    await journal.open()
    return journal


async def run(kind: str, producers: int, bookings: int, redis_url: str | None) -> dict[str, Any]:
    with ExitStack() as stack:
        journal = await open_bench_journal(kind, redis_url, stack)
        region = "AB"
        clinics, first_day, days = bench_catalog(region, clinics=200, resources=4)
        now = bench_now(first_day)
        actor = RegionActor(region, journal, clock=lambda: now, snapshot_every_events=10**9)
        await actor.start()
        for clinic, resources in clinics:
            await actor.submit(RegisterClinic(clinic, resources))
            await asyncio.gather(*(actor.submit(OpenDays(r.id, first_day, days)) for r in resources))
        slots = await actor.query(
            lambda s: [
                (res, day, cell)
                for res in sorted(s.resources)
                for day in range(first_day, first_day + days)
                for cell, value in enumerate(s.row(res, day))
                if value == 1
            ]
        )
        if len(slots) < bookings:
            raise SystemExit(f"only {len(slots)} free cells for {bookings} bookings")
        commands = [
            Book(f"{region}-b{i}", f"p{i % 5000}", res, "child_checkup", day, cell)
            for i, (res, day, cell) in enumerate(slots[:bookings])
        ]
        latencies: list[float] = []
        per_producer = [commands[i::producers] for i in range(producers)]

        async def produce(mine: list[Book]) -> None:
            for command in mine:
                t0 = time.perf_counter()
                await actor.submit(command)
                latencies.append(time.perf_counter() - t0)

        tune_gc()
        position_before = await journal.last_position(region)
        started = time.perf_counter()
        await asyncio.gather(*(produce(mine) for mine in per_producer))
        elapsed = time.perf_counter() - started
        appends = await journal.last_position(region) - position_before
        await actor.stop()
        await journal.close()
    latencies.sort()
    return {
        "bench": "actor",
        "journal": kind,
        "producers": producers,
        "bookings": bookings,
        "bookings_per_s": round(bookings / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "journal_appends": appends,
        "mean_batch": round(bookings / max(1, appends), 1),
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench actor")
    parser.add_argument("--journal", choices=["file", "redis"], default="file")
    parser.add_argument("--redis", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--producers", type=int, default=1000)
    parser.add_argument("--bookings", type=int, default=100_000)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.journal, args.producers, args.bookings, args.redis))
    print(json.dumps(result), flush=True)
    return result
