"""FileJournal-specific tests (integration, real files): torn tails, corruption, failed writes."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from persistence import commit_log, file_journal
from persistence.file_journal import FRAME_HEADER, FileJournal, encode_frame
from persistence.journal import CorruptJournal, Entry, JournalUnavailable, Snapshot, StaleEpoch

PAYLOADS = [b"first-batch", b"second-batch", b"third-batch"]


async def written(directory: Path, payloads: list[bytes] = PAYLOADS, epoch: int = 1) -> Path:
    journal = FileJournal(directory)
    await journal.open()
    for payload in payloads:
        await journal.append("AB", epoch, payload)
    await journal.close()
    return directory / "journal" / "AB.log"


async def reopened(directory: Path) -> FileJournal:
    journal = FileJournal(directory)
    await journal.open()
    return journal


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[list[FileJournal]]:
    journals: list[FileJournal] = []
    yield journals
    for journal in journals:
        await journal.close()


def frame_size(payload: bytes) -> int:
    return FRAME_HEADER.size + len(payload)


async def entries(journal: FileJournal) -> list[Entry]:
    return [entry async for entry in journal.read("AB")]


async def test_truncated_mid_frame_tail_is_cut(
    tmp_path: Path, opened: list[FileJournal], caplog: pytest.LogCaptureFixture
) -> None:
    log = await written(tmp_path)
    full = log.stat().st_size
    os.truncate(log, full - 5)
    with caplog.at_level(logging.WARNING, logger="persistence.file_journal"):
        journal = await reopened(tmp_path)
    opened.append(journal)
    assert [e.payload for e in await entries(journal)] == PAYLOADS[:2]
    assert log.stat().st_size == full - frame_size(PAYLOADS[2])
    cut = frame_size(PAYLOADS[2]) - 5
    assert any("region AB" in r.getMessage() and f"cut {cut} bytes" in r.getMessage() for r in caplog.records)
    assert all(b"batch" not in r.getMessage().encode() for r in caplog.records)
    assert await journal.append("AB", 1, b"replacement") == 3
    assert [e.payload for e in await entries(journal)] == [*PAYLOADS[:2], b"replacement"]


async def test_truncated_inside_a_header_is_cut(tmp_path: Path, opened: list[FileJournal]) -> None:
    log = await written(tmp_path)
    os.truncate(log, frame_size(PAYLOADS[0]) + 7)
    journal = await reopened(tmp_path)
    opened.append(journal)
    assert [e.position for e in await entries(journal)] == [1]
    assert await journal.last_position("AB") == 1


async def test_garbage_after_last_frame_is_damage_not_a_torn_write(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    """Our writer only ever leaves a prefix of a real frame (or unwritten zeros) behind;
    anything else at the end is damage: the region stops, nothing is cut."""
    log = await written(tmp_path)
    with log.open("ab") as f:
        f.write(b"\x00\xffTTJ1 not a frame at all" * 3)
    before = log.read_bytes()
    journal = await reopened(tmp_path)
    opened.append(journal)
    assert log.read_bytes() == before
    with pytest.raises(CorruptJournal):
        await entries(journal)


async def test_unwritten_zeros_after_last_frame_are_a_torn_write(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    log = await written(tmp_path)
    full = log.stat().st_size
    with log.open("ab") as f:
        f.write(b"\x00" * 100)  # the size grew, the data never landed
    journal = await reopened(tmp_path)
    opened.append(journal)
    assert log.stat().st_size == full
    assert [e.payload for e in await entries(journal)] == PAYLOADS


async def test_torn_tail_bytes_are_kept_aside(tmp_path: Path, opened: list[FileJournal]) -> None:
    log = await written(tmp_path)
    whole = log.read_bytes()
    os.truncate(log, len(whole) - 5)
    journal = await reopened(tmp_path)
    opened.append(journal)
    aside = list((tmp_path / "set-aside").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith("AB.log.")
    assert aside[0].read_bytes() == whole[len(whole) - frame_size(PAYLOADS[2]) : len(whole) - 5]


async def test_flipped_byte_in_last_frame_is_damage_not_a_torn_write(
    tmp_path: Path, opened: list[FileJournal], caplog: pytest.LogCaptureFixture
) -> None:
    """A complete frame with a bad checksum was written whole (and maybe acknowledged):
    cutting it would silently drop a booking. The region stops; the bytes stay."""
    log = await written(tmp_path)
    data = bytearray(log.read_bytes())
    data[-3] ^= 0x40
    log.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="persistence.file_journal"):
        journal = await reopened(tmp_path)
    opened.append(journal)
    assert log.read_bytes() == bytes(data)
    assert any("region AB" in r.getMessage() and "checksum" in r.getMessage() for r in caplog.records)
    with pytest.raises(CorruptJournal):
        await entries(journal)
    with pytest.raises(CorruptJournal):
        await journal.append("AB", 1, b"never after damage")
    assert log.read_bytes() == bytes(data)
    damage = journal.damage("AB")
    assert damage is not None and damage.position == 2
    assert damage.offset == frame_size(PAYLOADS[0]) + frame_size(PAYLOADS[1])


async def test_flipped_length_in_last_frame_is_damage_not_a_torn_write(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    log = await written(tmp_path)
    data = bytearray(log.read_bytes())
    last = len(data) - frame_size(PAYLOADS[2])
    data[last + 8] ^= 0x40  # the length grows past the end of the file: looks torn, is not
    log.write_bytes(bytes(data))
    journal = await reopened(tmp_path)
    opened.append(journal)
    assert log.read_bytes() == bytes(data)
    with pytest.raises(CorruptJournal):
        await entries(journal)


async def test_flipped_byte_in_a_middle_frame_is_corrupt(tmp_path: Path, opened: list[FileJournal]) -> None:
    log = await written(tmp_path)
    data = bytearray(log.read_bytes())
    data[frame_size(PAYLOADS[0]) + FRAME_HEADER.size + 2] ^= 0x01  # inside the second payload
    log.write_bytes(bytes(data))
    before = log.stat().st_size
    journal = await reopened(tmp_path)
    opened.append(journal)
    with pytest.raises(CorruptJournal):
        await entries(journal)
    assert log.stat().st_size == before  # nothing cut when the damage is not a tail


async def test_flipped_length_in_a_middle_frame_is_corrupt(tmp_path: Path, opened: list[FileJournal]) -> None:
    log = await written(tmp_path)
    data = bytearray(log.read_bytes())
    data[frame_size(PAYLOADS[0]) + 8] ^= 0x10  # the second frame's length field
    log.write_bytes(bytes(data))
    journal = await reopened(tmp_path)
    opened.append(journal)
    with pytest.raises(CorruptJournal):
        await entries(journal)


async def test_damage_in_one_region_leaves_the_others_serving(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    log = await written(tmp_path)
    journal = await reopened(tmp_path)
    await journal.append("O", 1, b"o-batch")
    await journal.close()
    data = bytearray(log.read_bytes())
    data[frame_size(PAYLOADS[0]) + FRAME_HEADER.size + 2] ^= 0x01  # inside the second payload
    log.write_bytes(bytes(data))
    journal = await reopened(tmp_path)  # opens: the damage is AB's alone
    opened.append(journal)
    with pytest.raises(CorruptJournal):
        await entries(journal)
    assert [e.payload async for e in journal.read("O")] == [b"o-batch"]
    assert await journal.append("O", 1, b"o-after") == 2
    assert log.read_bytes() == bytes(data)


async def test_a_corrupt_snapshot_falls_back_to_the_previous_one(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    journal = await reopened(tmp_path)
    opened.append(journal)
    await journal.save_snapshot("AB", Snapshot(5, b"older"))
    await journal.save_snapshot("AB", Snapshot(9, b"newer"))
    assert await journal.load_snapshot("AB") == Snapshot(9, b"newer")
    snap = tmp_path / "snapshots" / "AB.snap"
    data = bytearray(snap.read_bytes())
    data[-1] ^= 0xFF
    snap.write_bytes(bytes(data))
    assert await journal.load_snapshot("AB") == Snapshot(5, b"older")
    kept = [p for p in (tmp_path / "set-aside").iterdir() if p.name.startswith("AB.snap")]
    assert [p.read_bytes() for p in kept] == [bytes(data)]  # the damaged file is kept, not deleted
    assert journal.problems() == {
        "AB": [f"snapshot AB.snap was damaged: set aside as set-aside/{kept[0].name}"]
    }


async def test_stale_snapshot_temp_files_are_removed_on_open(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    (tmp_path / "snapshots").mkdir(parents=True)
    dead_pid = 2**22 + 12345  # above pid_max on Linux: no such process
    stale = tmp_path / "snapshots" / f".AB.snap.{dead_pid}.tmp"
    stale.write_bytes(b"half a snapshot")
    journal = await reopened(tmp_path)
    opened.append(journal)
    assert not stale.exists()


async def test_epoch_survives_restart_even_when_frames_are_cut(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    log = await written(tmp_path, epoch=7)
    os.truncate(log, 3)  # every frame gone: only the epoch file remembers
    journal = await reopened(tmp_path)
    opened.append(journal)
    assert await journal.last_position("AB") == 0
    with pytest.raises(StaleEpoch):
        await journal.append("AB", 6, b"stale")
    assert await journal.append("AB", 7, b"ok") == 1


async def test_corrupt_snapshot_is_ignored(
    tmp_path: Path, opened: list[FileJournal], caplog: pytest.LogCaptureFixture
) -> None:
    journal = await reopened(tmp_path)
    opened.append(journal)
    await journal.save_snapshot("AB", Snapshot(9, b"snapshot-bytes"))
    snap = tmp_path / "snapshots" / "AB.snap"
    data = bytearray(snap.read_bytes())
    data[-1] ^= 0xFF
    snap.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="persistence.file_journal"):
        assert await journal.load_snapshot("AB") is None
    assert any("snapshot" in r.getMessage() for r in caplog.records)
    snap.write_bytes(b"xx")
    assert await journal.load_snapshot("AB") is None
    await journal.save_snapshot("AB", Snapshot(10, b"fresh"))
    assert await journal.load_snapshot("AB") == Snapshot(10, b"fresh")
    assert [p.name for p in snap.parent.iterdir()] == ["AB.snap"]  # no temp files left behind


@pytest.mark.usefixtures("file_size_limit")
async def test_failed_write_leaves_no_partial_frame(tmp_path: Path, opened: list[FileJournal]) -> None:
    journal = await reopened(tmp_path)
    opened.append(journal)
    await journal.append("AB", 1, b"durable")
    log = tmp_path / "journal" / "AB.log"
    size = log.stat().st_size
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))  # the next frame fits only partly
    try:
        with pytest.raises(JournalUnavailable):
            await journal.append("AB", 1, b"x" * 100)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
    assert log.stat().st_size == size
    assert [e.payload for e in await entries(journal)] == [b"durable"]
    assert await journal.append("AB", 1, b"after the disk recovered") == 2
    await journal.close()
    again = await reopened(tmp_path)
    opened.append(again)
    assert [e.payload for e in await entries(again)] == [b"durable", b"after the disk recovered"]


async def test_second_journal_object_tails_by_polling(tmp_path: Path, opened: list[FileJournal]) -> None:
    """Another process appending is seen by polling the file (here: another journal object)."""
    writer = await reopened(tmp_path)
    reader = await reopened(tmp_path)
    opened += [writer, reader]
    await writer.append("AB", 1, b"one")
    tail = reader.tail("AB")
    first = await asyncio.wait_for(anext(tail), 5)
    second = asyncio.ensure_future(anext(tail))
    await writer.append("AB", 1, b"two")
    assert first == Entry(1, 1, b"one")
    assert await asyncio.wait_for(second, 5) == Entry(2, 1, b"two")
    await tail.aclose()
    assert await reader.last_position("AB") == 2


async def test_a_follower_waiting_on_another_objects_region_opens_the_file_only_when_it_grew(
    tmp_path: Path, opened: list[FileJournal], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polling a region this object does not append to looks at the file's size (no file opened,
    no worker thread) until another writer's append makes it grow; then that entry is read."""
    monkeypatch.setattr(file_journal, "TAIL_POLL_S", 0.01)
    opens: list[Path] = []
    real_open_read = file_journal._open_read
    monkeypatch.setattr(file_journal, "_open_read", lambda path: opens.append(path) or real_open_read(path))
    writer = await reopened(tmp_path)
    reader = await reopened(tmp_path)
    opened += [writer, reader]
    await writer.append("AB", 1, b"one")
    tail = reader.tail("AB")
    assert await asyncio.wait_for(anext(tail), 5) == Entry(1, 1, b"one")
    second = asyncio.ensure_future(anext(tail))
    opens.clear()
    await asyncio.sleep(0.3)  # some 30 polls with nothing new
    assert opens == [] and not second.done()
    await writer.append("AB", 1, b"two")
    assert await asyncio.wait_for(second, 5) == Entry(2, 1, b"two")
    assert opens  # read from the file
    await tail.aclose()


