"""Integration tests (real files, the real ``tandtid journal`` command): check reports a
damaged region with the booking ids a repair would cut; repair cuts at the last good frame,
keeps every cut byte in set-aside/, and the region then starts from what is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.commands import Book
from persistence.file_check import check_region, repair_region
from persistence.file_journal import FRAME_HEADER, FileJournal
from server.regions.actor import RegionActor
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands

REPO = Path(__file__).resolve().parents[2]


async def booked_journal(data: Path, bookings: int = 4) -> list[str]:
    """Catalog + ``bookings`` bookings in AB, one journal frame each; their ids, in order."""
    journal = FileJournal(data)
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW)
    await actor.start()
    ids = []
    for command in setup_commands():
        await actor.submit(command)
    for n in range(bookings):
        booking = Book(f"AB-bkept{n:04d}", f"p{n}", "AB-c1-r1", "child_checkup", FIRST_DAY, CELL_0900 + n)
        await actor.submit(booking)
        ids.append(booking.booking_id)
    await actor.stop()
    await journal.close()
    return ids


def frame_starts(log: Path) -> list[int]:
    data, off, starts = log.read_bytes(), 0, []
    while off < len(data):
        starts.append(off)
        off += FRAME_HEADER.size + FRAME_HEADER.unpack_from(data, off)[2]
    return starts


def tandtid(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_check_lists_what_a_repair_would_cut(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = await booked_journal(data)
    log = data / "journal" / "AB.log"
    starts = frame_starts(log)
    damaged_frame = len(starts) - 3  # the frame of ids[1]; ids[2] and ids[3] come after it
    raw = bytearray(log.read_bytes())
    raw[starts[damaged_frame] + FRAME_HEADER.size + 5] ^= 0x08
    log.write_bytes(bytes(raw))

    report = check_region(data, "AB")
    assert report.status == "damaged" and report.position == damaged_frame
    assert [f.intact for f in report.lost] == [False, True, True]
    assert [f.position for f in report.lost] == [damaged_frame + 1, damaged_frame + 2, damaged_frame + 3]
    assert set(ids[1:]) <= set(report.lost_bookings)
    assert ids[0] not in report.lost_bookings
    assert log.read_bytes() == bytes(raw)  # check changes nothing

    done = tandtid("journal", "check", "--data", str(data))
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["region"], r["status"]) for r in lines] == [("AB", "damaged")]


async def test_repair_cuts_at_the_last_good_frame_and_keeps_the_bytes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = await booked_journal(data)
    log = data / "journal" / "AB.log"
    raw = bytearray(log.read_bytes())
    raw[-4] ^= 0x01  # the last frame: ids[3]
    log.write_bytes(bytes(raw))
    cut_at = frame_starts(log)[-1]

    done = tandtid("journal", "repair", "--data", str(data), "--region", "AB")
    assert done.returncode == 0, done.stderr
    (report,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert report["repaired"] is True and report["lost_bookings"] == [ids[3]]
    assert log.read_bytes() == bytes(raw[:cut_at])
    kept = [p for p in (data / "set-aside").iterdir() if p.name.startswith("AB.log.")]
    assert [p.read_bytes() for p in kept] == [bytes(raw[cut_at:])]

    journal = FileJournal(data)
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW)
    await actor.start()
    assert [actor.state.booking(b) is not None for b in ids] == [True, True, True, False]
    await actor.stop()
    await journal.close()
    assert check_region(data, "AB").status == "ok"


async def test_repair_sets_aside_a_snapshot_past_the_cut(tmp_path: Path) -> None:
    data = tmp_path / "data"
    journal = FileJournal(data)
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW)
    await actor.start()
    for command in setup_commands():
        await actor.submit(command)
    await actor.submit(Book("AB-bsnap0001", "p1", "AB-c1-r1", "child_checkup", FIRST_DAY, CELL_0900))
    await actor.snapshot_now()
    await actor.stop()
    await journal.close()
    log = data / "journal" / "AB.log"
    raw = bytearray(log.read_bytes())
    raw[-4] ^= 0x01
    log.write_bytes(bytes(raw))

    report = repair_region(data, "AB")
    assert report.repaired and report.lost_bookings == ["AB-bsnap0001"]
    assert not (data / "snapshots" / "AB.snap").exists()
    assert any(name.startswith("AB.snap.") for name in report.set_aside)
    journal = FileJournal(data)
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW)
    await actor.start()
    assert actor.state.booking("AB-bsnap0001") is None and actor.position == report.position
    await actor.stop()
    await journal.close()


async def test_a_torn_tail_is_not_damage(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await booked_journal(data, bookings=1)
    log = data / "journal" / "AB.log"
    os.truncate(log, log.stat().st_size - 3)
    report = check_region(data, "AB")
    assert report.status == "torn-tail" and report.lost == []
    assert tandtid("journal", "check", "--data", str(data)).returncode == 0
