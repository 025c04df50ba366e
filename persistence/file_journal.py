"""FileJournal: the embedded journal, one append-only file of checksummed frames per region.

Layout under ``directory``::

    journal/<REGION>.log         frames: header (magic, crc32, length, position, epoch) + payload
    journal/<REGION>.epoch       the highest epoch accepted, ascii, replaced atomically
    snapshots/<REGION>.snap      header (magic, crc32, length, position) + payload, replaced atomically
    snapshots/<REGION>.snap.prev the snapshot before it (the fallback when the newest is damaged)
    set-aside/                   bytes taken out of the way (a cut torn tail, a damaged snapshot,
                                 what ``tandtid journal repair`` cut): kept, never deleted
    journal/commit.log           the frames of every region since the last checkpoint (group commit)

Appends to one region are serialised by an asyncio lock; durability is shared by all
regions (``persistence.commit_log``): the appends ready in the same instant are written
into their region files and, with ONE write + ONE fsync, into the commit log, in one worker
thread call, so a slow disk never blocks the event loop. A failed round truncates every
file back and raises JournalUnavailable for every append in it: nothing of those entries
stays visible. A writing ``open()`` first restores from the commit log whatever a region
file lost or tore in a crash since the last checkpoint (the commit log's records are the
acknowledged frames), then verifies the region files.

``open()`` verifies every frame and tells a torn write from damage. A torn write is what an
interrupted append leaves after the last good frame: a prefix of the next frame (its header
names the next position and a length running past the end of the file) or zeros. It was
never acknowledged (the fsync had not returned), so it is cut, its bytes set aside. Anything
else (a complete frame with a bad checksum, garbage, damage followed by more frames) may hold
acknowledged bookings: the region is marked damaged (``damage(region)``), nothing is cut, and
its reads and appends raise CorruptJournal, while every other region serves.
``tandtid journal check|repair`` (``persistence.file_check``) lets an operator decide.
Only one process may append to a directory; others may read and tail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import os
import re
import struct
import time
import zlib
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from persistence import commit_log
from persistence.commit_log import FRAME_HEADER as FRAME_HEADER
from persistence.commit_log import FRAME_MAGIC as FRAME_MAGIC
from persistence.commit_log import CommitLog
from persistence.durable_file import (
    fsync_directory,
    pwrite_all,
    remove_stale_temp_files,
    write_all,
    write_atomically,
)
from persistence.journal import CorruptJournal, Entry, Journal, JournalUnavailable, Snapshot, StaleEpoch

log = logging.getLogger(__name__)

_T = TypeVar("_T")

FRAME_CRC_FIELDS = slice(8, FRAME_HEADER.size)  # crc covers length, position, epoch + payload
SNAP_MAGIC = b"TTS1"
SNAP_HEADER = struct.Struct("<4sIQQ")  # magic, crc32, length, position
MAX_PAYLOAD = 64 * 1024 * 1024
READ_CHUNK = 4 * 1024 * 1024
INDEX_EVERY = 1024  # sparse position -> offset index stride
TAIL_POLL_S = 0.25  # how often tail() looks for other processes' appends
RECENT_BYTES = 1024 * 1024  # per region: the payloads of the newest appends kept for tail()
RECENT_ENTRIES = 4096
_REGION = re.compile(r"^[A-Z]{1,3}$")


def encode_frame(position: int, epoch: int, payload: bytes) -> bytes:
    """One journal frame as it lies on disk."""
    fields_ = struct.pack("<IQQ", len(payload), position, epoch)
    crc = zlib.crc32(payload, zlib.crc32(fields_))
    return FRAME_MAGIC + struct.pack("<I", crc) + fields_ + payload


@dataclass(frozen=True, slots=True)
class Damage:
    """Where a region's journal stops being trustworthy (no personal data: offsets only)."""

    region: str
    offset: int  # first byte that is not a good frame
    end: int  # the file's size when it was found
    position: int  # the last good position before it
    problem: str

    def __str__(self) -> str:
        return (
            f"region {self.region}: {self.problem} at byte {self.offset} of {self.end}, "
            f"after position {self.position}"
        )


@dataclass(slots=True)
class _Scan:
    """What one pass over frames found."""

    entries: list[Entry] = field(default_factory=list)
    offset: int = 0  # first byte not consumed
    position: int = 0  # position of the last good frame
    max_epoch: int = 0
    problem: str | None = None  # why scanning stopped before ``end`` (None: clean stop)
    index: list[tuple[int, int]] = field(default_factory=list)  # (position, offset) samples


