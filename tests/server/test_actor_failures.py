"""Unit tests (no files, no network): every failure path of the region actor, over a
MemoryJournal that fails on demand. Each runs in milliseconds.

The rule under test (ARCHITECTURE.md, rule 3): when anything goes wrong in a turn, the
batch is answered 503, the in-memory state is dropped and reloaded from snapshot + journal,
so the state never holds a change the journal does not, and an acknowledged change is
never lost. A region that cannot be recovered says so (FAILED) instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from engine.commands import Book, Command, Tick
from engine.errors import RefusalCode, Refused
from engine.events import from_record
from engine.state import RegionState
from persistence.codec import unpack_events, unpack_snapshot
from persistence.memory_journal import MemoryJournal
from server.regions.actor import Lifecycle, RegionActor, Reloaded, Unavailable
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands
from tests.support.waiting import eventually

BOUND_S = 5.0  # "answers at all" (scaled in until()) (a hang fails the test); never a speed assertion


def book(n: int, cell: int = CELL_0900) -> Book:
    return Book(f"AB-b{n}", f"p{n}", "AB-c1-r1", "child_checkup", FIRST_DAY, cell)


async def replayed(journal: MemoryJournal, region: str = "AB") -> dict[str, Any]:
    """The region as snapshot + journal say it is (what a restart would load)."""
    snapshot = await journal.load_snapshot(region)
    state = RegionState.from_snapshot(unpack_snapshot(snapshot.payload)) if snapshot else RegionState(region)
    async for entry in journal.read(region, snapshot.position if snapshot else 0):
        for record in unpack_events(entry.payload):
            state.evolve(from_record(record))
    state.take_changes()
    return state.to_snapshot()


@pytest.fixture
def journal() -> MemoryJournal:
    return MemoryJournal()


@pytest.fixture
async def actor(journal: MemoryJournal) -> AsyncIterator[RegionActor]:
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW, retry_backoff_s=(0.001, 0.01))
    await actor.start()
    for command in setup_commands():
        await actor.submit(command)
    yield actor
    await actor.stop()


async def answered(coro: Any) -> Any:
    return await asyncio.wait_for(coro, BOUND_S)


async def until(predicate: Any) -> None:
    """The actor exposes state, not events: poll it (every millisecond; these tests run in ms)."""
    await eventually(predicate, timeout=BOUND_S, interval=0.001)


@pytest.fixture
def engine_fault(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Make the (real) engine raise after it changed state: ``fault["booking"] = "AB-b9"``
    fails that Book mid-command; ``fault["take_changes"] = 1`` fails the next take_changes;
    ``fault["tick"] = 1`` fails the next Tick."""
    fault: dict[str, Any] = {}
    real_apply, real_take = RegionState.apply, RegionState.take_changes

    def apply(self: RegionState, command: Command, now: int) -> list[Any]:
        events = real_apply(self, command, now)
        if isinstance(command, Book) and command.booking_id == fault.get("booking"):
            raise ValueError("engine bug after the change was made")
        if isinstance(command, Tick) and fault.get("tick"):
            fault["tick"] -= 1
            raise RuntimeError("tick bug")
        return events

    def take_changes(self: RegionState) -> list[Any]:
        if fault.get("take_changes"):
            fault["take_changes"] -= 1
            raise RuntimeError("take_changes bug")
        return real_take(self)

    monkeypatch.setattr(RegionState, "apply", apply)
    monkeypatch.setattr(RegionState, "take_changes", take_changes)
    yield fault


async def test_lifecycle_is_an_explicit_enum(journal: MemoryJournal) -> None:
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW)
    assert actor.lifecycle is Lifecycle.RECOVERING and not actor.ready
    await actor.start()
    assert actor.lifecycle is Lifecycle.READY and actor.ready
    await actor.stop()
    assert {s.value for s in Lifecycle} == {"recovering", "ready", "following", "fenced", "failed"}


