"""The commit log: one write + one fsync for the appends of every region (group commit).

FileJournal keeps one file per region (``journal/<REGION>.log``), and reads, tails, fencing
and recovery stay per region. Durability is shared: the appends of all regions that are
ready in the same event-loop instant (and those that arrive while a round is on disk) form
one round, and ONE worker-thread call writes each frame into its region file (page cache,
no fsync) and the same frames, tagged with region and position, to ``journal/commit.log``
with one write + one fsync. A round is durable when that fsync returns. A failure anywhere
in a round truncates every file it touched back and fails every append in it: the caller
must treat all of them as not written.

Region files become durable in bulk at a checkpoint: every region file written since the
last one is fsynced, then the commit log is emptied — when the commit log passes
``CHECKPOINT_BYTES`` and at ``close``. After a crash the commit log holds every frame a region
file may have lost or torn since the last checkpoint; ``FileJournal.open`` puts them back
(``records`` reads them) before it verifies the region files, then calls ``empty``.

Record layout: magic ``TTC1``, crc32 of the rest, region (4 bytes ASCII, NUL-padded),
position, frame length, then the region frame exactly as it lies in the region file. A
position that appears again (an append retried after a failed round) replaces the earlier
record and everything after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

RECORD_MAGIC = b"TTC1"
RECORD_HEADER = struct.Struct("<4sI4sQI")  # magic, crc32, region, position, frame length
CHECKPOINT_BYTES = 64 * 1024 * 1024
COMMIT_LOG = "commit.log"


class RegionFile(Protocol):
    """What a round writes into: FileJournal's per-region state (held under its region lock)."""

    name: str
    fd: int | None
    committed: int  # bytes of durable frames; the frame goes here
    dirty: bool  # a failed round may have left bytes past ``committed``


@dataclass(slots=True)
class _Append:
    target: RegionFile
    position: int
    frame: bytes
    future: asyncio.Future[None]


Submit = Callable[[Callable[[list[_Append]], None], list[_Append]], "asyncio.Future[None]"]


def encode_record(region: str, position: int, frame: bytes) -> bytes:
    fields = struct.pack("<4sQI", region.encode("ascii"), position, len(frame))
    crc = zlib.crc32(frame, zlib.crc32(fields))
    return RECORD_MAGIC + struct.pack("<I", crc) + fields + frame


def records(path: Path) -> dict[str, dict[int, bytes]]:
    """Per region, position -> frame of every whole record, in order; stops at the first torn
    or damaged record (its round was never acknowledged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    found: dict[str, dict[int, bytes]] = {}
    view = memoryview(data)
    off = 0
    size = RECORD_HEADER.size
    while off + size <= len(data):
        magic, crc, region, position, length = RECORD_HEADER.unpack_from(data, off)
        end = off + size + length
        if magic != RECORD_MAGIC or end > len(data) or zlib.crc32(view[off + 8 : end]) != crc:
            break
        frames = found.setdefault(region.rstrip(b"\0").decode("ascii"), {})
        for later in [p for p in frames if p >= position]:
            del frames[later]
        frames[position] = bytes(view[off + size : end])
        off = end
    view.release()
    return found


def damage(path: Path) -> str | None:
    """Why ``records`` stopped before the end of the log when that is NOT a torn round (a
    complete record with a bad checksum, garbage, damage followed by more records): such
    bytes may hold acknowledged appends and must be kept. None when clean or merely torn."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    view = memoryview(data)
    off = 0
    size = RECORD_HEADER.size
    try:
        while off + size <= len(data):
            magic, crc, _region, _position, length = RECORD_HEADER.unpack_from(data, off)
            end = off + size + length
            if magic != RECORD_MAGIC:
                break
            if end > len(data):  # the last round's record, cut short: torn unless more follow
                return None if data.find(RECORD_MAGIC, off + 1) < 0 else f"damaged record at byte {off}"
            if zlib.crc32(view[off + 8 : end]) != crc:
                return f"record at byte {off} of {len(data)} fails its checksum"
            off = end
        rest = data[off:]
        if not rest or rest.count(0) == len(rest) or RECORD_MAGIC.startswith(rest[:4]):
            return None  # clean, unwritten zeros, or a header cut short
        return f"garbage at byte {off} of {len(data)}"
    finally:
        view.release()