def _frame_at(buf: memoryview, off: int) -> tuple[int, int, int] | None:
    """(length, position, epoch) when a complete, checksummed frame starts at ``off``."""
    if off + FRAME_HEADER.size > len(buf):
        return None
    magic, crc, length, position, epoch = FRAME_HEADER.unpack_from(buf, off)
    if magic != FRAME_MAGIC or length > MAX_PAYLOAD:
        return None
    start = off + FRAME_HEADER.size
    if start + length > len(buf):
        return None
    if zlib.crc32(buf[off + 8 : start + length]) != crc:
        return None
    return length, position, epoch


def _scan(
    fd: int,
    offset: int,
    end: int,
    position: int,
    after: int,
    *,
    collect: bool,
    max_entries: int | None = None,
) -> _Scan:
    """Walk frames in ``[offset, end)`` expecting positions ``position + 1, ...``.

    Collects entries with position > ``after`` when ``collect``; stops after ``max_entries``
    collected entries, at ``end``, or at the first frame that is incomplete, fails its
    checksum or breaks the position sequence (``problem`` says which).
    """
    result = _Scan(offset=offset, position=position)
    header_size = FRAME_HEADER.size
    unpack = FRAME_HEADER.unpack_from
    crc32 = zlib.crc32
    entries = result.entries
    while result.offset < end:
        want = min(end - result.offset, READ_CHUNK)
        buf = os.pread(fd, want, result.offset)
        if len(buf) < header_size:
            result.problem = "incomplete header"
            return result
        view = memoryview(buf)
        off = 0
        size = len(buf)
        pos = result.position
        max_epoch = result.max_epoch
        while off + header_size <= size:
            magic, crc, length, fpos, epoch = unpack(view, off)
            if magic != FRAME_MAGIC or length > MAX_PAYLOAD:
                result.problem = "bad frame header"
                break
            stop = off + header_size + length
            if stop > size:
                if off == 0:
                    # One frame larger than a chunk: read exactly that frame.
                    if result.offset + header_size + length > end:
                        result.problem = "incomplete frame"
                        break
                    buf = os.pread(fd, header_size + length, result.offset)
                    if len(buf) < header_size + length:
                        result.problem = "incomplete frame"
                        break
                    view = memoryview(buf)
                    size = len(buf)
                    continue
                break
            if crc32(view[off + 8 : stop]) != crc:
                result.problem = "checksum mismatch"
                break
            if fpos != pos + 1:
                result.problem = f"position {fpos} where {pos + 1} was expected"
                break
            pos = fpos
            if epoch > max_epoch:
                max_epoch = epoch
            if fpos % INDEX_EVERY == 0:
                result.index.append((fpos, result.offset + off))
            if collect and fpos > after:
                entries.append(Entry(fpos, epoch, bytes(view[off + header_size : stop])))
            off = stop
            if max_entries is not None and len(entries) >= max_entries:
                break
        view.release()
        result.offset += off
        result.position = pos
        result.max_epoch = max_epoch
        if result.problem is not None:
            return result
        if max_entries is not None and len(entries) >= max_entries:
            return result
        if off == 0:
            result.problem = "incomplete frame"
            return result
    return result


def _valid_frame_after(fd: int, offset: int, end: int) -> bool:
    """Whether any checksummed frame starts somewhere in ``(offset, end)``."""
    data = os.pread(fd, end - offset, offset)
    view = memoryview(data)
    try:
        at = data.find(FRAME_MAGIC, 1)
        while at >= 0:
            if _frame_at(view, at) is not None:
                return True
            at = data.find(FRAME_MAGIC, at + 1)
        return False
    finally:
        view.release()


