"""MemoryJournal: the journal contract in memory, with faults on demand (for tests).

Passes the same contract suite as FileJournal and RedisStreamJournal, and lets a test make
the next operation go wrong the ways real storage does, so every failure path of the region
actor can be driven in milliseconds::

    journal.fail_next_append()       the next append raises JournalUnavailable; nothing written
    journal.lose_next_reply()        the next append IS written, then raises JournalUnavailable
                                     (a reply lost on the wire: the caller cannot tell)
    journal.fence("AB", 9)           a newer owner took the region: appends below epoch 9 are stale
    journal.corrupt("AB", 3)         reading entry 3 of AB raises CorruptJournal (damage on disk)
    journal.trim("AB", 3)            entries 1-3 of AB are gone (history trimmed or lost)
    journal.unreachable = True       every call raises JournalUnavailable until set back
    journal.hold_appends()           appends wait until ``release_appends()`` (an append in flight)

The data lives in a ``MemoryStore``; a new MemoryJournal over the same store is what a
restarted process would see.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from persistence.journal import CorruptJournal, Entry, Journal, JournalUnavailable, Snapshot, StaleEpoch


@dataclass(slots=True)
class MemoryStore:
    """What survives a 'restart': entries, accepted epochs, snapshots."""

    entries: dict[str, list[Entry]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    damaged: dict[str, int] = field(default_factory=dict)  # region -> first unreadable position
    trimmed: dict[str, int] = field(default_factory=dict)  # region -> last position trimmed away


class MemoryJournal(Journal):
    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.unreachable = False
        self.appends = 0  # appends attempted (written or not)
        self._fail_next: list[str | None] = []
        self._lose_next: list[str | None] = []
        self._gate: asyncio.Event | None = None
        self._appended: dict[str, asyncio.Event] = {}
        self._open = False

    # -- faults ------------------------------------------------------------------------

    def fail_next_append(self, region: str | None = None) -> None:
        """The next append (to ``region``, or to any) raises JournalUnavailable, writing nothing."""
        self._fail_next.append(region)

    def lose_next_reply(self, region: str | None = None) -> None:
        """The next append (to ``region``, or to any) is written, then raises JournalUnavailable."""
        self._lose_next.append(region)

    def fence(self, region: str, epoch: int) -> None:
        """Another owner took ``region`` with ``epoch``: lower epochs are refused from now on."""
        self.store.epochs[region] = max(self.store.epochs.get(region, 0), epoch)

    def corrupt(self, region: str, position: int) -> None:
        """Entry ``position`` and everything after it can no longer be read."""
        self.store.damaged[region] = position

    def trim(self, region: str, upto: int) -> None:
        """Entries up to ``upto`` are gone; positions go on after them."""
        self.store.entries[region] = [e for e in self.store.entries.get(region, []) if e.position > upto]
        self.store.trimmed[region] = max(self.store.trimmed.get(region, 0), upto)

    def hold_appends(self) -> None:
        """Appends wait (not yet durable) until ``release_appends``."""
        self._gate = asyncio.Event()

    def release_appends(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    # -- the contract --------------------------------------------------------------------

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def ping(self) -> bool:
        return self._open and not self.unreachable

    async def append(self, region: str, epoch: int, payload: bytes) -> int:
        self._reachable()
        self.appends += 1
        if self._gate is not None:
            await self._gate.wait()
        if self._take(self._fail_next, region):
            raise JournalUnavailable(f"region {region}: injected append failure")
        accepted = self.store.epochs.get(region, 0)
        if epoch < accepted:
            raise StaleEpoch(f"region {region}: epoch {epoch} < accepted {accepted}")
        self.store.epochs[region] = epoch
        entries = self.store.entries.setdefault(region, [])
        position = entries[-1].position + 1 if entries else self.store.trimmed.get(region, 0) + 1
        entries.append(Entry(position, epoch, bytes(payload)))
        event = self._appended.pop(region, None)
        if event is not None:
            event.set()
        if self._take(self._lose_next, region):
            raise JournalUnavailable(f"region {region}: injected lost reply (the entry was written)")
        return position

    async def read(self, region: str, after: int = 0) -> AsyncIterator[Entry]:
        self._reachable()
        for entry in list(self.store.entries.get(region, ())):
            if entry.position > after:
                self._readable(region, entry.position)
                yield entry

    async def tail(self, region: str, after: int = 0) -> AsyncIterator[Entry]:
        position = after
        while True:
            waiter = self._appended.setdefault(region, asyncio.Event())
            async for entry in self.read(region, position):
                position = entry.position
                yield entry
            await waiter.wait()

    async def last_position(self, region: str) -> int:
        self._reachable()
        entries = self.store.entries.get(region)
        return entries[-1].position if entries else self.store.trimmed.get(region, 0)

    async def save_snapshot(self, region: str, snapshot: Snapshot) -> None:
        self._reachable()
        stored = self.store.snapshots.get(region)
        if stored is None or stored.position <= snapshot.position:
            self.store.snapshots[region] = snapshot

    async def load_snapshot(self, region: str) -> Snapshot | None:
        self._reachable()
        return self.store.snapshots.get(region)

    # -- internals -----------------------------------------------------------------------

    def _reachable(self) -> None:
        if self.unreachable:
            raise JournalUnavailable("injected: the journal cannot be reached")

    def _readable(self, region: str, position: int) -> None:
        damaged = self.store.damaged.get(region)
        if damaged is not None and position >= damaged:
            raise CorruptJournal(f"region {region}: injected damage at position {damaged}")

    @staticmethod
    def _take(pending: list[str | None], region: str) -> bool:
        for i, wanted in enumerate(pending):
            if wanted is None or wanted == region:
                del pending[i]
                return True
        return False
