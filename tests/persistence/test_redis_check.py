"""Integration tests (a real redis-server, the real ``tandtid journal`` command): check lists a
damaged Redis stream entry with its booking ids; repair removes it (and what recovery could not
replay after it), keeping copies in a set-aside stream, and the region then starts."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import redis

from engine.commands import Book
from persistence.redis_journal import RedisStreamJournal, region_key
from server.regions.actor import Lifecycle, RegionActor
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands
from tests.support.redis_server import RedisServer
from tests.support.served import tandtid

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]


async def booked(url: str, bookings: int = 4, *, snapshot: bool = False) -> list[str]:
    """Catalog + ``bookings`` bookings in AB, one stream entry each; their ids."""
    journal = RedisStreamJournal(url)
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW)
    await actor.start()
    ids = []
    try:
        for command in setup_commands():
            await actor.submit(command)
        for n in range(bookings):
            booking = Book(
                f"AB-bredis{n:04d}", f"p{n}", "AB-c1-r1", "child_checkup", FIRST_DAY, CELL_0900 + n
            )
            await actor.submit(booking)
            ids.append(booking.booking_id)
        if snapshot:
            await actor.snapshot_now()
    finally:
        await actor.stop()
        await journal.close()
    return ids


def damage_entry(url: str, position: int) -> None:
    """Flip a byte of the payload of ``position``'s entry (the stream is rewritten in order: Redis
    cannot change an entry in place)."""
    client = redis.Redis.from_url(url)
    key = region_key("AB", "journal")
    entries = client.xrange(key)
    client.delete(key)
    for stream_id, fields in entries:
        if int(fields[b"position"]) == position:
            payload = bytearray(fields[b"payload"])
            payload[0] ^= 0x40  # the msgpack header: it no longer decodes
            fields = {**fields, b"payload": bytes(payload)}
        client.xadd(
            key,
            {b"position": fields[b"position"], b"epoch": fields[b"epoch"], b"payload": fields[b"payload"]},
            id=stream_id,
        )
    client.close()


async def recovered(url: str) -> RegionActor:
    journal = RedisStreamJournal(url)
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW)
    await actor.start(wait=False)
    with contextlib.suppress(Exception):
        await actor.wait_ready()
    return actor


async def stopped(actor: RegionActor) -> None:
    await actor.stop()
    await actor.journal.close()


async def test_check_lists_a_damaged_entry_and_repair_sets_it_aside(redis_server: RedisServer) -> None:
    url = redis_server.url
    ids = await booked(url)
    client = redis.Redis.from_url(url)
    last = int(client.get(region_key("AB", "position")) or 0)
    damaged = last - 1  # the entry of ids[2]; ids[3] comes after it
    damage_entry(url, damaged)

    actor = await recovered(url)
    try:
        assert actor.lifecycle is Lifecycle.FAILED  # recovery stops at the damage
    finally:
        await stopped(actor)

    done = tandtid("journal", "check", "--redis", url, "--region", "AB")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "damaged" and report["position"] == damaged - 1
    assert [(f["position"], f["intact"], f["source"]) for f in report["lost"]] == [
        (damaged, False, "redis"),
        (last, True, "redis"),
    ]
    assert ids[2] in report["lost"][0]["booked"]  # read from the raw bytes
    assert report["lost"][1]["booked"] == [ids[3]]
    assert int(client.get(region_key("AB", "position")) or 0) == last  # check changes nothing

    done = tandtid("journal", "repair", "--redis", url)
    assert done.returncode == 0, done.stderr
    (repaired,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert repaired["repaired"] is True and set(repaired["lost_bookings"]) == {ids[2], ids[3]}
    (aside,) = [k for k in repaired["set_aside"] if ":set-aside:" in k]
    assert [int(f[b"position"]) for _i, f in client.xrange(aside)] == [damaged, last]
    assert int(client.get(region_key("AB", "position")) or 0) == damaged - 1
    client.close()

    actor = await recovered(url)
    try:
        assert actor.ready
        assert [actor.state.booking(b) is not None for b in ids] == [True, True, False, False]
        booking = Book("AB-bredisnew", "p9", "AB-c1-r1", "child_checkup", FIRST_DAY, CELL_0900 + 2)
        await actor.submit(booking)
        assert actor.position == damaged  # positions continue where the good entries end
    finally:
        await stopped(actor)
    assert tandtid("journal", "check", "--redis", url, "--region", "AB").returncode == 0


async def test_a_damaged_entry_the_snapshot_covers_is_removed_and_nothing_else(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    ids = await booked(url, snapshot=True)
    client = redis.Redis.from_url(url)
    last = int(client.get(region_key("AB", "position")) or 0)
    damage_entry(url, last - 2)
    actor = await recovered(url)
    try:
        assert actor.ready  # recovery starts at the snapshot and never reads it
    finally:
        await stopped(actor)
    done = tandtid("journal", "repair", "--redis", url, "--region", "AB")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [f["position"] for f in report["lost"]] == [last - 2]
    assert int(client.get(region_key("AB", "position")) or 0) == last
    assert len(client.xrange(region_key("AB", "journal"))) == report["size"] - 1
    client.close()
    actor = await recovered(url)
    try:
        assert actor.ready and all(actor.state.booking(b) is not None for b in ids)
    finally:
        await stopped(actor)


async def test_a_damaged_snapshot_is_reported_and_repair_sets_it_aside(redis_server: RedisServer) -> None:
    url = redis_server.url
    ids = await booked(url, snapshot=True)
    client = redis.Redis.from_url(url)
    version = client.hget(region_key("AB", "snapshot"), "version")
    assert version is not None
    chunks = region_key("AB", f"snapshot:{version.decode()}")
    chunk = bytearray(client.lindex(chunks, 0))
    chunk[len(chunk) // 2] ^= 0x01
    client.lset(chunks, 0, bytes(chunk))

    done = tandtid("journal", "check", "--redis", url, "--region", "AB")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "damaged" and "CRC-32" in report["problem"]
    assert [s["position"] for s in report["snapshots"]] == [None] and report["lost"] == []

    done = tandtid("journal", "repair", "--redis", url, "--region", "AB")
    assert done.returncode == 0, done.stderr
    (aside,) = json.loads(done.stdout)["set_aside"]
    assert client.hget(aside, "version") == version and client.exists(region_key("AB", "snapshot")) == 0
    client.close()
    actor = await recovered(url)  # from the stream's start: nothing was trimmed
    try:
        assert actor.ready and all(actor.state.booking(b) is not None for b in ids)
    finally:
        await stopped(actor)
    assert tandtid("journal", "check", "--redis", url, "--region", "AB").returncode == 0