async def test_failed_append_answers_503_and_leaves_nothing(
    actor: RegionActor, journal: MemoryJournal
) -> None:
    heard: list[Any] = []
    actor.listeners.append(heard.append)
    journal.fail_next_append()
    with pytest.raises(Unavailable):
        await answered(actor.submit(book(1)))
    await until(lambda: actor.ready)
    assert actor.state.booking("AB-b1") is None
    assert actor.state.to_snapshot() == await replayed(journal)
    assert any(isinstance(item, Reloaded) for item in heard)
    await answered(actor.submit(book(1)))  # the time is still free
    assert actor.state.to_snapshot() == await replayed(journal)


async def test_lost_reply_reloads_what_the_journal_kept(actor: RegionActor, journal: MemoryJournal) -> None:
    journal.lose_next_reply()
    with pytest.raises(Unavailable):
        await answered(actor.submit(book(1)))
    await until(lambda: actor.ready)
    assert actor.state.booking("AB-b1") is not None  # written although the reply was lost
    assert actor.state.to_snapshot() == await replayed(journal)


async def test_stale_epoch_fences_the_region(actor: RegionActor, journal: MemoryJournal) -> None:
    journal.fence("AB", actor.epoch + 1)
    with pytest.raises(Unavailable):
        await answered(actor.submit(book(1)))
    await until(lambda: actor.lifecycle is Lifecycle.FENCED)
    assert not actor.ready
    with pytest.raises(Unavailable):
        await answered(actor.submit(book(2, CELL_0900 + 4)))
    assert actor.state.booking("AB-b1") is None


async def test_engine_error_mid_command_drops_the_change(
    actor: RegionActor, journal: MemoryJournal, engine_fault: dict[str, Any]
) -> None:
    engine_fault["booking"] = "AB-b9"
    ok, failed = await answered(
        asyncio.gather(actor.submit(book(1)), actor.submit(book(9, CELL_0900 + 8)), return_exceptions=True)
    )
    assert isinstance(failed, Unavailable), failed  # not a refusal that leaves state changed
    await until(lambda: actor.ready)
    assert actor.state.booking("AB-b9") is None
    assert actor.state.to_snapshot() == await replayed(journal)
    await actor.snapshot_now()  # the next snapshot agrees with the journal too
    assert actor.state.to_snapshot() == await replayed(journal)


async def test_take_changes_failure_answers_503_then_serves(
    actor: RegionActor, journal: MemoryJournal, engine_fault: dict[str, Any]
) -> None:
    engine_fault["take_changes"] = 1
    with pytest.raises(Unavailable):
        await answered(actor.submit(book(1)))
    await until(lambda: actor.ready)
    assert actor.state.to_snapshot() == await replayed(journal)
    await answered(actor.submit(book(2, CELL_0900 + 4)))
    assert actor.state.booking("AB-b2") is not None


async def test_tick_failure_does_not_kill_the_actor(
    journal: MemoryJournal, engine_fault: dict[str, Any]
) -> None:
    from engine.commands import PlaceHold

    clock = [float(NOW)]
    await journal.open()
    actor = RegionActor(
        "AB", journal, clock=lambda: clock[0], retry_backoff_s=(0.001, 0.01), tick_interval_s=0.01
    )
    await actor.start()
    try:
        for command in setup_commands():
            await actor.submit(command)
        await actor.submit(PlaceHold("AB-h1", "p1", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900, ttl_s=60))
        engine_fault["tick"] = 1
        clock[0] += 61  # the hold's deadline passes: the next turn ticks, and the tick fails once
        await until(lambda: engine_fault["tick"] == 0)
        await answered(actor.submit(book(2, CELL_0900 + 8)))
        await until(lambda: "AB-h1" not in actor.state.holds)
        assert actor.state.to_snapshot() == await replayed(journal)
    finally:
        await actor.stop()


