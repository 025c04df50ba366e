"""Unit tests (no network) of what the regions share: reads over every region (``Regions.query_all`` / ``query_available``)
wait for a region's commit in flight only when that batch could hold what they look for.

A patient's bookings and the idempotency keys are only ever added, so a region whose state --
with the batch in flight applied -- holds nothing for the patient holds nothing durable either,
and is answered at once; a region whose batch in flight may add the patient's booking is waited
for, and its booking is seen only once durable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from engine.commands import Book
from engine.state import RegionState
from persistence.journal import Snapshot
from persistence.memory_journal import MemoryJournal
from server.regions.routing import Regions
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands
from tests.support.waiting import eventually

BOUND_S = 5.0  # "answers at all" (a hang fails the test); never a speed assertion


@pytest.fixture
async def two_regions() -> AsyncIterator[tuple[Regions, MemoryJournal]]:
    journal = MemoryJournal()
    await journal.open()
    regions = Regions(journal, clock=lambda: NOW, regions=("AB", "C"))
    await regions.start()
    for region in ("AB", "C"):
        for command in setup_commands(region):
            await regions.submit(command)
    try:
        yield regions, journal
    finally:
        journal.release_appends()
        await regions.stop()


def bookings_of(patient: str) -> tuple[Callable[[RegionState], list[str]], Callable[[RegionState], bool]]:
    def read(state: RegionState) -> list[str]:
        return [b.id for b in state.bookings_of(patient)]

    def absent(state: RegionState) -> bool:
        return not state.may_have_bookings_of(patient)

    return read, absent


async def test_a_read_for_one_patient_does_not_wait_for_another_patients_commit(
    two_regions: tuple[Regions, MemoryJournal],
) -> None:
    regions, journal = two_regions
    await regions.submit(Book("C-b1", "p1", "C-c1-r1", "checkup", FIRST_DAY, CELL_0900))
    journal.hold_appends()  # AB's next batch is applied and waits to be durable
    in_flight = asyncio.ensure_future(
        regions.submit(Book("AB-b2", "p2", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900))
    )
    actor = regions.actors["AB"]
    await eventually(lambda: actor.committing, what="AB's batch to be in flight")

    read, absent = bookings_of("p1")
    # p1 has nothing in AB, in flight or durable: answered at once, C's booking included
    assert await asyncio.wait_for(regions.query_all(read, absent=absent), BOUND_S) == ["C-b1"]
    found = await asyncio.wait_for(regions.query_available(read, absent=absent), BOUND_S)
    assert found.items == ["C-b1"] and found.missing == []

    # without ``absent`` the same read waits for AB's commit
    waiting = asyncio.ensure_future(regions.query_all(read))
    # p2's booking is in AB's batch in flight: waited for, never read before it is durable
    read2, absent2 = bookings_of("p2")
    waiting2 = asyncio.ensure_future(regions.query_all(read2, absent=absent2))
    for _ in range(100):
        await asyncio.sleep(0)
        assert not waiting.done() and not waiting2.done()
    journal.release_appends()
    await asyncio.wait_for(in_flight, BOUND_S)
    assert await asyncio.wait_for(waiting, BOUND_S) == ["C-b1"]
    assert await asyncio.wait_for(waiting2, BOUND_S) == ["AB-b2"]


class SlowSnapshots(MemoryJournal):
    """A MemoryJournal whose snapshot writes wait for ``release`` and count how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.writing = 0
        self.most_at_once = 0
        self.stored: list[str] = []

    async def save_snapshot(self, region: str, snapshot: Snapshot) -> None:
        self.writing += 1
        self.most_at_once = max(self.most_at_once, self.writing)
        try:
            await self.release.wait()
            await super().save_snapshot(region, snapshot)
            self.stored.append(region)
        finally:
            self.writing -= 1


async def test_regions_write_one_snapshot_at_a_time() -> None:
    """Two regions due for a snapshot together: the second waits for a later turn (SnapshotGate)."""
    journal = SlowSnapshots()
    await journal.open()
    regions = Regions(
        journal, clock=lambda: NOW, regions=("AB", "C"), snapshot_every_events=1, tick_interval_s=0.01
    )
    await regions.start()
    try:
        journal.release.clear()
        for region in ("AB", "C"):
            for command in setup_commands(region):
                await regions.submit(command)
        await eventually(lambda: journal.writing == 1, what="one snapshot under way")
        for _ in range(50):  # both regions had events and ticks meanwhile: still only one
            await asyncio.sleep(0.01)
        assert journal.writing == 1
        journal.release.set()
        await eventually(lambda: {"AB", "C"} <= set(journal.stored), what="both regions' snapshots")
        assert journal.most_at_once == 1
    finally:
        journal.release.set()
        await regions.stop()