async def test_tail_hands_own_appends_from_memory_and_older_ones_from_the_file(
    tmp_path: Path, opened: list[FileJournal], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower in the appending process gets the newest entries from memory (the file is not
    opened for them); one further behind than memory reaches reads the file, then memory."""
    monkeypatch.setattr(file_journal, "RECENT_ENTRIES", 8)
    opens: list[Path] = []
    real_open_read = file_journal._open_read
    monkeypatch.setattr(file_journal, "_open_read", lambda path: opens.append(path) or real_open_read(path))
    journal = await reopened(tmp_path)
    opened.append(journal)
    for i in range(1, 21):
        await journal.append("AB", 1, b"early-%d" % i)
    tail = journal.tail("AB", after=3)
    got = [await asyncio.wait_for(anext(tail), 5) for _ in range(17)]
    assert [(e.position, e.payload) for e in got] == [(i, b"early-%d" % i) for i in range(4, 21)]
    assert opens  # positions 4..12 are no longer in memory
    opens.clear()
    for i in range(21, 41):
        nxt = asyncio.ensure_future(anext(tail))
        await journal.append("AB", 2, b"late-%d" % i)
        assert await asyncio.wait_for(nxt, 5) == Entry(i, 2, b"late-%d" % i)
    assert opens == []
    await tail.aclose()
    assert [e.payload for e in await entries(journal)][-1] == b"late-40"  # the file has them too


async def test_read_after_uses_the_index_across_many_entries(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    (tmp_path / "journal").mkdir()
    # Frames laid down directly (3000 fsynced appends would only slow the test down).
    (tmp_path / "journal" / "AB.log").write_bytes(
        b"".join(encode_frame(i, 1, str(i).encode()) for i in range(1, 3001))
    )
    again = await reopened(tmp_path)
    opened.append(again)
    for after in (0, 1023, 1024, 1025, 2047, 2048, 2999, 3000):
        got = [e.position async for e in again.read("AB", after)]
        assert got == list(range(after + 1, 3001)), after
    assert await again.append("AB", 1, b"next") == 3001


async def test_region_codes_are_validated(tmp_path: Path, opened: list[FileJournal]) -> None:
    journal = await reopened(tmp_path)
    opened.append(journal)
    with pytest.raises(ValueError):
        await journal.append("../etc", 1, b"x")


async def test_frames_larger_than_a_read_chunk(tmp_path: Path, opened: list[FileJournal]) -> None:
    big = bytes(range(256)) * (5 * 4096 + 3)  # > 4 MiB read chunk
    await written(tmp_path, [b"small", big, b"after"])
    journal = await reopened(tmp_path)
    opened.append(journal)
    assert [e.payload for e in await entries(journal)] == [b"small", big, b"after"]
    assert [e.payload async for e in journal.read("AB", 1)] == [big, b"after"]


async def test_a_read_only_reader_never_cuts_the_writers_append_in_progress(tmp_path: Path) -> None:
    log = await written(tmp_path)
    whole = log.read_bytes()
    partial = encode_frame(4, 1, b"fourth-batch-being-written")[:10]
    log.write_bytes(whole + partial)  # the writer is half-way through its next append
    reader = FileJournal(tmp_path, read_only=True)
    await reader.open()
    try:
        assert log.read_bytes() == whole + partial, "a reader must not truncate"
        assert [e.payload async for e in reader.read("AB")] == PAYLOADS
        with pytest.raises(JournalUnavailable):
            await reader.append("AB", 1, b"x")
        with pytest.raises(JournalUnavailable):
            await reader.save_snapshot("AB", Snapshot(1, b"x"))
    finally:
        await reader.close()


# -- group commit: the commit log --------------------------------------------------------


async def test_appends_of_several_regions_in_one_instant_share_one_round(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    journal = await reopened(tmp_path)
    opened.append(journal)
    regions = ["AB", "C", "M", "O", "Z"]
    for region in regions:  # a region's first append opens its file and records its epoch
        await journal.append(region, 1, b"warm-up")
    rounds = journal.rounds
    assert await asyncio.gather(*(journal.append(r, 1, b"together") for r in regions)) == [2] * 5
    assert journal.rounds == rounds + 1  # one write + fsync of the commit log for five regions
    assert (tmp_path / "journal" / "commit.log").stat().st_size > 0
    await journal.close()
    opened.remove(journal)
    assert (tmp_path / "journal" / "commit.log").stat().st_size == 0, "close checkpoints"


async def test_a_crash_that_lost_region_file_tails_is_restored_from_the_commit_log(
    tmp_path: Path, opened: list[FileJournal], caplog: pytest.LogCaptureFixture
) -> None:
    live = tmp_path / "live"
    journal = await reopened(live)
    opened.append(journal)
    for i in range(4):
        await asyncio.gather(journal.append("AB", 1, b"ab%d" % i), journal.append("O", 2, b"o%d" % i))
    # The machine dies now: what is on disk is the commit log (fsynced) and region files
    # whose unsynced tails are lost or torn.
    crashed = tmp_path / "crashed"
    shutil.copytree(live, crashed)
    ab = crashed / "journal" / "AB.log"
    ab.write_bytes(ab.read_bytes()[: 2 * frame_size(b"ab0") + 7])  # two frames and a torn third
    (crashed / "journal" / "O.log").unlink()  # never reached the disk at all
    with caplog.at_level(logging.WARNING, logger="persistence.file_journal"):
        again = await reopened(crashed)
    opened.append(again)
    assert [e.payload async for e in again.read("AB")] == [b"ab0", b"ab1", b"ab2", b"ab3"]
    assert [(e.payload, e.epoch) async for e in again.read("O")] == [(b"o%d" % i, 2) for i in range(4)]
    assert await again.append("AB", 1, b"ab4") == 5
    assert "restored 2 frames (positions 3..4)" in caplog.text
    assert "restored 4 frames (positions 1..4)" in caplog.text


async def test_a_region_frame_that_differs_from_the_commit_log_is_replaced(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    """An append retried after a failed round rewrote a position; the region file still held
    the failed round's frame when the machine died: the commit log's record wins."""
    journal = await reopened(tmp_path)
    await journal.append("AB", 1, b"kept")
    await journal.append("AB", 1, b"acknowledged")
    journal._commit_log = None  # die without the checkpoint of close()
    await journal.close()
    log = tmp_path / "journal" / "AB.log"
    log.write_bytes(log.read_bytes()[: frame_size(b"kept")] + encode_frame(2, 1, b"never-acknowledg"))
    again = await reopened(tmp_path)
    opened.append(again)
    assert [e.payload async for e in again.read("AB")] == [b"kept", b"acknowledged"]


@pytest.mark.usefixtures("file_size_limit")
async def test_a_failed_round_fails_every_append_in_it(tmp_path: Path, opened: list[FileJournal]) -> None:
    journal = await reopened(tmp_path)
    opened.append(journal)
    await asyncio.gather(journal.append("AB", 1, b"durable"), journal.append("O", 1, b"durable"))
    files = {name: tmp_path / "journal" / f"{name}.log" for name in ("AB", "O")}
    sizes = {name: path.stat().st_size for name, path in files.items()}
    commit = (tmp_path / "journal" / "commit.log").stat().st_size
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # the region files take their next frame, the commit log's record does not fit
    resource.setrlimit(resource.RLIMIT_FSIZE, (commit + 10, hard))
    try:
        results = await asyncio.gather(
            journal.append("AB", 1, b"x" * 40), journal.append("O", 1, b"y" * 40), return_exceptions=True
        )
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
    assert [type(r) for r in results] == [JournalUnavailable, JournalUnavailable]
    assert {name: path.stat().st_size for name, path in files.items()} == sizes
    assert (tmp_path / "journal" / "commit.log").stat().st_size == commit
    assert await asyncio.gather(journal.append("AB", 1, b"ab2"), journal.append("O", 1, b"o2")) == [2, 2]
    await journal.close()
    opened.remove(journal)
    again = await reopened(tmp_path)
    opened.append(again)
    assert [e.payload async for e in again.read("AB")] == [b"durable", b"ab2"]
    assert [e.payload async for e in again.read("O")] == [b"durable", b"o2"]


async def test_the_commit_log_is_checkpointed_when_it_grows(
    tmp_path: Path, opened: list[FileJournal], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit_log, "CHECKPOINT_BYTES", 1000)
    journal = await reopened(tmp_path)
    opened.append(journal)
    for i in range(40):
        await asyncio.gather(journal.append("AB", 1, b"a" * 90), journal.append("M", 1, b"m%d" % i))
    assert (tmp_path / "journal" / "commit.log").stat().st_size < 1000 + 2 * 200
    assert await journal.last_position("AB") == 40
    assert len([e async for e in journal.read("M")]) == 40


async def reopened_with_a_flip(case: Path, clean: bytes, at: int, bit: int) -> tuple[FileJournal, bytes]:
    """A fresh data directory at ``case`` whose AB.log is ``clean`` with bit ``bit`` of byte
    ``at`` flipped, opened; and those damaged bytes."""
    shutil.rmtree(case, ignore_errors=True)
    (case / "journal").mkdir(parents=True)
    damaged = bytearray(clean)
    damaged[at] ^= 1 << bit
    (case / "journal" / "AB.log").write_bytes(bytes(damaged))
    return await reopened(case), bytes(damaged)


async def test_no_flipped_bit_anywhere_is_cut_silently(tmp_path: Path) -> None:
    """Exhaustive over every byte of a small journal (two bits each): after one flipped bit
    the journal either reads back every entry it had, or reports the region damaged with
    the file untouched. It never quietly serves fewer entries."""
    log = await written(tmp_path / "clean")
    clean = log.read_bytes()
    case = tmp_path / "case"
    for at in range(len(clean)):
        for bit in (0, 7):
            journal, damaged = await reopened_with_a_flip(case, clean, at, bit)
            try:
                if journal.damage("AB") is None:
                    assert [e.payload for e in await entries(journal)] == PAYLOADS, (at, bit)
                else:
                    assert (case / "journal" / "AB.log").read_bytes() == damaged, (at, bit)
            finally:
                await journal.close()


@pytest.mark.parametrize(
    "torn",
    [encode_frame(4, 1, b"never-acknowledged")[:30], bytes(17), b"TT"],
    ids=["next-frame-prefix", "zeros", "magic-prefix"],
)
async def test_a_flipped_length_in_the_last_frame_before_a_torn_append_is_never_cut(
    tmp_path: Path, torn: bytes
) -> None:
    """An append was interrupted (it left ``torn`` after the last frame: never acknowledged)
    and one bit of the last, acknowledged frame's length field flipped. The file past the
    good frames is then no longer one whole frame, but it begins with one: damage, kept, not
    a torn tail. Was: cut with the torn bytes, the region served without that entry. Every bit
    of the length field."""
    log = await written(tmp_path / "clean")
    clean = log.read_bytes() + torn
    length_field = len(log.read_bytes()) - FRAME_HEADER.size - len(PAYLOADS[-1]) + 8
    case = tmp_path / "case"
    for at in range(length_field, length_field + 4):
        for bit in range(8):
            journal, damaged = await reopened_with_a_flip(case, clean, at, bit)
            try:
                assert journal.damage("AB") is not None, (at, bit)
                assert (case / "journal" / "AB.log").read_bytes() == damaged, (at, bit)
            finally:
                await journal.close()


async def test_a_damaged_commit_log_record_is_kept_and_reported(
    tmp_path: Path, opened: list[FileJournal]
) -> None:
    """A complete commit-log record with a bad checksum is not a torn round: its bytes are
    kept in set-aside/ (never emptied away) and /ready's journal_problems says so."""
    journal = await reopened(tmp_path)
    for i in range(3):
        await journal.append("AB", 1, b"ab%d" % i)
    journal._commit_log = None  # die without the checkpoint of close()
    await journal.close()
    path = tmp_path / "journal" / "commit.log"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04  # inside the second of three records
    path.write_bytes(bytes(data))
    again = await reopened(tmp_path)
    opened.append(again)
    kept = [p for p in (tmp_path / "set-aside").iterdir() if p.name.startswith("commit.log.")]
    assert [p.read_bytes() for p in kept] == [bytes(data)]
    assert "damaged" in " ".join(again.problems().get("commit.log", []))


async def test_a_torn_commit_log_round_is_not_reported(tmp_path: Path, opened: list[FileJournal]) -> None:
    journal = await reopened(tmp_path)
    for i in range(2):
        await journal.append("AB", 1, b"ab%d" % i)
    journal._commit_log = None
    await journal.close()
    path = tmp_path / "journal" / "commit.log"
    path.write_bytes(path.read_bytes()[:-3])  # the last round never finished
    again = await reopened(tmp_path)
    opened.append(again)
    assert again.problems() == {}
    assert not (tmp_path / "set-aside").exists() or not any(
        p.name.startswith("commit.log.") for p in (tmp_path / "set-aside").iterdir()
    )
