"""RedisStreamJournal-specific tests (integration, a real redis-server per test): crashes,
restarts, key layout, one round trip per append, MINID trimming, snapshots in chunks."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import AsyncIterator

import pytest
import redis

from persistence.journal import Entry, JournalUnavailable, Snapshot
from persistence.redis_journal import SNAPSHOT_CHUNK, SNAPSHOT_WRITING_MS, RedisStreamJournal, region_key
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.redis

FAIL_FAST_S = 5.0  # the bound on "quickly": socket timeouts are 3 s, a dead server refuses at once


@pytest.fixture
async def journal(redis_server: RedisServer) -> AsyncIterator[RedisStreamJournal]:
    journal = RedisStreamJournal(redis_server.url)
    await journal.open()
    yield journal
    await journal.close()


async def entries(journal: RedisStreamJournal, after: int = 0) -> list[Entry]:
    return [entry async for entry in journal.read("AB", after)]


async def test_killed_server_fails_fast_and_restart_keeps_acknowledged_entries(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    acknowledged = [await journal.append("AB", 1, b"batch-%d" % i) for i in range(50)]
    assert acknowledged == list(range(1, 51))
    redis_server.kill()

    started = time.monotonic()
    with pytest.raises(JournalUnavailable):
        await journal.append("AB", 1, b"lost")
    with pytest.raises(JournalUnavailable):
        await journal.append("AB", 1, b"lost again")
    assert time.monotonic() - started < FAIL_FAST_S
    assert await journal.ping() is False
    with pytest.raises(JournalUnavailable):
        await entries(journal)

    redis_server.start()  # same port, same data dir: AOF reload
    assert await journal.append("AB", 1, b"after restart") == 51  # same journal object
    assert await journal.ping() is True
    got = await entries(journal)
    assert [e.position for e in got] == list(range(1, 52))
    assert [e.payload for e in got[:50]] == [b"batch-%d" % i for i in range(50)]


async def test_open_against_a_dead_server_is_unavailable(redis_server: RedisServer) -> None:
    redis_server.kill()
    journal = RedisStreamJournal(redis_server.url)
    with pytest.raises(JournalUnavailable):
        await journal.open()


async def test_keys_carry_the_region_hash_tag(redis_server: RedisServer, journal: RedisStreamJournal) -> None:
    await journal.append("AB", 2, b"x")
    await journal.save_snapshot("AB", Snapshot(1, b"s"))
    client = redis.Redis.from_url(redis_server.url)
    try:
        keys = sorted(k.decode() for k in client.keys("*"))
        version = client.hget(region_key("AB", "snapshot"), "version")
        assert version is not None
        assert keys == [
            "tandtid:{AB}:epoch",
            "tandtid:{AB}:journal",
            "tandtid:{AB}:position",
            "tandtid:{AB}:snapshot",
            f"tandtid:{{AB}}:snapshot:{version.decode()}",
        ]
        ((stream_id, fields),) = client.xrange(region_key("AB", "journal"))
        assert fields == {b"position": b"1", b"epoch": b"2", b"payload": b"x"}
        assert client.hget(region_key("AB", "snapshot"), "stream_id") == stream_id
    finally:
        client.close()


async def test_one_append_is_one_command_on_the_server(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    await journal.append("AB", 1, b"warm-up")  # the script is loaded by open()
    client = redis.Redis.from_url(redis_server.url)
    try:
        before = client.info("commandstats")
        await journal.append("AB", 1, b"one")
        after = client.info("commandstats")
    finally:
        client.close()
    calls = {
        name.removeprefix("cmdstat_"): after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
        for name in after
    }
    calls = {name: n for name, n in calls.items() if n}
    # One EVALSHA from the client; GET, INCR, XADD ran inside it; INFO is the measurement.
    assert calls == {"evalsha": 1, "get": 1, "incr": 1, "xadd": 1, "info": 1}


async def test_appends_of_several_regions_in_one_instant_share_one_round_trip(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    await journal.append("AB", 1, b"warm-up")
    rounds = journal.rounds
    regions = ["AB", "C", "M", "O", "Z"]
    positions = await asyncio.gather(*(journal.append(r, 1, b"together") for r in regions))
    assert positions == [2, 1, 1, 1, 1]
    assert journal.rounds == rounds + 1  # one pipelined round trip for the five regions
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.info("commandstats")["cmdstat_evalsha"]["calls"] == 6  # no MULTI, no retries
    finally:
        client.close()


async def test_script_flushed_on_the_server_is_reloaded(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    await journal.append("AB", 1, b"a")
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.script_flush()
    finally:
        client.close()
    assert await journal.append("AB", 1, b"b") == 2
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.script_flush()
    finally:
        client.close()
    # several regions refused with NOSCRIPT in one round: each is written exactly once
    assert await asyncio.gather(*(journal.append(r, 1, b"c") for r in ["AB", "C", "M"])) == [3, 1, 1]
    assert [e.payload for e in await entries(journal)] == [b"a", b"b", b"c"]


async def test_snapshot_trims_only_history_older_than_snapshot_and_retention(
    redis_server: RedisServer,
) -> None:
    journal = RedisStreamJournal(redis_server.url, retention_s=0)
    await journal.open()
    try:
        for i in range(1, 11):
            await journal.append("AB", 1, b"e%d" % i)
        await journal.save_snapshot("AB", Snapshot(6, b"state-at-6"))
        remaining = [e.position async for e in journal.read("AB")]
        assert remaining == [6, 7, 8, 9, 10]  # everything newer than the snapshot is kept
        assert [e.position async for e in journal.read("AB", 6)] == [7, 8, 9, 10]
        assert await journal.last_position("AB") == 10
    finally:
        await journal.close()


async def test_snapshot_within_retention_trims_nothing(journal: RedisStreamJournal) -> None:
    for i in range(1, 6):
        await journal.append("AB", 1, b"e%d" % i)
    await journal.save_snapshot("AB", Snapshot(4, b"state"))
    assert [e.position for e in await entries(journal)] == [1, 2, 3, 4, 5]


async def test_read_after_snapshot_from_a_fresh_object(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    for i in range(1, 21):
        await journal.append("AB", 1, b"e%d" % i)
    await journal.save_snapshot("AB", Snapshot(12, b"state"))
    fresh = RedisStreamJournal(redis_server.url)
    await fresh.open()
    try:
        # Starts from the snapshot's stream id (no position cache in this object).
        assert [e.position async for e in fresh.read("AB", 12)] == list(range(13, 21))
        assert [e.position async for e in fresh.read("AB", 15)] == list(range(16, 21))
        assert [e.position async for e in fresh.read("AB", 3)] == list(range(4, 21))
    finally:
        await fresh.close()


async def test_read_pages_through_a_long_stream(journal: RedisStreamJournal) -> None:
    for i in range(1, 351):
        await journal.append("AB", 1, b"e%d" % i)
    assert [e.position for e in await entries(journal)] == list(range(1, 351))
    assert [e.position for e in await entries(journal, 150)] == list(range(151, 351))
    assert [e.payload for e in await entries(journal, 348)] == [b"e349", b"e350"]


async def _blocked_clients(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("clients")["blocked_clients"])
    finally:
        client.close()


async def test_tail_receives_an_entry_appended_while_it_blocks_in_xread(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    """The XREAD path itself (redis-py 8 answers it as a RESP3 map, redis-py 5 as a list)."""
    await journal.append("AB", 1, b"before")
    tail = journal.tail("AB", after=1)
    waiting = asyncio.ensure_future(anext(tail))
    try:
        deadline = time.monotonic() + FAIL_FAST_S
        while await _blocked_clients(redis_server.url) < 1:  # the tail sits in XREAD BLOCK
            assert time.monotonic() < deadline, "the tail never blocked in XREAD"
            await asyncio.sleep(0.01)
        await journal.append("AB", 1, b"while blocked")
        assert await asyncio.wait_for(waiting, FAIL_FAST_S) == Entry(2, 1, b"while blocked")
        following = asyncio.ensure_future(anext(tail))
        await journal.append("AB", 1, b"next")
        assert await asyncio.wait_for(following, FAIL_FAST_S) == Entry(3, 1, b"next")
    finally:
        waiting.cancel()
        await tail.aclose()


async def test_redis_out_of_memory_is_a_write_failure_until_writes_work_again(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    """Redis at maxmemory (noeviction) refuses every append with OOM: the journal says so
    (write_failure, for /ready) and ping's probe write notices when there is room again."""
    assert await journal.append("AB", 1, b"before") == 1
    admin = redis.Redis.from_url(redis_server.url)
    try:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        with pytest.raises(JournalUnavailable):
            await journal.append("AB", 1, b"refused")
        assert (journal.write_failure() or "").startswith("OOM")
        assert await journal.ping() is True and journal.write_failure() is not None
        admin.config_set("maxmemory", 0)
        assert await journal.ping() is True and journal.write_failure() is None
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
    assert await journal.append("AB", 1, b"after") == 2
    assert [e.payload for e in await entries(journal)] == [b"before", b"after"]


