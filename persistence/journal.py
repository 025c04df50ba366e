"""The journal seam: one interface, two implementations (FileJournal, RedisStreamJournal).

A journal keeps, per region, an ordered list of entries. One entry is one actor batch:
an opaque ``payload`` (``persistence.codec`` packs the batch's event records into it)
written with ONE durable write. Positions are consecutive integers per region,
starting at 1; position 0 means "before the first entry".

Exception tree (all subclasses of ``engine.errors.TandtidError``)::

    JournalError
     ├── JournalUnavailable   the store cannot be reached or the write was not made durable;
     │                        the caller must treat the append as NOT written (retry later)
     ├── StaleEpoch           the append's epoch is lower than the journal's latest (fenced off)
     └── CorruptJournal       unreadable data that recovery cannot cut away safely

Epochs are fencing tokens from a region lease: every append carries the writer's epoch,
the journal remembers the highest epoch it accepted per region, and refuses lower ones.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from engine.errors import TandtidError


class JournalError(TandtidError):
    """Root of the journal errors."""


class JournalUnavailable(JournalError):
    """The append (or read) did not happen; nothing may be acknowledged for it."""


class StaleEpoch(JournalError):
    """A writer with an older epoch tried to append; a newer owner holds the region."""


class CorruptJournal(JournalError):
    """Damage in the middle of a journal (not a torn tail) that cannot be repaired."""


@dataclass(frozen=True, slots=True)
class Entry:
    position: int  # 1, 2, 3, ... per region
    epoch: int
    payload: bytes
    # epoch seconds by the journal's clock when the entry was written (the commit time every
    # node's diffs carry); 0.0 where the journal keeps no time (files, memory)
    written_at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class Snapshot:
    position: int  # the last journal position whose events the snapshot includes
    payload: bytes


class Journal(abc.ABC):
    """What the region actor needs from storage. Implementations pass tests/contract."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect / open files; a FileJournal cuts torn tails here (and reports them)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def append(self, region: str, epoch: int, payload: bytes) -> int:
        """Durably write one entry and return its position. Raises StaleEpoch when
        ``epoch`` is lower than the highest epoch accepted for ``region``, and
        JournalUnavailable when the write cannot be made durable."""

    @abc.abstractmethod
    def read(self, region: str, after: int = 0) -> AsyncIterator[Entry]:
        """Every entry with position > ``after``, in order, then stop."""

    @abc.abstractmethod
    def tail(self, region: str, after: int = 0) -> AsyncIterator[Entry]:
        """Like ``read`` but never stops: waits for and yields new entries as they come."""

    @abc.abstractmethod
    async def last_position(self, region: str) -> int:
        """The position of the newest entry (0 when empty)."""

    @abc.abstractmethod
    async def save_snapshot(self, region: str, snapshot: Snapshot) -> None:
        """Store atomically: a reader sees the old snapshot or the new one, never a mix. A snapshot
        at a lower position than the stored one is dropped, the stored one stays: a deposed owner's
        save that lands late must not take the region back to older state (its history may be
        trimmed already)."""

    @abc.abstractmethod
    async def load_snapshot(self, region: str) -> Snapshot | None: ...

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the store is reachable (for /ready)."""

    def written_at(self, region: str, position: int) -> float:
        """When this object's own append of ``position`` was written, by the journal's clock (the
        time ``Entry.written_at`` gives every reader of it); 0.0 when the journal keeps no time
        or no longer remembers that append."""
        return 0.0

    def write_failure(self) -> str | None:
        """Why durable writes fail right now (e.g. ``"ENOSPC: No space left on device"``: the disk
        is full), None when the last write succeeded. Set by a failed append or snapshot write,
        cleared by the next one that succeeds (or by ``ping``'s probe write). No personal data:
        served on /ready. While it is set, every append is expected to fail."""
        return None

    def problems(self) -> dict[str, list[str]]:
        """What an operator should know, by region, that did not stop the region (e.g. a
        damaged snapshot set aside and an older one loaded). No personal data. For /ready."""
        return {}