async def test_snapshot_now_captures_inside_the_turn(actor: RegionActor, journal: MemoryJournal) -> None:
    journal.hold_appends()  # the batch below stays in flight while the snapshot is taken
    snapshot = asyncio.ensure_future(actor.snapshot_now())
    booking = asyncio.ensure_future(actor.submit(book(1)))
    await answered(snapshot)
    journal.release_appends()
    await answered(booking)
    stored = await journal.load_snapshot("AB")
    assert stored is not None
    in_snapshot = RegionState.from_snapshot(unpack_snapshot(stored.payload)).booking("AB-b1") is not None
    # a snapshot may include the booking only under the position that journaled it
    assert not in_snapshot or stored.position == await journal.last_position("AB")
    assert actor.state.to_snapshot() == await replayed(journal)


async def test_a_read_waits_for_the_batch_in_flight_and_sees_it_once_durable(
    actor: RegionActor, journal: MemoryJournal
) -> None:
    assert actor.settled and await answered(actor.query(lambda s: s.booking("AB-b1"))) is None  # at once
    journal.hold_appends()  # the batch is applied, its append waits: the state is ahead of the journal
    booking = asyncio.ensure_future(actor.submit(book(1)))
    await until(lambda: not actor.settled)
    read = asyncio.ensure_future(actor.query(lambda s: s.booking("AB-b1") is not None))
    for _ in range(100):  # however often the loop turns, nothing unacknowledged is read
        await asyncio.sleep(0)
        assert not read.done()
    journal.release_appends()
    assert await answered(read) is True
    await answered(booking)


async def test_a_read_waiting_on_a_batch_that_fails_never_sees_it(
    actor: RegionActor, journal: MemoryJournal
) -> None:
    journal.hold_appends()
    journal.fail_next_append()
    booking = asyncio.ensure_future(actor.submit(book(1)))
    await until(lambda: not actor.settled)
    read = asyncio.ensure_future(actor.query(lambda s: (s.booking("AB-b1"), s.booking_count())))
    journal.release_appends()
    with pytest.raises(Unavailable):
        await answered(booking)
    assert await answered(read) == (None, 0)  # answered from the reloaded state, without it
    assert actor.settled and actor.state.to_snapshot() == await replayed(journal)


async def test_corrupt_journal_fails_the_region_loudly(journal: MemoryJournal) -> None:
    await journal.open()
    first = RegionActor("AB", journal, clock=lambda: NOW)
    await first.start()
    for command in setup_commands():
        await first.submit(command)
    await first.stop()
    journal.corrupt("AB", 2)
    actor = RegionActor("AB", journal, clock=lambda: NOW, retry_backoff_s=(0.001, 0.01))
    await actor.start(wait=False)
    try:
        await until(lambda: actor.lifecycle is Lifecycle.FAILED)
        assert actor.failure is not None and "AB" in actor.failure
        with pytest.raises(Unavailable):
            await answered(actor.submit(book(1)))
        with pytest.raises(Unavailable):
            await answered(actor.query(lambda state: state.booking_count()))
        with pytest.raises(Unavailable):
            await answered(actor.wait_ready())
    finally:
        await actor.stop()


async def test_unreachable_journal_keeps_recovering_then_serves(journal: MemoryJournal) -> None:
    await journal.open()
    journal.unreachable = True
    actor = RegionActor("AB", journal, clock=lambda: NOW, retry_backoff_s=(0.001, 0.01))
    await actor.start(wait=False)
    try:
        await asyncio.sleep(0.02)
        assert actor.lifecycle is Lifecycle.RECOVERING
        with pytest.raises(Unavailable):
            await answered(actor.submit(book(1)))
        journal.unreachable = False
        await answered(actor.wait_ready())
        assert actor.lifecycle is Lifecycle.READY
    finally:
        await actor.stop()


async def test_damage_found_while_reloading_fails_the_region(
    actor: RegionActor, journal: MemoryJournal
) -> None:
    journal.corrupt("AB", 1)
    journal.fail_next_append()
    with pytest.raises(Unavailable):
        await answered(actor.submit(book(1)))
    await until(lambda: actor.lifecycle is Lifecycle.FAILED)
    with pytest.raises(Unavailable):
        await answered(actor.submit(book(2)))


