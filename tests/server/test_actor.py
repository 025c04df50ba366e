"""Integration tests: the region actor over real journals (files; a real redis-server).

Group commit, the single-writer guarantee under 1,000 concurrent bookings, acknowledgement
only after durability, a real SIGKILL of a booking process, Redis killed and restarted
mid-load, ticks through the journal, snapshots + replay.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.cells import Cell
from engine.commands import Book, PlaceHold, Tick
from engine.errors import RefusalCode, Refused
from engine.events import Booked, HoldExpired, from_record
from persistence.codec import unpack_events
from persistence.file_journal import FileJournal, encode_frame
from persistence.journal import Journal
from server.regions.actor import Committed, RegionActor, Reloaded, Unavailable
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]


async def journal_events(journal: Journal, region: str = "AB") -> list:
    return [from_record(r) async for e in journal.read(region) for r in unpack_events(e.payload)]


@pytest.fixture
async def file_journal(tmp_path: Path) -> AsyncIterator[FileJournal]:
    journal = FileJournal(tmp_path / "data")
    await journal.open()
    yield journal
    await journal.close()


async def started_actor(journal: Journal, clock=lambda: NOW, **kw) -> RegionActor:
    actor = RegionActor("AB", journal, clock=clock, retry_backoff_s=(0.05, 0.2), **kw)
    await actor.start()
    return actor


async def test_thousand_concurrent_bookings_of_one_time_exactly_one_wins(file_journal: FileJournal) -> None:
    actor = await started_actor(file_journal)
    for command in setup_commands():
        await actor.submit(command)
    results = await asyncio.gather(
        *(
            actor.submit(Book(f"AB-b{i}", f"p{i}", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900))
            for i in range(1000)
        ),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, list)]
    refusals = [r for r in results if isinstance(r, Refused)]
    assert len(wins) == 1 and len(refusals) == 999
    assert {r.code for r in refusals} == {RefusalCode.SLOT_TAKEN}
    booked = [e for e in await journal_events(file_journal) if isinstance(e, Booked)]
    assert len(booked) == 1
    assert (booked[0].resource, booked[0].day, booked[0].cell) == ("AB-c1-r1", FIRST_DAY, CELL_0900)
    # group commit: far fewer journal entries than commands
    assert await file_journal.last_position("AB") < 100
    await actor.stop()


async def test_listeners_hear_only_durable_batches_in_order(file_journal: FileJournal) -> None:
    heard: list[Committed | Reloaded] = []
    actor = await started_actor(file_journal, listeners=[heard.append])
    for command in setup_commands():
        await actor.submit(command)
    events = await actor.submit(Book("AB-b1", "p1", "AB-c1-r1", "filling", FIRST_DAY, CELL_0900))
    last = heard[-1]
    assert isinstance(last, Committed) and last.events == events
    assert last.position == await file_journal.last_position("AB")
    assert ("AB-c1", "AB-c1-r1", FIRST_DAY, CELL_0900, 4, int(Cell.BOOKED)) in last.changes
    state = actor.state
    assert last.counts() == [
        (
            "AB-c1",
            FIRST_DAY,
            state.free_count("AB-c1", FIRST_DAY),
            state.bookable_starts("AB-c1", FIRST_DAY, NOW),
        )
    ]
    positions = [c.position for c in heard if isinstance(c, Committed)]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    await actor.stop()


async def test_restart_recovers_from_snapshot_and_tail(file_journal: FileJournal, tmp_path: Path) -> None:
    actor = await started_actor(file_journal)
    for command in setup_commands(days=3):
        await actor.submit(command)
    for i in range(10):
        await actor.submit(
            Book(f"AB-b{i}", f"p{i}", "AB-c1-r1", "child_checkup", FIRST_DAY, CELL_0900 - 4 + i)
        )
    await actor.snapshot_now()
    for i in range(10, 15):
        await actor.submit(
            Book(f"AB-b{i}", f"p{i}", "AB-c1-r2", "child_checkup", FIRST_DAY, CELL_0900 - 4 + i)
        )
    before = actor.state.to_snapshot()
    await actor.stop()
    await file_journal.close()

    reopened = FileJournal(tmp_path / "data")
    await reopened.open()
    snapshot = await reopened.load_snapshot("AB")
    assert snapshot is not None and snapshot.position < await reopened.last_position("AB")
    again = await started_actor(reopened)
    assert again.state.to_snapshot() == before
    assert again.state.booking_count() == 15
    await again.stop()
    await reopened.close()


async def test_holds_expire_through_the_journal(file_journal: FileJournal) -> None:
    clock = [float(NOW)]
    actor = await started_actor(file_journal, clock=lambda: clock[0], tick_interval_s=0.02)
    for command in setup_commands():
        await actor.submit(command)
    await actor.submit(PlaceHold("AB-h1", "p1", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900, ttl_s=60))
    row = await actor.query(lambda s: s.row("AB-c1-r1", FIRST_DAY))
    assert row[CELL_0900] == Cell.HELD
    clock[0] += 61
    await eventually(lambda: actor.query(lambda s: "AB-h1" not in s.holds), what="the hold to expire")
    row = await actor.query(lambda s: s.row("AB-c1-r1", FIRST_DAY))
    assert row[CELL_0900] == Cell.FREE
    assert any(
        isinstance(e, HoldExpired) and e.hold_id == "AB-h1" for e in await journal_events(file_journal)
    )
    # refused commands and idle ticks leave no trace in the journal
    before = await file_journal.last_position("AB")
    with pytest.raises(Refused):
        await actor.submit(Book("AB-bX", "p9", "AB-c1-r1", "checkup", FIRST_DAY - 30, CELL_0900))
    await actor.submit(Tick())
    assert await file_journal.last_position("AB") == before
    await actor.stop()


def _read_acks(proc: subprocess.Popen[str], want: int, timeout_s: float = 60) -> list[str]:
    import select
    import time

    acks: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while len(acks) < want and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("ACK "):
                acks.append(line[4:].strip())
    return acks


def _book_in_child_then_sigkill(data: Path, want: int) -> list[str]:
    """Run the booking child, SIGKILL it once ``want`` bookings were acknowledged; all its ACKs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.booking_child", str(data)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )
    try:
        acks = _read_acks(proc, want=want)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        acks += [line[4:].strip() for line in proc.stdout.read().splitlines() if line.startswith("ACK ")]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    return acks


