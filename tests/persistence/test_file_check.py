"""Integration tests (real files, the real ``tandtid journal`` command): check reports a
damaged region with the booking ids a repair would cut; repair cuts at the last good frame,
keeps every cut byte in set-aside/, and the region then starts from what is left."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from engine.commands import Book
from persistence import commit_log
from persistence.file_check import check_region, repair_region
from persistence.file_journal import FRAME_HEADER, FileJournal
from server.regions.actor import Lifecycle, RegionActor
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands
from tests.support.served import tandtid

REPO = Path(__file__).resolve().parents[2]


async def booked_journal(data: Path, bookings: int = 4, *, crashed: Path | None = None) -> list[str]:
    """Catalog + ``bookings`` bookings in AB, one journal frame each; their ids, in order.
    ``crashed``: then one append to O, and a copy of ``data`` there before the journal closes
    (a crash: the commit log still holds every frame, no checkpoint emptied it)."""
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
    if crashed is not None:
        await journal.append("O", 1, b"o-after-ab")
        shutil.copytree(data, crashed)
    await actor.stop()
    await journal.close()
    return ids


def frame_starts(log: Path) -> list[int]:
    data, off, starts = log.read_bytes(), 0, []
    while off < len(data):
        starts.append(off)
        off += FRAME_HEADER.size + FRAME_HEADER.unpack_from(data, off)[2]
    return starts


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


# -- the group-commit log after a power loss ---------------------------------------------------


async def power_lost(tmp_path: Path, bookings: int = 4) -> tuple[Path, list[str]]:
    """AB booked (one frame per booking), then one append to O; the machine dies: the copy
    returned has the fsynced commit log but region files whose unsynced tails are gone (AB.log
    lacks its last two frames, O.log never reached the disk)."""
    crashed = tmp_path / "data"
    ids = await booked_journal(tmp_path / "live", bookings, crashed=crashed)
    log = crashed / "journal" / "AB.log"
    log.write_bytes(log.read_bytes()[: frame_starts(log)[-2]])
    (crashed / "journal" / "O.log").unlink()
    return crashed, ids


def commit_records(path: Path) -> list[tuple[int, str, int]]:
    """(offset, region, position) of every record of an intact commit log."""
    data, off, found = path.read_bytes(), 0, []
    while off < len(data):
        _magic, _crc, region, position, length = commit_log.RECORD_HEADER.unpack_from(data, off)
        found.append((off, region.rstrip(b"\0").decode(), position))
        off += commit_log.RECORD_HEADER.size + length
    return found


def damage_record(path: Path, region: str, position: int, at: int) -> None:
    """Flip one bit ``at`` bytes into the record of ``region``'s ``position``."""
    (offset,) = [off for off, name, pos in commit_records(path) if (name, pos) == (region, position)]
    raw = bytearray(path.read_bytes())
    raw[offset + at] ^= 0x10
    path.write_bytes(bytes(raw))


async def region_after_start(data: Path, region: str = "AB") -> RegionActor:
    journal = FileJournal(data)
    await journal.open()
    actor = RegionActor(region, journal, clock=lambda: NOW)
    await actor.start(wait=False)
    with contextlib.suppress(Exception):
        await actor.wait_ready()
    return actor


async def stop(actor: RegionActor) -> None:
    await actor.stop()
    await actor.journal.close()


async def test_a_damaged_commit_log_record_a_region_file_lacks_stops_that_region_until_repaired(
    tmp_path: Path,
) -> None:
    """After a power loss AB.log lacks its last two frames; the commit log holds both, but the
    record of the last one is damaged: AB must not serve without that acknowledged booking. The
    region before it is put back, O (whose record comes after the damage) is restored and serves."""
    data, ids = await power_lost(tmp_path)
    last = check_region(data, "AB").position + 2
    damage_record(data / "journal" / "commit.log", "AB", last, commit_log.RECORD_HEADER.size + 40)

    for start in range(2):  # and it stays stopped on the next start too
        actor = await region_after_start(data)
        try:
            assert actor.lifecycle is Lifecycle.FAILED and "commit log" in (actor.failure or "")
            assert [e.payload async for e in actor.journal.read("O")] == [b"o-after-ab"]
            if start == 0:
                assert "stopped until repaired: AB" in " ".join(actor.journal.problems()["commit.log"])
        finally:
            await stop(actor)

    report = check_region(data, "AB")
    assert report.status == "damaged" and report.position == last - 1
    assert [(f.source, f.position) for f in report.lost] == [("commit.log", last)]
    assert report.lost[0].booked == [ids[-1]]  # read from the damaged record's bytes
    done = tandtid("journal", "check", "--data", str(data), "--region", "AB")
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "damaged"

    done = tandtid("journal", "repair", "--data", str(data), "--region", "AB")
    assert done.returncode == 0, done.stderr
    assert any(n.startswith("AB.commit-damage.") for n in json.loads(done.stdout)["set_aside"])
    actor = await region_after_start(data)
    try:
        assert actor.ready
        assert [actor.state.booking(b) is not None for b in ids] == [True, True, True, False]
    finally:
        await stop(actor)
    assert check_region(data, "AB").status == "ok"


