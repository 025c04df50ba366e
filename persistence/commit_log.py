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

from engine.model import REGION_CODES
from persistence.durable_file import pwrite_all

RECORD_MAGIC = b"TTC1"
# A region frame (FileJournal's on-disk unit), which every record carries.
FRAME_MAGIC = b"TTJ1"
FRAME_HEADER = struct.Struct("<4sIIQQ")  # magic, crc32, length, position, epoch
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


@dataclass(frozen=True, slots=True)
class DamagedRecord:
    """Bytes of the commit log that are not a whole record and are not a torn last round: a
    record with a bad checksum or garbage, up to the next intact record (or the end)."""

    offset: int
    data: bytes
    region: str | None  # None: the header cannot be trusted to name it
    position: int | None  # None: likewise
    intact: bool = False  # an intact record that cannot be put back (it follows a damaged one)

    def affects(self, region: str, last_position: int, *, alone: bool) -> bool:
        """Whether ``region``, whose file ends at ``last_position`` once restored, may lack an
        acknowledged append this record held (then it must not serve until repaired). ``alone``:
        no other damaged record in the log. A region lacking position P ends at exactly P - 1
        when every other record is intact (restore put back all before it), so a record whose
        region is unknown but whose position is known stops only the regions ending there."""
        if self.position is not None and self.position <= last_position:
            return False  # the file holds that position: nothing is missing from it
        if self.region is not None:
            return self.region == region
        if self.position is not None and alone:
            return last_position == self.position - 1
        return True


@dataclass(slots=True)
class LogScan:
    records: dict[str, dict[int, bytes]]  # per region, position -> frame of every intact record
    offsets: dict[tuple[str, int], int]  # (region, position) -> where that record starts
    damaged: list[DamagedRecord]
    problem: str | None  # why the log is damaged (None: clean, or merely torn at its end)

    def lost(self, region: str, last_position: int) -> list[DamagedRecord]:
        """What ``region``, whose file ends at ``last_position`` once restored, may have lost:
        the damaged records that may be its, and its intact records past a gap (empty: none)."""
        alone = len(self.damaged) == 1
        found = [r for r in self.damaged if r.affects(region, last_position, alone=alone)]
        beyond = sorted(p for p in self.records.get(region, {}) if p > last_position)
        found += [
            DamagedRecord(self.offsets[(region, p)], self.records[region][p], region, p, intact=True)
            for p in beyond
        ]
        return found


def scan(data: bytes) -> LogScan:
    """Every intact record (also those after damage; a position that appears again replaces the
    earlier record and everything after it), and every damaged span. A cut-short last record,
    zeros or a header prefix at the end are a torn round (never acknowledged), not damage."""
    found: dict[str, dict[int, bytes]] = {}
    offsets: dict[tuple[str, int], int] = {}
    damaged: list[DamagedRecord] = []
    problems: list[str] = []
    view = memoryview(data)
    off = 0
    while off < len(data):
        if _record_at(data, view, off):
            _magic, _crc, region, position, length = RECORD_HEADER.unpack_from(data, off)
            end = off + RECORD_HEADER.size + length
            name = region.rstrip(b"\0").decode("ascii")
            frames = found.setdefault(name, {})
            for later in [p for p in frames if p >= position]:
                del frames[later]
            frames[position] = bytes(view[off + RECORD_HEADER.size : end])
            offsets[(name, position)] = off
            off = end
            continue
        following = _next_record(data, view, off + 1)
        if following < 0 and _torn(data, off):
            break
        stop = following if following >= 0 else len(data)
        span = DamagedRecord(off, bytes(view[off:stop]), *_named(data, off, stop))
        damaged.append(span)
        problems.append(f"{stop - off} damaged bytes at byte {off} of {len(data)}")
        off = stop
    view.release()
    return LogScan(found, offsets, damaged, "; ".join(problems) or None)