def damage_in_tail(fd: int, offset: int, end: int, position: int) -> str | None:
    """None when the bytes ``[offset, end)`` after the good frame at ``position`` are what an
    interrupted append leaves behind (safe to cut: never acknowledged), else why they are
    damage (not to be cut without an operator)."""
    size = end - offset
    head = os.pread(fd, min(size, FRAME_HEADER.size), offset)
    if _all_zeros(fd, offset, end):
        return None  # the file grew, the data never landed
    if len(head) < FRAME_HEADER.size:
        return None if head[:4] == FRAME_MAGIC[: len(head[:4])] else "garbage after the last frame"
    magic, crc, length, fpos, _epoch = FRAME_HEADER.unpack_from(head)
    if magic != FRAME_MAGIC or length > MAX_PAYLOAD:
        return "bad frame header"
    if fpos != position + 1:
        return f"frame with position {fpos} where {position + 1} was expected"
    if FRAME_HEADER.size + length <= size:
        return "checksum mismatch in a complete frame"
    # An incomplete frame: torn, unless its length field is what was damaged (the rest of
    # the file then begins with one whole frame whose checksum matches its true length; an
    # interrupted append after it may have left the start of the next frame, or zeros).
    rest = os.pread(fd, size, offset)
    for stop in _frame_ends_before_a_torn_tail(rest):
        true_fields = struct.pack("<IQQ", stop - FRAME_HEADER.size, fpos, _epoch)
        if zlib.crc32(rest[FRAME_HEADER.size : stop], zlib.crc32(true_fields)) == crc:
            return "damaged length field in a complete frame"
    if _valid_frame_after(fd, offset, end):
        return "incomplete frame followed by valid frames"
    return None


def _frame_ends_before_a_torn_tail(rest: bytes) -> list[int]:
    """Where a whole frame at the start of ``rest`` may end when what follows it is what an
    interrupted append leaves: nothing, zeros, a prefix of the next frame's magic, or the
    start of a frame (its magic)."""
    ends = {len(rest), len(rest.rstrip(b"\0"))}
    ends.update(len(rest) - n for n in range(1, len(FRAME_MAGIC)) if rest.endswith(FRAME_MAGIC[:n]))
    at = rest.find(FRAME_MAGIC, FRAME_HEADER.size)
    while at >= 0:
        ends.add(at)
        at = rest.find(FRAME_MAGIC, at + 1)
    return sorted(e for e in ends if e >= FRAME_HEADER.size)


def _all_zeros(fd: int, offset: int, end: int) -> bool:
    while offset < end:
        chunk = os.pread(fd, min(end - offset, READ_CHUNK), offset)
        if not chunk or chunk.count(0) != len(chunk):
            return False
        offset += len(chunk)
    return True


def set_aside(directory: Path, name: str, data: bytes) -> Path:
    """Keep ``data`` under ``directory/set-aside/`` (fsynced); returns the file written."""
    aside = directory / "set-aside"
    aside.mkdir(parents=True, exist_ok=True)
    path = aside / f"{name}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.{time.time_ns() % 10**9:09d}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(aside)
    return path


def _probe_write(directory: Path) -> None:
    """Write, fsync and remove a small file in ``directory``; OSError when the disk refuses."""
    probe = directory / f".probe.{os.getpid()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, bytes(4096))
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        probe.unlink(missing_ok=True)


def snapshot_file_parts(snapshot: Snapshot) -> tuple[bytes, bytes]:
    """A snapshot file's bytes, as its header (magic, CRC-32 of the fields and the payload,
    length, position) and the payload itself (not copied). ``decode_snapshot`` reads it back."""
    fields_ = struct.pack("<QQ", len(snapshot.payload), snapshot.position)
    crc = zlib.crc32(snapshot.payload, zlib.crc32(fields_))
    return SNAP_MAGIC + struct.pack("<I", crc) + fields_, snapshot.payload


def _snapshot_position(path: Path) -> int:
    """The position in the header of the snapshot file at ``path`` (-1: none, or no header)."""
    try:
        with path.open("rb") as f:
            head = f.read(SNAP_HEADER.size)
    except FileNotFoundError:
        return -1
    if len(head) < SNAP_HEADER.size or head[:4] != SNAP_MAGIC:
        return -1
    return int(SNAP_HEADER.unpack(head)[3])


def decode_snapshot(data: bytes) -> Snapshot | None:
    """The snapshot in a ``.snap`` file's bytes, or None when they are damaged."""
    if len(data) >= SNAP_HEADER.size:
        magic, crc, length, position = SNAP_HEADER.unpack_from(data)
        payload = data[SNAP_HEADER.size :]
        if (
            magic == SNAP_MAGIC
            and length == len(payload)
            and zlib.crc32(payload, zlib.crc32(data[8 : SNAP_HEADER.size])) == crc
        ):
            return Snapshot(position, payload)
    return None


@dataclass(slots=True)
class _Cursor:
    offset: int  # byte offset of the next frame
    position: int  # position of the frame before it