def counted(chunks: float) -> bytes:
    """A payload of ``chunks`` snapshot chunks whose every 4 bytes differ (chunks out of order
    or swapped would not compare equal)."""
    return array("I", range(int(chunks * SNAPSHOT_CHUNK) // 4)).tobytes()


def snapshot_keys(client: redis.Redis) -> list[bytes]:
    return sorted(client.keys(region_key("AB", "snapshot:*")))


def commands_made(client: redis.Redis, before: dict[str, dict[str, int]]) -> dict[str, int]:
    after = client.info("commandstats")
    calls = {
        name.removeprefix("cmdstat_"): after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
        for name in after
    }
    return {name: n for name, n in calls.items() if n}


async def test_a_snapshot_is_written_and_read_one_bounded_chunk_per_command(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    """A 96 MB HSET held every other client's commands for up to 1.3 s (appendfsync always):
    each command now carries at most SNAPSHOT_CHUNK bytes of it."""
    payload = counted(3.5)
    await journal.append("AB", 1, b"x")
    client = redis.Redis.from_url(redis_server.url)
    try:
        before = client.info("commandstats")
        await journal.save_snapshot("AB", Snapshot(1, payload))
        saved = commands_made(client, before)
        assert saved["rpush"] == 4 and saved["eval"] == 1
        (key,) = snapshot_keys(client)
        chunks = client.lrange(key, 0, -1)
        assert [len(c) for c in chunks] == [SNAPSHOT_CHUNK] * 3 + [SNAPSHOT_CHUNK // 2]
        assert client.pttl(key) == -1  # switched to: kept for good

        before = client.info("commandstats")
        assert await journal.load_snapshot("AB") == Snapshot(1, payload)
        assert commands_made(client, before)["lindex"] == 4

        await journal.save_snapshot("AB", Snapshot(1, b"smaller"))
        assert snapshot_keys(client) != [key] and len(snapshot_keys(client)) == 1  # the old chunks went
    finally:
        client.close()
    assert await journal.load_snapshot("AB") == Snapshot(1, b"smaller")
    assert journal.problems() == {}


async def test_a_save_that_fails_halfway_leaves_the_previous_snapshot(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    """Redis reaches maxmemory after a few chunks (as a crash could stop a save): the hash still
    points at the previous snapshot, which loads whole; the chunks written expire."""
    await journal.append("AB", 1, b"x")
    await journal.save_snapshot("AB", Snapshot(1, b"previous"))
    client = redis.Redis.from_url(redis_server.url)
    try:
        (previous,) = snapshot_keys(client)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 3 * SNAPSHOT_CHUNK)
        with pytest.raises(JournalUnavailable):
            await journal.save_snapshot("AB", Snapshot(1, counted(8)))
        client.config_set("maxmemory", 0)
        (half,) = [key for key in snapshot_keys(client) if key != previous]
        assert 1 <= client.llen(half) < 8
        assert 0 < client.pttl(half) <= SNAPSHOT_WRITING_MS
    finally:
        client.config_set("maxmemory", 0)
        client.close()
    fresh = RedisStreamJournal(redis_server.url)
    await fresh.open()
    try:
        assert await fresh.load_snapshot("AB") == Snapshot(1, b"previous")
        assert fresh.problems() == {}
    finally:
        await fresh.close()
    await journal.save_snapshot("AB", Snapshot(1, counted(2)))
    assert await journal.load_snapshot("AB") == Snapshot(1, counted(2))


async def test_a_snapshot_in_the_older_one_field_format_still_loads(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    for i in range(1, 6):
        await journal.append("AB", 1, b"e%d" % i)
    client = redis.Redis.from_url(redis_server.url)
    try:
        stream_id = client.xrange(region_key("AB", "journal"))[2][0]
        old_format = {"position": 3, "stream_id": stream_id, "payload": b"state-at-3"}
        client.hset(region_key("AB", "snapshot"), mapping=old_format)  # as tandtid wrote it before chunks
        fresh = RedisStreamJournal(redis_server.url)
        await fresh.open()
        try:
            assert await fresh.load_snapshot("AB") == Snapshot(3, b"state-at-3")
            assert [e.position async for e in fresh.read("AB", 3)] == [4, 5]
            await fresh.save_snapshot("AB", Snapshot(5, counted(1.5)))
            assert await fresh.load_snapshot("AB") == Snapshot(5, counted(1.5))
        finally:
            await fresh.close()
        assert client.hget(region_key("AB", "snapshot"), "payload") is None  # replaced whole
    finally:
        client.close()


async def test_a_missing_or_damaged_chunk_is_reported_and_never_loaded(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    await journal.append("AB", 1, b"x")
    await journal.save_snapshot("AB", Snapshot(1, counted(3)))
    client = redis.Redis.from_url(redis_server.url)
    fresh = RedisStreamJournal(redis_server.url)
    await fresh.open()
    try:
        (key,) = snapshot_keys(client)
        client.lset(key, 1, counted(1)[::-1])  # same length, other bytes
        assert await fresh.load_snapshot("AB") is None
        (problem,) = fresh.problems()["AB"]
        assert "snapshot at position 1 is damaged" in problem and "CRC-32" in problem

        client.rpop(key)
        assert await fresh.load_snapshot("AB") is None
        assert "chunk 3 of 3 is missing" in fresh.problems()["AB"][1]
    finally:
        await fresh.close()
        client.close()


async def test_a_load_while_snapshots_replace_each_other_gets_one_whole_snapshot(
    redis_server: RedisServer, journal: RedisStreamJournal
) -> None:
    """Another node reads while the owner saves: a load whose chunks were unlinked by the switch
    to a newer snapshot starts again and returns that one; never a mix, never 'damaged'."""
    await journal.append("AB", 1, b"x")
    big, small = Snapshot(1, counted(6)), Snapshot(1, b"small")
    reader = RedisStreamJournal(redis_server.url)
    await reader.open()
    try:
        for _ in range(10):
            await journal.save_snapshot("AB", big)
            loaded, _saved = await asyncio.gather(
                reader.load_snapshot("AB"), journal.save_snapshot("AB", small)
            )
            assert loaded in (big, small)
        assert reader.problems() == {}
    finally:
        await reader.close()
