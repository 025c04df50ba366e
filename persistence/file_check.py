"""What an operator runs on a FileJournal directory: ``check`` (read-only) and ``repair``.

``check_region`` reads a region's journal and snapshots without changing anything and
says what it found: ``ok``, ``torn-tail`` (an interrupted append that the next start cuts;
never acknowledged) or ``damaged`` (the region will not start: a complete frame with a bad
checksum, garbage, damage in the middle). For damage it lists every frame from the first
bad byte on, i.e. what a repair would cut: its byte range, its position when the header
can be trusted, whether it is intact, and the booking ids its events touch (for a frame
whose checksum fails, the ids are read from the raw bytes, best effort). Acknowledged
bookings in those frames are lost by the repair; the list is how they are found again.

A region is also ``damaged`` when a damaged record of the group-commit log
(``journal/commit.log``) may have held an acknowledged append its file lacks (after a power
loss): ``journal/<REGION>.commit-damage`` names those records, listed in ``lost`` with
``source`` ``commit.log``. A commit log that a start has not yet applied (the server has not
run since the crash) is read too: ``restorable`` names the positions it would put back.

``repair_region`` (only with the server stopped: take the data-directory lock first, and run
``restore_from_commit_log`` before it, as a start would, so nothing the commit log can put
back is cut) cuts the journal at the last good frame, keeping the cut bytes in
``set-aside/``, sets aside the region's ``.commit-damage`` file, and sets aside any snapshot
that includes positions past the cut (it would disagree with the journal). The region then
starts from what is left. Nothing is ever deleted.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.events import from_record
from persistence import commit_log
from persistence.codec import unpack_events
from persistence.file_journal import (
    COMMIT_DAMAGE,
    FRAME_HEADER,
    FRAME_MAGIC,
    MAX_PAYLOAD,
    _frame_at,
    _scan,
    commit_damage_path,
    damage_in_tail,
    decode_snapshot,
    read_commit_damage,
    set_aside,
)

_REGION_FILE = re.compile(r"^([A-Z]{1,3})(?:\.log|" + re.escape(COMMIT_DAMAGE) + ")$")
_BOOKING_ID = re.compile(rb"[A-Z]{1,3}-b[A-Za-z0-9_-]{4,40}")
BOOKING_EVENTS = ("Booked", "Cancelled", "Rescheduled", "NoShowMarked")


@dataclass(slots=True)
class LostFrame:
    start: int  # byte range in the log
    end: int
    position: int | None  # None when the header cannot be trusted
    intact: bool  # its checksum matches (only the damage before it makes it unreachable)
    booked: list[str] = field(default_factory=list)  # bookings whose Booked fact is in it
    changed: list[str] = field(default_factory=list)  # bookings cancelled, moved or marked in it
    source: str = "journal"  # "journal": the region file; "commit.log": a commit-log record; "redis"
    stream_id: str | None = None  # source "redis": the stream entry's id (start and end are 0)


@dataclass(slots=True)
class SnapshotFile:
    name: str
    position: int | None  # None: damaged
    size: int


@dataclass(slots=True)
class RegionCheck:
    region: str
    status: str  # "ok", "torn-tail" or "damaged"
    position: int  # the last good position
    size: int  # bytes in the log
    good_bytes: int  # bytes of good frames (the cut point of a repair)
    problem: str | None = None
    lost: list[LostFrame] = field(default_factory=list)
    snapshots: list[SnapshotFile] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)  # files already kept for this region
    restorable: list[int] = field(default_factory=list)  # positions a pending commit log puts back
    repaired: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def lost_bookings(self) -> list[str]:
        return sorted({b for frame in self.lost for b in frame.booked})


def regions_in(directory: Path) -> list[str]:
    """Region codes with a journal file under ``directory``."""
    journal = directory / "journal"
    if not journal.is_dir():
        return []
    return sorted({m.group(1) for p in journal.iterdir() if (m := _REGION_FILE.match(p.name))})


def check_region(directory: Path, region: str) -> RegionCheck:
    """Read ``region``'s files under ``directory`` and report (changes nothing)."""
    report = _check_file(directory, region)
    _check_commit_log(directory, region, report)
    return report


def _check_file(directory: Path, region: str) -> RegionCheck:
    log = directory / "journal" / f"{region}.log"
    report = RegionCheck(region, "ok", 0, 0, 0)
    report.snapshots = _snapshots(directory, region)
    aside = directory / "set-aside"
    if aside.is_dir():
        report.set_aside = sorted(p.name for p in aside.iterdir() if p.name.startswith(f"{region}."))
    try:
        fd = os.open(log, os.O_RDONLY)
    except FileNotFoundError:
        return report
    try:
        end = os.fstat(fd).st_size
        scan = _scan(fd, 0, end, 0, 0, collect=False)
        report.size, report.position, report.good_bytes = end, scan.position, scan.offset
        if scan.problem is None or scan.offset >= end:
            return report
        why = damage_in_tail(fd, scan.offset, end, scan.position)
        if why is None:
            report.status, report.problem = "torn-tail", scan.problem
            return report
        report.status, report.problem = "damaged", why
        report.lost = _frames_from(os.pread(fd, end - scan.offset, scan.offset), scan.offset)
    finally:
        os.close(fd)
    return report


