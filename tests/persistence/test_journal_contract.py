"""Contract tests (integration): every Journal implementation passes this one suite.

The ``journal`` fixture is parametrised over "file" (a FileJournal in a temp dir), "redis"
(a RedisStreamJournal on a real redis-server started for the test), "redis-cluster" (the same
on a real three-master Redis Cluster, one per session, emptied per test) and "memory" (the
MemoryJournal the actor's failure-path tests inject faults into). ``reopen`` gives a fresh
journal object over the same storage, the way a restarted process sees it.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from persistence.file_journal import FileJournal
from persistence.journal import Entry, Journal, Snapshot, StaleEpoch
from persistence.memory_journal import MemoryJournal, MemoryStore
from persistence.redis_journal import RedisStreamJournal
from tests.support.redis_cluster import RedisCluster3
from tests.support.redis_server import RedisServer

Reopen = Callable[[], Awaitable[Journal]]
WAIT_S = 5.0  # generous bound for "arrives at all"; never used to assert speed


@pytest.fixture(
    params=[
        "file",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
        "memory",
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Journal, Reopen]]:
    opened: list[Journal] = []
    server: RedisServer | None = None

    if request.param == "file":

        def make() -> Journal:
            return FileJournal(tmp_path / "data")
    elif request.param == "memory":
        store = MemoryStore()

        def make() -> Journal:
            return MemoryJournal(store)
    elif request.param == "redis-cluster":
        cluster: RedisCluster3 = request.getfixturevalue("redis_cluster")
        cluster.flush()
        url = cluster.url

        def make() -> Journal:
            return RedisStreamJournal(url)
    else:
        server = RedisServer().start()
        url = server.url

        def make() -> Journal:
            return RedisStreamJournal(url)

    async def reopen() -> Journal:
        journal = make()
        await journal.open()
        opened.append(journal)
        return journal

    try:
        yield await reopen(), reopen
    finally:
        for journal in opened:
            await journal.close()
        if server is not None:
            server.stop()


@pytest.fixture
def journal(backend: tuple[Journal, Reopen]) -> Journal:
    return backend[0]


async def collect(entries: AsyncIterator[Entry]) -> list[Entry]:
    return [entry async for entry in entries]


async def test_append_returns_consecutive_positions(journal: Journal) -> None:
    assert await journal.last_position("AB") == 0
    positions = [await journal.append("AB", 1, b"batch-%d" % i) for i in range(5)]
    assert positions == [1, 2, 3, 4, 5]
    assert await journal.last_position("AB") == 5


async def test_read_after_n(journal: Journal) -> None:
    for i in range(1, 8):
        await journal.append("AB", 1, b"p%d" % i)
    entries = await collect(journal.read("AB", 4))
    assert entries == [Entry(5, 1, b"p5"), Entry(6, 1, b"p6"), Entry(7, 1, b"p7")]
    assert [e.position for e in await collect(journal.read("AB"))] == list(range(1, 8))
    assert await collect(journal.read("AB", 7)) == []


async def test_read_of_an_empty_region(journal: Journal) -> None:
    assert await collect(journal.read("Z")) == []
    assert await collect(journal.read("Z", 3)) == []
    assert await journal.last_position("Z") == 0
    assert await journal.load_snapshot("Z") is None


async def test_payload_bytes_roundtrip_exactly(journal: Journal) -> None:
    payloads = [b"", bytes(range(256)), b"\x00" * 70_000]
    for payload in payloads:
        await journal.append("AB", 1, payload)
    assert [e.payload for e in await collect(journal.read("AB"))] == payloads


async def test_regions_are_independent(journal: Journal) -> None:
    assert await journal.append("AB", 1, b"ab1") == 1
    assert await journal.append("O", 1, b"o1") == 1
    assert await journal.append("AB", 1, b"ab2") == 2
    assert await journal.append("M", 7, b"m1") == 1
    assert [e.payload for e in await collect(journal.read("AB"))] == [b"ab1", b"ab2"]
    assert [e.payload for e in await collect(journal.read("O"))] == [b"o1"]
    # An epoch in one region does not fence another.
    assert await journal.append("O", 1, b"o2") == 2


async def test_tail_receives_later_appends(journal: Journal) -> None:
    await journal.append("AB", 1, b"old")
    received: list[Entry] = []
    got_three = asyncio.Event()

    async def follow() -> None:
        async for entry in journal.tail("AB", after=0):
            received.append(entry)
            if len(received) == 3:
                got_three.set()
                return

    task = asyncio.create_task(follow())
    try:
        await journal.append("AB", 1, b"new1")
        await journal.append("AB", 1, b"new2")
        await asyncio.wait_for(got_three.wait(), WAIT_S)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [e.payload for e in received] == [b"old", b"new1", b"new2"]
    assert [e.position for e in received] == [1, 2, 3]


async def test_tail_after_the_end_waits_for_the_next_entry(journal: Journal) -> None:
    for i in range(3):
        await journal.append("AB", 1, b"x%d" % i)
    first = asyncio.ensure_future(anext(journal.tail("AB", after=3)))
    try:
        await journal.append("AB", 1, b"fourth")
        entry = await asyncio.wait_for(first, WAIT_S)
    finally:
        first.cancel()
    assert entry == Entry(4, 1, b"fourth")


async def test_snapshot_roundtrip_and_atomic_replacement(journal: Journal) -> None:
    for i in range(4):
        await journal.append("AB", 1, b"e%d" % i)
    await journal.save_snapshot("AB", Snapshot(2, b"state-at-2"))
    assert await journal.load_snapshot("AB") == Snapshot(2, b"state-at-2")
    await journal.save_snapshot("AB", Snapshot(4, b"state-at-4" * 1000))
    assert await journal.load_snapshot("AB") == Snapshot(4, b"state-at-4" * 1000)
    assert await journal.load_snapshot("O") is None
    # Recovery = snapshot + later entries.
    await journal.append("AB", 1, b"e4")
    assert [e.position for e in await collect(journal.read("AB", 4))] == [5]


async def test_a_snapshot_older_than_the_stored_one_is_dropped(journal: Journal) -> None:
    """A deposed owner's save that lands after the new owner's must not take the region back."""
    for i in range(6):
        await journal.append("AB", 1, b"e%d" % i)
    await journal.save_snapshot("AB", Snapshot(5, b"state-at-5"))
    await journal.save_snapshot("AB", Snapshot(3, b"state-at-3"))
    assert await journal.load_snapshot("AB") == Snapshot(5, b"state-at-5")
    await journal.save_snapshot("AB", Snapshot(6, b"state-at-6"))
    assert await journal.load_snapshot("AB") == Snapshot(6, b"state-at-6")
    assert journal.problems() == {}


async def test_a_snapshot_of_megabytes_round_trips_whole(journal: Journal) -> None:
    """Redis keeps it in chunks (persistence.redis_journal): every byte back, in order."""
    await journal.append("AB", 1, b"e")
    big = array("I", range(700_001)).tobytes()  # 2.8 MB, every 4 bytes different
    await journal.save_snapshot("AB", Snapshot(1, big))
    assert await journal.load_snapshot("AB") == Snapshot(1, big)
    await journal.save_snapshot("AB", Snapshot(1, big[::-1]))
    assert await journal.load_snapshot("AB") == Snapshot(1, big[::-1])
    await journal.save_snapshot("AB", Snapshot(1, b""))
    assert await journal.load_snapshot("AB") == Snapshot(1, b"")
    assert journal.problems() == {}


async def test_stale_epoch_refused_higher_accepted(journal: Journal) -> None:
    assert await journal.append("AB", 3, b"a") == 1
    with pytest.raises(StaleEpoch):
        await journal.append("AB", 2, b"stale")
    assert await journal.append("AB", 3, b"same epoch") == 2
    assert await journal.append("AB", 5, b"new owner") == 3
    with pytest.raises(StaleEpoch):
        await journal.append("AB", 3, b"old owner")
    assert await journal.last_position("AB") == 3
    assert [(e.position, e.epoch) for e in await collect(journal.read("AB"))] == [(1, 3), (2, 3), (3, 5)]


async def test_reopen_keeps_everything(backend: tuple[Journal, Reopen]) -> None:
    journal, reopen = backend
    for i in range(3):
        await journal.append("AB", 4, b"ab%d" % i)
    await journal.append("O", 2, b"o0")
    await journal.save_snapshot("AB", Snapshot(2, b"snap"))
    await journal.close()

    again = await reopen()
    assert await again.last_position("AB") == 3
    assert await again.last_position("O") == 1
    assert await again.load_snapshot("AB") == Snapshot(2, b"snap")
    assert [e.payload for e in await collect(again.read("AB"))] == [b"ab0", b"ab1", b"ab2"]
    with pytest.raises(StaleEpoch):
        await again.append("AB", 3, b"fenced across restart")
    assert await again.append("AB", 4, b"ab3") == 4


async def test_concurrent_appends_get_distinct_consecutive_positions(journal: Journal) -> None:
    positions = await asyncio.gather(*(journal.append("AB", 1, b"c%d" % i) for i in range(40)))
    assert sorted(positions) == list(range(1, 41))
    entries = await collect(journal.read("AB"))
    assert [e.position for e in entries] == list(range(1, 41))
    by_position = {p: b"c%d" % i for i, p in enumerate(positions)}
    assert all(by_position[e.position] == e.payload for e in entries)


REGIONS = [
    "AB", "C", "D", "E", "F", "G", "H", "I", "K", "M", "N",
    "O", "S", "T", "U", "W", "X", "Y", "Z", "AC", "BD",
]  # fmt: skip


async def test_concurrent_appends_from_many_regions(backend: tuple[Journal, Reopen]) -> None:
    """All 21 regions appending in the same instants (group commit shares their durable
    writes): each region keeps its own consecutive positions, payloads and epochs, and a
    restarted process reads exactly the same."""
    journal, reopen = backend

    async def region_writer(index: int, region: str) -> list[int]:
        return [await journal.append(region, index + 1, b"%s-%d" % (region.encode(), i)) for i in range(12)]

    positions = await asyncio.gather(*(region_writer(i, r) for i, r in enumerate(REGIONS)))
    assert positions == [list(range(1, 13))] * len(REGIONS)
    # A fenced writer in one region fails alone while the others in the same instant are written.
    results = await asyncio.gather(
        *(journal.append(r, 0 if r == "M" else i + 1, b"last") for i, r in enumerate(REGIONS)),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [StaleEpoch if r == "M" else int for r in REGIONS]
    await journal.close()

    again = await reopen()
    for index, region in enumerate(REGIONS):
        entries = await collect(again.read(region))
        expected = [b"%s-%d" % (region.encode(), i) for i in range(12)] + ([] if region == "M" else [b"last"])
        assert [e.payload for e in entries] == expected, region
        assert [e.position for e in entries] == list(range(1, len(expected) + 1))
        assert {e.epoch for e in entries} == {index + 1}
        assert await again.last_position(region) == len(expected)


async def test_ping(journal: Journal) -> None:
    assert await journal.ping() is True