async def test_a_damaged_commit_log_record_the_region_file_has_stops_nothing(tmp_path: Path) -> None:
    """A crash without a power loss: the region files kept every frame; the damaged record
    held nothing they lack, so every region serves (the log is still kept and reported)."""
    data, ids = await power_lost(tmp_path)
    live_ab = (tmp_path / "live" / "journal" / "AB.log").read_bytes()
    (data / "journal" / "AB.log").write_bytes(live_ab)
    damage_record(data / "journal" / "commit.log", "AB", len(frame_starts(data / "journal" / "AB.log")), 30)
    actor = await region_after_start(data)
    try:
        assert actor.ready and all(actor.state.booking(b) is not None for b in ids)
        assert "damaged" in " ".join(actor.journal.problems()["commit.log"])
    finally:
        await stop(actor)


async def test_a_commit_log_record_whose_region_is_damaged_stops_the_region_that_ends_before_it(
    tmp_path: Path,
) -> None:
    """The record's region field is damaged, its frame is intact (position P): only a region
    whose file ends at P - 1 can lack it (restore put back everything else). O, ending at 1,
    serves."""
    data, _ids = await power_lost(tmp_path)
    last = check_region(data, "AB").position + 2
    damage_record(data / "journal" / "commit.log", "AB", last, 8)  # inside the region field
    journal = FileJournal(data)
    await journal.open()
    try:
        assert journal.damage("AB") is not None and journal.damage("O") is None
    finally:
        await journal.close()


async def test_repair_before_any_start_restores_from_the_commit_log_instead_of_cutting(
    tmp_path: Path,
) -> None:
    """``journal repair`` run on a crashed directory no server has opened since: the damaged
    frame and the lost tail are in the commit log, so nothing is cut and nothing is lost."""
    data, ids = await power_lost(tmp_path)
    log = data / "journal" / "AB.log"
    raw = bytearray(log.read_bytes())
    raw[frame_starts(log)[-1] + FRAME_HEADER.size + 3] ^= 0x01  # AB's last remaining frame
    log.write_bytes(bytes(raw))
    report = check_region(data, "AB")
    assert report.status == "damaged" and report.restorable  # and says the commit log holds it

    done = tandtid("journal", "repair", "--data", str(data))
    assert done.returncode == 0, done.stderr
    reports = {r["region"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert reports["AB"]["status"] == "ok" and reports["AB"]["lost_bookings"] == []
    assert not (data / "set-aside").exists() or not any((data / "set-aside").glob("AB.log.*"))
    actor = await region_after_start(data)
    try:
        assert actor.ready and all(actor.state.booking(b) is not None for b in ids)
    finally:
        await stop(actor)


async def test_no_flipped_bit_in_the_commit_log_after_a_power_loss_loses_a_booking_silently(
    tmp_path: Path,
) -> None:
    """Every byte of AB's last two commit-log records (whose frames AB.log lost), one bit each:
    the start either puts back every booking or stops AB (and check lists what it may lack)."""
    clean, ids = await power_lost(tmp_path / "clean")
    log = clean / "journal" / "commit.log"
    last = check_region(clean, "AB").position + 2
    (start, _, _), *_ = [r for r in commit_records(log) if r[1:] == ("AB", last - 1)]
    end = len(log.read_bytes())
    raw = log.read_bytes()
    case = tmp_path / "case"
    for at in range(start, end, 3):
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(clean, case)
        damaged = bytearray(raw)
        damaged[at] ^= 1 << (at % 8)
        (case / "journal" / "commit.log").write_bytes(bytes(damaged))
        journal = FileJournal(case)
        await journal.open()
        try:
            if journal.damage("AB") is None:
                assert await journal.last_position("AB") == last, at
            else:
                report = check_region(case, "AB")
                assert report.status == "damaged" and report.lost, at
        finally:
            await journal.close()


async def test_a_flipped_length_in_the_last_record_before_a_torn_round_is_damage_not_a_torn_round(
    tmp_path: Path,
) -> None:
    """O's round was interrupted (its record is cut short: never acknowledged) and one bit of the
    length field of AB's last record (acknowledged, its frame lost with AB.log's tail) flipped.
    The bytes from that record on are no longer one whole record, but they begin with AB's whole,
    intact frame: damage, not a torn round. Was: taken for a torn round, AB served without its
    last booking and nobody was told. Every bit of the length field."""
    clean, ids = await power_lost(tmp_path / "clean")
    log = clean / "journal" / "commit.log"
    last = check_region(clean, "AB").position + 2
    records = commit_records(log)
    ((ab_start, _, _),) = [r for r in records if r[1:] == ("AB", last)]
    o_start, o_region, _ = records[-1]
    assert o_region == "O"
    torn = log.read_bytes()[: o_start + commit_log.RECORD_HEADER.size + 5]  # O's record cut short
    length_field = ab_start + commit_log.RECORD_HEADER.size - 4
    case = tmp_path / "case"
    for at in range(length_field, length_field + 4):
        for bit in range(8):
            shutil.rmtree(case, ignore_errors=True)
            shutil.copytree(clean, case)
            damaged = bytearray(torn)
            damaged[at] ^= 1 << bit
            (case / "journal" / "commit.log").write_bytes(bytes(damaged))
            journal = FileJournal(case)
            await journal.open()
            try:
                if journal.damage("AB") is None:  # only if the whole frame was put back
                    assert await journal.last_position("AB") == last, (at, bit)
                else:
                    assert ids[-1] in check_region(case, "AB").lost_bookings, (at, bit)
            finally:
                await journal.close()
