"""``python -m loadtest.bench journal``: durable appends per second, each a batch of 256 small event records.

For scale it measures, on the same storage, what the hardware and server allow without
the journal: ``raw_fsync_per_s`` (write + fsync of a batch-sized block to a plain file in
the same directory) and, when there is a Redis, ``raw_xadd_per_s`` (XADDs of tiny entries
per second, pipelined 64 deep with redis-py: what redis-benchmark would show) and
``raw_xadd_batch_per_s`` (the same with batch-sized entries: with appendfsync always Redis
reads big pipelined commands a few per event-loop turn and fsyncs every turn, so this can
be lower than the journal's own rate).

Usage: ``python -m loadtest.bench.journal --journal file|redis [--redis URL] [--dir DIR]
[--seconds S] [--regions N] [--batch N]``. With ``--journal redis`` and no ``--redis`` a
real redis-server (AOF, appendfsync always) is started for the run. ``--regions N``
appends to N regions concurrently (one writer each, like N region actors). Also reports
``read_entries_per_s``: reading everything back (what recovery does). Prints and returns
one JSON dict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import redis

from persistence.codec import pack_events
from persistence.file_journal import FileJournal
from persistence.journal import Journal
from persistence.redis_journal import RedisStreamJournal

REGIONS = (
    "AB",
    "O",
    "M",
    "E",
    "F",
    "G",
    "H",
    "I",
    "K",
    "N",
    "S",
    "T",
    "U",
    "W",
    "X",
    "Y",
    "Z",
    "AC",
    "BD",
    "C",
    "D",
)
PIPELINE = 64


def batch_payload(batch: int, seed: int = 0) -> bytes:
    """A realistic batch: ``batch`` small Booked-like records with opaque ids."""
    records = [
        [
            "Booked",
            1,  # the record's version (engine.events.VERSIONS)
            f"AB-{seed:04d}{i:05d}",
            f"p-{i * 7919 % 100000}",
            "AB-c12",
            "AB-c12-r1",
            "checkup",
            20500,
            36 + i % 20,
            2,
            1_770_000_000 + i,
            "",
            f"k{i}",
            f"f{i:x}",
        ]
        for i in range(batch)
    ]
    return pack_events(records)


async def _appends(journal: Journal, regions: int, payload: bytes, seconds: float) -> tuple[int, float]:
    deadline = time.perf_counter() + seconds
    counts = [0] * regions

    async def writer(index: int) -> None:
        region = REGIONS[index]
        while time.perf_counter() < deadline:
            await journal.append(region, 1, payload)
            counts[index] += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(regions)))
    return sum(counts), time.perf_counter() - started


async def _read_back(journal: Journal, regions: int) -> tuple[int, float]:
    started = time.perf_counter()
    n = 0
    for index in range(regions):
        async for _entry in journal.read(REGIONS[index]):
            n += 1
    return n, time.perf_counter() - started


def raw_fsync_rate(directory: Path, size: int, seconds: float) -> float:
    path = directory / f".raw-fsync-{os.getpid()}"
    block = b"\x5a" * size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        n = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            os.write(fd, block)
            os.fsync(fd)
            n += 1
        return n / (time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def raw_xadd_rate(url: str, payload: bytes, seconds: float) -> float:
    client = redis.Redis.from_url(url)
    key = "tandtid:{bench}:raw"
    try:
        n = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            pipe = client.pipeline(transaction=False)
            for _ in range(PIPELINE):
                pipe.xadd(key, {"position": n, "epoch": 1, "payload": payload})
            pipe.execute()
            n += PIPELINE
        return n / (time.perf_counter() - started)
    finally:
        client.delete(key)
        client.close()


def _redis_server_class() -> Any:
    from loadtest.redis_server import RedisServer

    return RedisServer


async def run(args: argparse.Namespace) -> dict[str, Any]:
    payload = batch_payload(args.batch)
    async with AsyncExitStack() as stack:
        base = (
            Path(args.dir)
            if args.dir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tandtid-bench-journal-")))
        )
        redis_url: str | None = args.redis
        fsync_dir = base
        if args.journal == "redis" and redis_url is None:
            RedisServer = _redis_server_class()
            server = RedisServer(data_dir=base / "redis").start()
            stack.callback(server.stop)
            redis_url = server.url
            fsync_dir = server.data_dir
        journal: Journal
        if args.journal == "file":
            journal = FileJournal(base / "journal-data")
        else:
            assert redis_url is not None
            journal = RedisStreamJournal(redis_url)
        await journal.open()
        stack.push_async_callback(journal.close)

        appends, elapsed = await _appends(journal, args.regions, payload, args.seconds)
        read, read_elapsed = await _read_back(journal, args.regions)
        result: dict[str, Any] = {
            "bench": "journal",
            "journal": args.journal,
            "regions": args.regions,
            "batch": args.batch,
            "payload_bytes": len(payload),
            "appends_per_s": round(appends / elapsed, 1),
            "records_per_s": round(appends * args.batch / elapsed, 1),
            "read_entries_per_s": round(read / read_elapsed, 1) if read_elapsed > 0 else None,
            "raw_fsync_per_s": round(
                await asyncio.to_thread(raw_fsync_rate, fsync_dir, len(payload), args.seconds), 1
            ),
            "raw_xadd_per_s": round(
                await asyncio.to_thread(raw_xadd_rate, redis_url, b"xyz", args.seconds), 1
            )
            if redis_url
            else None,
            "raw_xadd_batch_per_s": round(
                await asyncio.to_thread(raw_xadd_rate, redis_url, payload, args.seconds), 1
            )
            if redis_url
            else None,
        }
        return result


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench journal", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--journal", choices=("file", "redis"), default="file")
    parser.add_argument("--redis", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--dir", default=None, help="directory for the file journal (default: a temp dir)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--regions", type=int, default=1, choices=range(1, len(REGIONS) + 1), metavar="1..21")
    parser.add_argument("--batch", type=int, default=256, help="event records per append")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