async def test_stop_mid_append_answers_the_batch(actor: RegionActor, journal: MemoryJournal) -> None:
    journal.hold_appends()
    booking = asyncio.ensure_future(actor.submit(book(1)))
    await until(lambda: journal.appends > len(setup_commands()))  # the batch is at the journal
    await actor.stop()
    with pytest.raises(Unavailable):
        await answered(booking)
    journal.release_appends()


async def test_missing_history_without_a_snapshot_fails_the_region(journal: MemoryJournal) -> None:
    """A journal whose early entries are gone (trimmed, or cut) and no snapshot covering
    them: replaying the rest would invent a region. It FAILS instead, saying why."""
    await journal.open()
    first = RegionActor("AB", journal, clock=lambda: NOW)
    await first.start()
    for command in setup_commands():
        await first.submit(command)
    await first.submit(book(1))
    await first.stop()
    journal.trim("AB", 2)
    actor = RegionActor("AB", journal, clock=lambda: NOW, retry_backoff_s=(0.001, 0.01))
    await actor.start(wait=False)
    try:
        await until(lambda: actor.lifecycle is Lifecycle.FAILED)
        assert actor.failure is not None and "missing" in actor.failure
    finally:
        await actor.stop()


async def test_decide_builds_applies_and_answers_in_one_trip(
    actor: RegionActor, journal: MemoryJournal
) -> None:
    seen: list[int] = []

    def make(state: RegionState) -> Command:
        seen.append(state.booking_count())  # runs inside the turn, on the actor's state
        return book(1)

    def reply(state: RegionState, events: list[Any]) -> tuple[str, int]:
        booking = state.booking("AB-b1")
        assert booking is not None
        return booking.id, len(events)

    assert await answered(actor.decide(make, reply)) == ("AB-b1", 1)
    assert seen == [0]
    assert actor.state.to_snapshot() == await replayed(journal)  # answered only once durable


async def test_decide_returns_a_refusal_as_its_answer(actor: RegionActor, journal: MemoryJournal) -> None:
    """A refusal is an answer, not a failure: ``decide`` returns the engine's ``Refused`` (no
    exception for the route to catch), ``reply`` is not asked, nothing is journaled, and a
    command beside it in the batch stands. ``submit`` still raises it."""
    await actor.submit(book(1))
    before = await journal.last_position("AB")
    replied: list[Any] = []
    other = asyncio.ensure_future(actor.submit(book(3, CELL_0900 + 4)))  # queued with it
    outcome = await answered(actor.decide(lambda _s: book(2), lambda _s, events: replied.append(events)))
    assert isinstance(outcome, Refused) and outcome.code is RefusalCode.SLOT_TAKEN
    assert outcome.__traceback__ is None  # the engine's frames are not kept
    assert replied == []
    assert len(await answered(other)) == 1
    assert await journal.last_position("AB") == before + 1  # only the other booking
    with pytest.raises(Refused):
        await answered(actor.submit(book(4)))


async def test_decide_whose_make_raises_applies_nothing(actor: RegionActor, journal: MemoryJournal) -> None:
    def make(_state: RegionState) -> Command:
        raise LookupError("no such clinic")

    before = await journal.last_position("AB")
    others = [actor.submit(book(2, CELL_0900 + 4))]
    with pytest.raises(LookupError):
        await answered(actor.decide(make, lambda _s, _e: None))
    await answered(asyncio.gather(*others))  # the rest of the batch stands
    assert actor.ready and actor.state.booking_count() == 1
    assert await journal.last_position("AB") == before + 1


async def test_decide_when_the_append_fails_answers_503_and_leaves_nothing(
    actor: RegionActor, journal: MemoryJournal
) -> None:
    journal.fail_next_append()
    with pytest.raises(Unavailable):
        await answered(actor.decide(lambda _s: book(1), lambda s, _e: s.booking("AB-b1")))
    await until(lambda: actor.ready)
    assert actor.state.booking("AB-b1") is None
    assert actor.state.to_snapshot() == await replayed(journal)