async def test_sigkill_mid_load_loses_no_acknowledged_booking(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acks = await asyncio.to_thread(_book_in_child_then_sigkill, data, 400)
    assert len(acks) >= 400, "the child should have been killed mid-load"
    # A power cut mid-write leaves a torn frame (a prefix of the next one): simulate one on top
    # of the SIGKILL.
    log = data / "journal" / "AB.log"
    reader = FileJournal(data, read_only=True)
    await reader.open()
    next_position = await reader.last_position("AB") + 1
    await reader.close()
    with log.open("ab") as f:
        f.write(encode_frame(next_position, 1, b"a batch whose write never finished" * 4)[:60])
    size_with_tear = log.stat().st_size

    journal = FileJournal(data)
    await journal.open()
    assert log.stat().st_size < size_with_tear, "the torn tail must be cut on open"
    actor = await started_actor(journal)
    missing = [b for b in acks if actor.state.booking(b) is None]
    assert missing == []
    assert all(actor.state.booking(b).status == "booked" for b in acks)
    await actor.stop()
    await journal.close()


@pytest.mark.redis
async def test_redis_killed_and_restarted_mid_load(redis_server) -> None:
    from persistence.redis_journal import RedisStreamJournal

    journal = RedisStreamJournal(redis_server.url)
    await journal.open()
    reloaded: list[Reloaded] = []
    actor = await started_actor(
        journal, listeners=[lambda i: reloaded.append(i) if isinstance(i, Reloaded) else None]
    )
    for command in setup_commands(clinics=5, resources=3, days=5):
        await actor.submit(command)

    acked: list[str] = []
    during_outage: list[tuple[str, BaseException | None]] = []
    counter = iter(range(1_000_000))
    slots = [
        (f"AB-c{c}-r{r}", day, cell)
        for day in range(FIRST_DAY, FIRST_DAY + 5)
        for cell in range(CELL_0900 - 4, CELL_0900 + 12)
        for c in range(1, 6)
        for r in range(1, 4)
    ]

    async def book(slot: tuple[str, int, int]) -> tuple[str, BaseException | None]:
        n = next(counter)
        booking_id = f"AB-b{n}"
        try:
            await actor.submit(Book(booking_id, f"p{n}", slot[0], "child_checkup", slot[1], slot[2]))
        except (Unavailable, Refused) as exc:
            return booking_id, exc
        acked.append(booking_id)
        return booking_id, None

    await asyncio.gather(*(book(s) for s in slots[:300]))
    assert len(acked) == 300
    redis_server.kill()
    # the in-flight batch at the moment of the kill may or may not have reached the AOF;
    # everything submitted after the failure is observed must be refused and never appear.
    await asyncio.gather(*(book(s) for s in slots[300:400]))
    await eventually(lambda: not actor.ready, what="the actor to notice the outage")
    during_outage = await asyncio.gather(*(book(s) for s in slots[400:500]))
    assert all(isinstance(exc, Unavailable) for _, exc in during_outage)
    # nothing unacknowledged is visible: the actor holds no state while recovering
    assert not any(actor.state.booking(b) is not None for b, _ in during_outage)

    redis_server.restart()
    await eventually(lambda: actor.ready, what="the actor to recover by itself when Redis returns")
    assert reloaded, "subscribers must be told to resync"
    results = await asyncio.gather(*(book(s) for s in slots[500:700]))
    assert all(exc is None or isinstance(exc, Refused) for _, exc in results)

    fresh = RegionActor("AB", journal, clock=lambda: NOW)
    await fresh.start()
    assert [b for b in acked if fresh.state.booking(b) is None] == []
    assert not any(fresh.state.booking(b) is not None for b, _ in during_outage)
    cells: dict[tuple[str, int, int], str] = {}
    for booking in fresh.state.all_bookings():
        for cell in range(booking.cell, booking.cell + booking.cells):
            key = (booking.resource, booking.day, cell)
            assert key not in cells, "a cell belongs to two bookings"
            cells[key] = booking.id
    await fresh.stop()
    await actor.stop()
    await journal.close()


async def test_a_wait_for_a_position_ends_when_the_actor_applies_it(file_journal: FileJournal) -> None:
    """``applied`` (what a forwarding node's read-your-writes wait stands on) is woken by the
    append that reaches the position, not before it, and a wait past the last one times out."""
    actor = await started_actor(file_journal)
    for command in setup_commands():
        await actor.submit(command)
    now = actor.position
    await asyncio.wait_for(actor.applied(now), 1)  # already there: at once
    next_one = asyncio.create_task(actor.applied(now + 1))
    far = asyncio.create_task(actor.applied(now + 2))
    await asyncio.sleep(0.05)
    assert not next_one.done() and not far.done()
    await actor.submit(Book("AB-b1", "p1", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900))
    await asyncio.wait_for(next_one, 5)
    assert actor.position == now + 1 and not far.done()
    far.cancel()
    with pytest.raises(asyncio.CancelledError):
        await far
    assert actor._applied_waiters == []  # a wait given up is forgotten
    await actor.stop()