def _record_at(data: bytes, view: memoryview, off: int) -> bool:
    if off + RECORD_HEADER.size > len(data):
        return False
    magic, crc, _region, _position, length = RECORD_HEADER.unpack_from(data, off)
    end = off + RECORD_HEADER.size + length
    return bool(magic == RECORD_MAGIC and end <= len(data) and zlib.crc32(view[off + 8 : end]) == crc)


def _next_record(data: bytes, view: memoryview, start: int) -> int:
    at = data.find(RECORD_MAGIC, start)
    while at >= 0 and not _record_at(data, view, at):
        at = data.find(RECORD_MAGIC, at + 1)
    return at


def _torn(data: bytes, off: int) -> bool:
    """Whether ``data[off:]`` (no intact record follows) is what an interrupted round leaves."""
    rest = data[off:]
    if rest.count(0) == len(rest) or (len(rest) < RECORD_HEADER.size and RECORD_MAGIC.startswith(rest[:4])):
        return True
    if len(rest) < RECORD_HEADER.size:
        return False
    magic, crc, region, position, length = RECORD_HEADER.unpack_from(data, off)
    if magic != RECORD_MAGIC or RECORD_HEADER.size + length <= len(rest):
        return False
    # Cut short, unless its length field is what was damaged: then the rest is one whole record
    # whose checksum matches the true length, or begins with one whole, intact frame (a whole
    # record, acknowledged, even when a later round was torn after it).
    frame = rest[RECORD_HEADER.size :]
    true_fields = struct.pack("<4sQI", region, position, len(frame))
    if zlib.crc32(frame, zlib.crc32(true_fields)) == crc:
        return False
    if len(frame) >= FRAME_HEADER.size and frame[:4] == FRAME_MAGIC:
        _fmagic, fcrc, flength, _fposition, _epoch = FRAME_HEADER.unpack_from(frame)
        whole = FRAME_HEADER.size + flength
        if whole <= len(frame) and zlib.crc32(frame[8:whole]) == fcrc:
            return False
    return True


def _named(data: bytes, off: int, stop: int) -> tuple[str | None, int | None]:
    """(region, position) of a damaged span, as far as they can be trusted. When the frame
    inside is intact (its own checksum matches), the damage is in the record's header: the
    position is the frame's, the region unknown. Otherwise the header names them, if its
    length field reaches exactly to ``stop`` (or its magic is intact) and it names a region."""
    if stop - off < RECORD_HEADER.size:
        return None, None
    magic, _crc, raw, position, length = RECORD_HEADER.unpack_from(data, off)
    frame = data[off + RECORD_HEADER.size : stop]
    if len(frame) >= FRAME_HEADER.size and frame[:4] == FRAME_MAGIC:
        _fmagic, fcrc, flength, fposition, _epoch = FRAME_HEADER.unpack_from(frame)
        if FRAME_HEADER.size + flength == len(frame) and zlib.crc32(frame[8:]) == fcrc:
            return None, fposition
    if magic != RECORD_MAGIC and off + RECORD_HEADER.size + length != stop:
        return None, None
    name = raw.rstrip(b"\0").decode("ascii", "replace")
    return (name, position) if name in REGION_CODES else (None, None)


def records(path: Path) -> dict[str, dict[int, bytes]]:
    """Per region, position -> frame of every intact record (see ``scan``)."""
    try:
        return scan(path.read_bytes()).records
    except FileNotFoundError:
        return {}


def damage(path: Path) -> str | None:
    """Why the log is damaged (not merely torn at its end): such bytes may hold acknowledged
    appends and must be kept. None when clean or torn."""
    try:
        return scan(path.read_bytes()).problem
    except FileNotFoundError:
        return None


def empty(path: Path) -> None:
    """Empty the commit log durably (every region file it covered is fsynced already)."""
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)


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
                pwrite_all(target.fd, item.frame, target.committed)
            data = b"".join(encode_record(i.target.name, i.position, i.frame) for i in batch)
            pwrite_all(self._fd, data, self._size)
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