@dataclass(slots=True)
class _Region:
    name: str
    log_path: Path
    epoch_path: Path
    fd: int | None = None  # write descriptor, opened on the first append
    committed: int = 0  # bytes of verified, durable frames
    position: int = 0
    epoch: int = 0  # highest epoch accepted
    dirty: bool = False  # a failed write may have left bytes past ``committed``
    damage: Damage | None = None  # found by open(): reads and appends refuse until repaired
    owner: bool = False  # this object appended: readers stop at ``committed``
    index_pos: list[int] = field(default_factory=lambda: [0])
    index_off: list[int] = field(default_factory=lambda: [0])
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    appended: asyncio.Event = field(default_factory=asyncio.Event)
    # The newest entries this object appended, each with the offset after its frame: tail()
    # hands them to followers from memory (no file read, no worker thread). Consecutive
    # positions ending at ``position``; bounded by RECENT_BYTES of payload / RECENT_ENTRIES.
    recent: deque[tuple[Entry, int]] = field(default_factory=deque)
    recent_bytes: int = 0

    def remember(self, entry: Entry, end: int) -> None:
        self.recent.append((entry, end))
        self.recent_bytes += len(entry.payload)
        while len(self.recent) > 1 and (
            self.recent_bytes > RECENT_BYTES or len(self.recent) > RECENT_ENTRIES
        ):
            self.recent_bytes -= len(self.recent.popleft()[0].payload)

    def recent_after(self, position: int) -> list[tuple[Entry, int]] | None:
        """The remembered entries after ``position``, or None when they do not reach back to
        ``position + 1`` (read the file)."""
        if not self.owner or not self.recent:
            return None
        first = self.recent[0][0].position
        if not first <= position + 1 <= self.position + 1:
            return None
        skip = position + 1 - first
        if skip == 0:
            return list(self.recent)
        return [self.recent[i] for i in range(skip, len(self.recent))]

    def add_index(self, samples: list[tuple[int, int]]) -> None:
        for pos, off in samples:
            if pos > self.index_pos[-1]:
                self.index_pos.append(pos - 1)  # (position before the frame, frame offset)
                self.index_off.append(off)

    def seek(self, after: int) -> tuple[int, int]:
        """(offset, position before it) of an indexed frame at or before ``after + 1``."""
        i = bisect_right(self.index_pos, after) - 1
        return self.index_off[i], self.index_pos[i]