def empty(path: Path) -> None:
    """Empty the commit log durably (every region file it covered is fsynced already)."""
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError("pwrite wrote nothing")
        view = view[written:]
        offset += written


class CommitLog:
    """The group writer of one FileJournal. ``open`` and ``close`` run in a worker thread;
    ``write`` is called on the event loop with the region's lock held."""

    def __init__(self, directory: Path, submit: Submit) -> None:
        self._path = directory / COMMIT_LOG
        self._submit = submit
        self._fd: int | None = None
        self._size = 0
        self._unsynced: set[int] = set()  # region fds written since the last checkpoint
        self._pending: list[_Append] = []
        self._flushing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.rounds = 0  # durable write + fsync rounds made (each carries one or more regions)

    def open(self) -> None:
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        """Checkpoint (region files fsynced, commit log emptied) and close."""
        if self._fd is None:
            return
        try:
            self._checkpoint()
        finally:
            os.close(self._fd)
            self._fd = None

    def write(self, target: RegionFile, position: int, frame: bytes) -> asyncio.Future[None]:
        """Queue ``frame`` for ``target`` at ``target.committed``; the future resolves when it is
        durable and raises the round's OSError when it is not."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Append(target, position, frame, future))
        if not self._flushing:
            self._flushing = True
            self._idle.clear()
            loop.call_soon(self._start_round)  # appends of this same instant join the round
        return future

    async def drain(self) -> None:
        """Until no round is queued or on disk (before ``close``)."""
        await self._idle.wait()

    # -- rounds ----------------------------------------------------------------------------

    def _start_round(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._flushing = False
            self._idle.set()
            return
        self._submit(self._write_round, batch).add_done_callback(lambda done: self._round_done(batch, done))

    def _round_done(self, batch: list[_Append], done: asyncio.Future[None]) -> None:
        error = done.exception() if not done.cancelled() else OSError("commit log round cancelled")
        if error is None:
            self.rounds += 1
        for item in batch:
            if item.future.done():
                continue
            if error is None:
                item.future.set_result(None)
            else:
                item.future.set_exception(error)
        if self._pending:
            asyncio.get_running_loop().call_soon(self._start_round)
        else:
            self._flushing = False
            self._idle.set()

    def _write_round(self, batch: list[_Append]) -> None:
        """In a worker thread: frames into region files, records into the commit log, one fsync.
        On failure every file is truncated back to where the round found it."""
        if self._fd is None:
            raise OSError("the commit log is closed")
        if self._size >= CHECKPOINT_BYTES:
            self._checkpoint()
        touched: list[RegionFile] = []
        try:
            for item in batch:
                target = item.target
                assert target.fd is not None
                touched.append(target)
                if target.dirty:
                    os.ftruncate(target.fd, target.committed)
                _pwrite_all(target.fd, item.frame, target.committed)
            data = b"".join(encode_record(i.target.name, i.position, i.frame) for i in batch)
            _pwrite_all(self._fd, data, self._size)
            os.fsync(self._fd)
        except OSError:
            for target in touched:
                with contextlib.suppress(OSError):
                    assert target.fd is not None
                    os.ftruncate(target.fd, target.committed)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
                os.fsync(self._fd)
            raise
        self._size += len(data)
        self._unsynced.update(t.fd for t in touched if t.fd is not None)

    def _checkpoint(self) -> None:
        assert self._fd is not None
        for fd in list(self._unsynced):
            os.fsync(fd)
            self._unsynced.discard(fd)
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self._size = 0