def _check_commit_log(directory: Path, region: str, report: RegionCheck) -> None:
    """Add what the commit log says about ``region``: the damage a start recorded
    (``.commit-damage``), and what a commit log no start has applied yet would do."""
    found = read_commit_damage(directory / "journal", region)
    records = list(found.records) if found is not None else []
    problems = [found.problem] if found is not None else []
    try:
        pending = commit_log.scan((directory / "journal" / commit_log.COMMIT_LOG).read_bytes())
    except FileNotFoundError:
        pending = None
    if pending is not None:
        frames = pending.records.get(region, {})
        last = report.position
        while last + 1 in frames:
            last += 1
        report.restorable = list(range(report.position + 1, last + 1))
        if report.restorable and report.status != "ok":
            problems.append(
                f"the commit log holds positions {report.restorable[0]}..{report.restorable[-1]}: "
                "the next start (or journal repair) puts them back first"
            )
        spans = pending.lost(region, last) if pending.problem is not None else []
        if spans:
            records += spans
            problems.append(
                f"commit log damaged ({pending.problem}): an acknowledged append after position "
                f"{last} may be missing; the next start stops this region"
            )
    if not records and not problems:
        return
    if records:
        report.status = "damaged"
    report.problem = "; ".join(p for p in [report.problem, *problems] if p)
    for record in records:
        frame = LostFrame(
            record.offset,
            record.offset + len(record.data),
            record.position,
            record.intact,
            source="commit.log",
        )
        if record.intact:  # a whole region frame
            bookings_in(frame, record.data[FRAME_HEADER.size :])
        else:
            bookings_in(frame, record.data, readable=False)
        report.lost.append(frame)


def repair_region(directory: Path, region: str) -> RegionCheck:
    """Cut ``region``'s journal at its last good frame (bytes set aside), set aside its
    ``.commit-damage`` file and the snapshots past the cut. Returns the check made before the
    cut, ``repaired`` set. The caller must hold the data-directory lock (no server running) and
    must have run ``restore_from_commit_log`` (so nothing the commit log holds is cut)."""
    report = check_region(directory, region)
    if report.status != "damaged":
        return report
    log = directory / "journal" / f"{region}.log"
    if report.good_bytes < report.size and any(f.source == "journal" for f in report.lost):
        fd = os.open(log, os.O_RDWR)
        try:
            cut = os.pread(fd, report.size - report.good_bytes, report.good_bytes)
            kept = set_aside(directory, log.name, cut)
            os.ftruncate(fd, report.good_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        report.set_aside.append(kept.name)
    marker = commit_damage_path(directory / "journal", region)
    if marker.exists():
        report.set_aside.append(set_aside(directory, marker.name, marker.read_bytes()).name)
        marker.unlink()
    for snap in report.snapshots:
        if snap.position is None or snap.position > report.position:
            path = directory / "snapshots" / snap.name
            report.set_aside.append(set_aside(directory, snap.name, path.read_bytes()).name)
            path.unlink()
    report.repaired = True
    return report


def _snapshots(directory: Path, region: str) -> list[SnapshotFile]:
    found = []
    for name in (f"{region}.snap", f"{region}.snap.prev"):
        path = directory / "snapshots" / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        snapshot = decode_snapshot(data)
        found.append(SnapshotFile(name, snapshot.position if snapshot else None, len(data)))
    return found


def _frames_from(data: bytes, base: int) -> list[LostFrame]:
    """Every frame in ``data`` (the bytes from the first damage on), intact or not."""
    frames: list[LostFrame] = []
    view = memoryview(data)
    off = 0
    while off < len(data):
        if _frame_at(view, off) is not None:
            length = FRAME_HEADER.unpack_from(view, off)[2]
            stop = off + FRAME_HEADER.size + length
            frame = LostFrame(base + off, base + stop, FRAME_HEADER.unpack_from(view, off)[3], True)
            bookings_in(frame, bytes(view[off + FRAME_HEADER.size : stop]))
            frames.append(frame)
            off = stop
            continue
        # A damaged frame: it runs to the next intact frame (or the end of the file).
        stop = _next_frame(data, view, off + 1)
        position = None
        if off + FRAME_HEADER.size <= len(data):
            magic, _crc, length, fpos, _epoch = FRAME_HEADER.unpack_from(view, off)
            if magic == FRAME_MAGIC and length <= MAX_PAYLOAD and off + FRAME_HEADER.size + length == stop:
                position = fpos
        frame = LostFrame(base + off, base + stop, position, False)
        bookings_in(frame, bytes(view[off + min(FRAME_HEADER.size, stop - off) : stop]), readable=False)
        frames.append(frame)
        off = stop
    view.release()
    return frames


def _next_frame(data: bytes, view: memoryview, start: int) -> int:
    at = data.find(FRAME_MAGIC, start)
    while at >= 0:
        if _frame_at(view, at) is not None:
            return at
        at = data.find(FRAME_MAGIC, at + 1)
    return len(data)


def bookings_in(frame: LostFrame, payload: bytes, *, readable: bool = True) -> None:
    """Booking ids a frame's events touch; from the raw bytes when they do not decode."""
    try:
        events = [from_record(record) for record in unpack_events(payload)]
    except (ValueError, TypeError):
        events = []
        readable = False
    if not readable:
        # Best effort: a damaged byte may sit inside an id, so also list what the bytes say.
        frame.booked = sorted({m.decode() for m in _BOOKING_ID.findall(payload)})
    for event in events:
        kind = type(event).__name__
        booking_id = getattr(event, "booking_id", None)
        if not isinstance(booking_id, str):
            continue
        if kind == "Booked" and booking_id not in frame.booked:
            frame.booked.append(booking_id)
        elif kind in BOOKING_EVENTS and booking_id not in frame.changed:
            frame.changed.append(booking_id)