class FileJournal(Journal):
    """The embedded journal. ``await open()`` before use, ``await close()`` after."""

    def __init__(self, directory: str | Path, *, max_workers: int = 8, read_only: bool = False) -> None:
        """``read_only``: for a second process that only reads and tails (the notifier). It never
        cuts anything: an incomplete last frame may be the writer's append in progress."""
        self._read_only = read_only
        self._dir = Path(directory)
        self._journal_dir = self._dir / "journal"
        self._snap_dir = self._dir / "snapshots"
        self._problems: dict[str, list[str]] = {}  # see problems()
        self._write_failure: str | None = None  # see write_failure()
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._regions: dict[str, _Region] = {}
        self._commit_log: CommitLog | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Create the directories, verify every region file and cut torn tails."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="file-journal")
        try:
            await self._run(self._journal_dir.mkdir, parents=True, exist_ok=True)
            await self._run(self._snap_dir.mkdir, parents=True, exist_ok=True)
            if not self._read_only:
                for directory in (self._snap_dir, self._journal_dir):
                    for path in await self._run(remove_stale_temp_files, directory):
                        log.info("removed %s, left by a process that stopped before its rename", path.name)
                for problem in await self._run(restore_from_commit_log, self._dir):
                    self._problems.setdefault(commit_log.COMMIT_LOG, []).append(problem)
                log_writer = CommitLog(self._journal_dir, self._submit)
                await self._run(log_writer.open)
                self._commit_log = log_writer
            names = sorted(p.stem for p in self._journal_dir.glob("*.log") if _REGION.match(p.stem))
            for suffix in ("*.epoch", f"*{COMMIT_DAMAGE}"):
                names += sorted(
                    p.stem
                    for p in self._journal_dir.glob(suffix)
                    if _REGION.match(p.stem) and p.stem not in names
                )
            for name in names:
                region = self._new_region(name)
                await self._run(self._recover, region)
                self._regions[name] = region
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._commit_log is not None:
            log_writer, self._commit_log = self._commit_log, None
            await log_writer.drain()
            await self._run(log_writer.close)  # checkpoint: region files fsynced, commit log emptied
        for region in self._regions.values():
            if region.fd is not None:
                os.close(region.fd)
                region.fd = None
        self._regions.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def problems(self) -> dict[str, list[str]]:
        return {region: list(found) for region, found in self._problems.items()}

    def write_failure(self) -> str | None:
        return self._write_failure

    def _wrote(self, exc: OSError | None) -> None:
        """Remember how the last durable write went (``write_failure``)."""
        if exc is None:
            self._write_failure = None
            return
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        if self._write_failure is None:
            log.error("journal writes fail: %s (%s); every append is answered 503", name, exc.strerror)
        self._write_failure = f"{name}: {exc.strerror or exc}"

    def damage(self, region: str) -> Damage | None:
        """The damage ``open()`` found in ``region``'s journal (None: none)."""
        state = self._regions.get(region)
        return state.damage if state is not None else None

    @property
    def rounds(self) -> int:
        """Durable write + fsync rounds made so far (each carries the appends of one or more regions)."""
        return self._commit_log.rounds if self._commit_log is not None else 0

    async def ping(self) -> bool:
        """Reachable. While writes fail (``write_failure``), also a small probe write + fsync in
        the journal directory: its success clears the failure, so a freed disk is seen even when
        no append comes (a balancer sends none to a node whose /ready says 503)."""
        if self._executor is None:
            return False
        try:
            if self._write_failure is not None and not self._read_only:
                await self._run(_probe_write, self._journal_dir)
                log.warning("journal writes work again (probe write succeeded)")
                self._wrote(None)
            return await self._run(os.access, self._journal_dir, os.W_OK)
        except OSError as exc:
            if self._write_failure is not None:
                self._wrote(exc)
                return True  # reachable: the failure is reported by write_failure()
            return False

    # -- appends ---------------------------------------------------------------------

    async def append(self, region: str, epoch: int, payload: bytes) -> int:
        if self._read_only:
            raise JournalUnavailable("this FileJournal was opened read-only")
        state = self._region(region)
        async with state.lock:
            if state.damage is not None:
                raise CorruptJournal(f"{state.damage}; no appends until repaired")
            if epoch < state.epoch:
                raise StaleEpoch(f"region {region}: epoch {epoch} < accepted {state.epoch}")
            if len(payload) > MAX_PAYLOAD:
                raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
            try:
                if state.fd is None:
                    state.fd = await self._run(self._open_for_append, state)
                if epoch > state.epoch:
                    await self._run(write_atomically, state.epoch_path, b"%d\n" % epoch)
                    state.epoch = epoch
                state.owner = True
                position = state.position + 1
                frame = encode_frame(position, epoch, payload)
                assert self._commit_log is not None
                await self._finish(self._commit_log.write(state, position, frame))
            except OSError as exc:
                state.dirty = True
                self._wrote(exc)
                raise JournalUnavailable(f"region {region}: write failed ({exc.strerror or exc})") from exc
            state.dirty = False
            self._write_failure = None
            if position % INDEX_EVERY == 0:
                state.add_index([(position, state.committed)])
            state.committed += len(frame)
            state.position = position
            state.remember(Entry(position, epoch, payload), state.committed)
            state.appended.set()
            state.appended = asyncio.Event()
            return position

    async def last_position(self, region: str) -> int:
        state = self._regions.get(self._check(region))
        if state is None:
            state = self._new_region(region)
            if not await self._run(state.log_path.exists):
                return 0
            state = self._regions.setdefault(region, state)  # created by another process
        if not state.owner:
            await self._catch_up(state)
        return state.position

    # -- reads -----------------------------------------------------------------------

    async def read(self, region: str, after: int = 0) -> AsyncIterator[Entry]:
        self._check(region)
        state = self._regions.get(region) or self._new_region(region)
        cursor = _Cursor(*state.seek(after))
        async for entry in self._entries(state, cursor, after):
            yield entry

    async def tail(self, region: str, after: int = 0) -> AsyncIterator[Entry]:
        self._check(region)
        detached = self._new_region(region)  # until this process appends to the region
        state = self._regions.get(region) or detached
        cursor = _Cursor(*state.seek(after))
        while True:
            state = self._regions.get(region) or detached
            waiter = state.appended
            recent = state.recent_after(cursor.position)
            if recent is None:
                if state.owner or _file_size_at(state.log_path) > cursor.offset:
                    async for entry in self._entries(state, cursor, after):
                        yield entry
            else:  # what this process just appended: from memory
                for entry, end in recent:
                    cursor.offset, cursor.position = end, entry.position
                    if entry.position > after:
                        yield entry
            # In-process appends set ``waiter``; another process's appends are polled for.
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation that
            # arrives as the event is set, and the tail (and whoever cancelled it) hangs.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TAIL_POLL_S):
                    await waiter.wait()

    async def _entries(self, state: _Region, cursor: _Cursor, after: int) -> AsyncIterator[Entry]:
        """Entries after ``after`` from ``cursor`` on; ``cursor`` advances chunk by chunk."""
        if state.damage is not None:
            raise CorruptJournal(str(state.damage))
        fd = await self._run(_open_read, state.log_path)
        if fd is None:
            return
        try:
            while True:
                end = state.committed if state.owner else await self._run(_file_size, fd)
                if cursor.offset >= end:
                    return
                scan = await self._run(
                    _scan, fd, cursor.offset, end, cursor.position, after, collect=True, max_entries=16384
                )
                state.add_index(scan.index)
                started_at = cursor.offset
                cursor.offset, cursor.position = scan.offset, scan.position
                for entry in scan.entries:
                    yield entry
                if scan.problem is not None:
                    if started_at <= scan.offset < state.committed:
                        raise CorruptJournal(f"region {state.name}: {scan.problem} at byte {scan.offset}")
                    return  # an append in flight in another process, or a tail open() will cut
        finally:
            os.close(fd)

    # -- snapshots -------------------------------------------------------------------

    async def save_snapshot(self, region: str, snapshot: Snapshot) -> None:
        """Atomically replace the snapshot; the one before it is kept as ``.snap.prev``."""
        if self._read_only:
            raise JournalUnavailable("this FileJournal was opened read-only")
        self._check(region)
        path = self._snap_dir / f"{region}.snap"
        previous = path.with_name(f"{region}.snap.prev")

        def write() -> None:  # in the journal's thread: a snapshot is up to hundreds of MB
            if _snapshot_position(path) > snapshot.position:
                log.warning(
                    "region %s: a snapshot at position %d not saved: the stored one is newer",
                    region,
                    snapshot.position,
                )
                return
            write_atomically(path, snapshot_file_parts(snapshot), keep_previous_as=previous)

        try:
            await self._run(write)
        except OSError as exc:
            self._wrote(exc)
            raise JournalUnavailable(
                f"region {region}: snapshot write failed ({exc.strerror or exc})"
            ) from exc
        self._write_failure = None

    async def load_snapshot(self, region: str) -> Snapshot | None:
        """The newest intact snapshot: ``.snap``, else ``.snap.prev``, else None (full replay).
        A damaged one is moved to ``set-aside/`` (kept) and logged."""
        self._check(region)
        newest = self._snap_dir / f"{region}.snap"
        for path in (newest, newest.with_name(f"{region}.snap.prev")):
            try:
                data = await self._run(path.read_bytes)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise JournalUnavailable(
                    f"region {region}: snapshot read failed ({exc.strerror or exc})"
                ) from exc
            snapshot = decode_snapshot(data)
            if snapshot is not None:
                return snapshot
            log.error(
                "region %s: snapshot file %s is damaged (%d bytes); falling back to an older one or a full replay",
                region,
                path.name,
                len(data),
            )
            if not self._read_only:
                kept = await self._run(set_aside, self._dir, path.name, data)
                await self._run(path.unlink)
                self._problems.setdefault(region, []).append(
                    f"snapshot {path.name} was damaged: set aside as set-aside/{kept.name}"
                )
        return None

    # -- internals -------------------------------------------------------------------

    def _check(self, region: str) -> str:
        if not _REGION.match(region):
            raise ValueError(f"not a region code: {region!r}")
        if self._executor is None:
            raise RuntimeError("FileJournal is not open; await open() first")
        return region

    def _new_region(self, name: str) -> _Region:
        return _Region(name, self._journal_dir / f"{name}.log", self._journal_dir / f"{name}.epoch")

    def _region(self, region: str) -> _Region:
        state = self._regions.get(self._check(region))
        if state is None:
            state = self._regions[region] = self._new_region(region)
        return state

    def _submit(self, fn: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        assert self._executor is not None
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self, fn: Callable[..., _T], *args: object, **kwargs: object) -> _T:
        if self._executor is None:
            raise RuntimeError("FileJournal is not open; await open() first")
        if kwargs:
            return await self._submit(lambda: fn(*args, **kwargs))
        return await self._submit(fn, *args)

    @staticmethod
    async def _finish(future: asyncio.Future[_T]) -> _T:
        """Await a write even if the caller is cancelled, so the region lock is never
        released while a frame is still being written."""
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await asyncio.wait({future})
            raise

    async def _catch_up(self, state: _Region) -> None:
        """Follow frames another process appended since we last looked."""
        fd = await self._run(_open_read, state.log_path)
        if fd is None:
            return
        try:
            end = await self._run(_file_size, fd)
            scan = await self._run(_scan, fd, state.committed, end, state.position, 0, collect=False)
        finally:
            os.close(fd)
        state.add_index(scan.index)
        state.committed, state.position = scan.offset, scan.position
        state.epoch = max(state.epoch, scan.max_epoch)

    def _open_for_append(self, state: _Region) -> int:
        existed = state.log_path.exists()
        fd = os.open(state.log_path, os.O_WRONLY | os.O_CREAT, 0o644)
        if not existed:
            fsync_directory(self._journal_dir)
        return fd

    def _recover(self, state: _Region) -> None:
        """Verify the region's frames; cut a torn tail; load position, epoch, index."""
        with contextlib.suppress(FileNotFoundError):
            state.epoch = int(state.epoch_path.read_text().strip() or 0)
        lost = read_commit_damage(self._journal_dir, state.name)
        fd = _open_read(state.log_path)
        if fd is None:
            if lost is not None:
                state.damage = Damage(state.name, 0, 0, 0, lost.problem)
            return
        try:
            end = os.fstat(fd).st_size
            scan = _scan(fd, 0, end, 0, 0, collect=False)
            if scan.problem is not None and scan.offset < end and not self._read_only:
                why = damage_in_tail(fd, scan.offset, end, scan.position)
                if why is not None:
                    state.damage = Damage(state.name, scan.offset, end, scan.position, why)
                    log.error(
                        "%s: region stopped, nothing cut (see: tandtid journal check --region %s)",
                        state.damage,
                        state.name,
                    )
                else:
                    kept = set_aside(
                        self._dir, state.log_path.name, os.pread(fd, end - scan.offset, scan.offset)
                    )
                    wfd = os.open(state.log_path, os.O_WRONLY)
                    try:
                        os.ftruncate(wfd, scan.offset)
                        os.fsync(wfd)
                    finally:
                        os.close(wfd)
                    log.warning(
                        "region %s: cut %d bytes of torn journal tail (%s) after position %d; kept as %s",
                        state.name,
                        end - scan.offset,
                        scan.problem,
                        scan.position,
                        kept.name,
                    )
        finally:
            os.close(fd)
        state.committed = scan.offset
        state.position = scan.position
        state.epoch = max(state.epoch, scan.max_epoch)
        state.add_index(scan.index)
        if lost is not None and state.damage is None:
            state.damage = Damage(state.name, scan.offset, end, scan.position, lost.problem)
            log.error("%s: region stopped (see: tandtid journal check --region %s)", state.damage, state.name)


# -- after a crash: the commit log -----------------------------------------------------------

COMMIT_DAMAGE = ".commit-damage"  # journal/<REGION>.commit-damage: the region stays stopped


@dataclass(frozen=True, slots=True)
class CommitDamage:
    """What ``journal/<REGION>.commit-damage`` says: damaged commit-log records that may have
    held acknowledged appends this region's file lacks. The region does not start until
    ``tandtid journal repair`` sets the file aside."""

    problem: str
    set_aside: str  # the damaged commit log's copy under set-aside/
    records: list[commit_log.DamagedRecord]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "problem": self.problem,
                "set_aside": self.set_aside,
                "records": [
                    {
                        "offset": r.offset,
                        "region": r.region,
                        "position": r.position,
                        "intact": r.intact,
                        "data": base64.b64encode(r.data).decode("ascii"),
                    }
                    for r in self.records
                ],
            }
        ).encode()


def commit_damage_path(journal_dir: Path, region: str) -> Path:
    return journal_dir / f"{region}{COMMIT_DAMAGE}"


def read_commit_damage(journal_dir: Path, region: str) -> CommitDamage | None:
    try:
        raw = json.loads(commit_damage_path(journal_dir, region).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:  # damaged itself: still a reason to stop
        return CommitDamage(f"{region}{COMMIT_DAMAGE} is unreadable", "", [])
    records = [
        commit_log.DamagedRecord(
            r["offset"], base64.b64decode(r["data"]), r["region"], r["position"], bool(r.get("intact"))
        )
        for r in raw.get("records", [])
    ]
    return CommitDamage(str(raw.get("problem", "commit log damaged")), str(raw.get("set_aside", "")), records)


def last_position(path: Path) -> int:
    """The position of the last good frame of a region file (0: none)."""
    fd = _open_read(path)
    if fd is None:
        return 0
    try:
        return _scan(fd, 0, os.fstat(fd).st_size, 0, 0, collect=False).position
    finally:
        os.close(fd)


def restore_from_commit_log(directory: Path) -> list[str]:
    """After a crash (``FileJournal.open``, and ``tandtid journal repair`` before it cuts
    anything): put back into each region file the frames the commit log holds and the file lost
    or tore, fsync every region file it covers, then empty it. Damaged records (not a torn last
    round) are kept: the whole log in ``set-aside/``, and every region whose file may lack an
    acknowledged append one of them held gets ``journal/<REGION>.commit-damage``, which stops
    that region until a repair. Returns the problems found (no personal data)."""
    journal_dir = directory / "journal"
    path = journal_dir / commit_log.COMMIT_LOG
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    found = commit_log.scan(data)
    for name, frames in found.records.items():
        if _REGION.match(name):
            _restore_region(journal_dir, name, frames)
    problems = []
    if found.problem is not None:
        kept = set_aside(directory, path.name, data)
        names = {p.stem for p in journal_dir.glob("*.log") if _REGION.match(p.stem)}
        names |= {r.region for r in found.damaged if r.region is not None and _REGION.match(r.region)}
        stopped = []
        for name in sorted(names):
            last = last_position(journal_dir / f"{name}.log")
            spans = found.lost(name, last)
            if spans:
                why = (
                    f"commit log damaged ({found.problem}; kept as set-aside/{kept.name}): "
                    "an acknowledged append may be missing"
                )
                write_atomically(
                    commit_damage_path(journal_dir, name), CommitDamage(why, kept.name, spans).to_json()
                )
                stopped.append(name)
        problem = f"commit log damaged ({found.problem}); kept as set-aside/{kept.name}"
        if stopped:
            problem += f"; stopped until repaired: {', '.join(stopped)}"
        problems.append(problem)
        log.error("%s", problem)
    if found.records:
        fsync_directory(journal_dir)
    commit_log.empty(path)
    return problems


def _restore_region(journal_dir: Path, name: str, frames: dict[int, bytes]) -> None:
    first = min(frames)
    path = journal_dir / f"{name}.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        scan = _scan(fd, 0, os.fstat(fd).st_size, 0, first - 1, collect=True)
        if scan.position < first - 1:
            log.error(
                "region %s: the file ends at position %d, its commit log records start at %d; "
                "nothing restored",
                name,
                scan.position,
                first,
            )
            return
        # Keep the file up to the first frame that differs from the commit log's record.
        cut_position, cut_offset = scan.position, scan.offset
        offset = scan.offset - sum(FRAME_HEADER.size + len(e.payload) for e in scan.entries)
        for entry in scan.entries:
            recorded = frames.get(entry.position)
            if recorded is not None and recorded != encode_frame(entry.position, entry.epoch, entry.payload):
                cut_position, cut_offset = entry.position - 1, offset
                break
            offset += FRAME_HEADER.size + len(entry.payload)
        missing: list[bytes] = []
        while cut_position + len(missing) + 1 in frames:
            missing.append(frames[cut_position + len(missing) + 1])
        if missing:
            os.ftruncate(fd, cut_offset)
            pwrite_all(fd, b"".join(missing), cut_offset)
            log.warning(
                "region %s: restored %d frames (positions %d..%d) from the commit log",
                name,
                len(missing),
                cut_position + 1,
                cut_position + len(missing),
            )
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_size_at(path: Path) -> int:
    """The file's size (0 if there is none). One ``stat``, called on the event loop: a follower
    polling a region nobody here appends to looks for growth this way, a few microseconds,
    instead of opening and measuring the file in worker threads (two hops) every poll."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _open_read(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None


def _file_size(fd: int) -> int:
    return os.fstat(fd).st_size
