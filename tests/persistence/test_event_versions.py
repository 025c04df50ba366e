"""Unit + integration tests: journals written by earlier releases stay readable.

``fixtures/journal-v1/`` is a FileJournal written by the release before events carried
versions (``fixtures/make_journal_v1.py`` made it, with every event kind that release
had); ``fixtures/journal-v1.json`` is what it said then. Today's code must replay it to
the same facts and the same bookings, and keep appending after it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.events import from_record
from persistence.codec import unpack_events
from persistence.file_journal import FileJournal
from server.regions.actor import RegionActor
from tests.support.catalog import NOW

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def old_journal(tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(FIXTURES / "journal-v1", copy)
    return copy


def expected() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "journal-v1.json").read_text())
    return data


async def test_every_old_event_reads_as_it_was_written(old_journal: Path) -> None:
    journal = FileJournal(old_journal, read_only=True)
    await journal.open()
    try:
        events = [from_record(r) async for e in journal.read("AB") for r in unpack_events(e.payload)]
    finally:
        await journal.close()
    then = expected()["events"]
    assert [e.KIND for e in events] == [item["kind"] for item in then]
    assert len({item["kind"] for item in then}) == 16  # every kind of that release
    for event, item in zip(events, then, strict=True):
        for name, value in item["fields"].items():  # fields added since keep their defaults
            assert getattr(event, name) == value, (event.KIND, name)


async def test_an_old_journal_replays_and_takes_new_appends(old_journal: Path) -> None:
    from engine.commands import Book
    from tests.support.catalog import CELL_0900, FIRST_DAY

    journal = FileJournal(old_journal)
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: NOW)
    await actor.start()
    bookings = await actor.query(
        lambda s: {b.id: b.status for b in sorted(s.all_bookings(), key=lambda b: b.id)}
    )
    assert bookings == expected()["bookings"]
    await actor.submit(Book("AB-bnew00001", "p1", "AB-c1-r2", "checkup", FIRST_DAY + 4, CELL_0900))
    before = actor.state.to_snapshot()
    await actor.stop()
    await journal.close()

    again = FileJournal(old_journal)
    await again.open()
    actor = RegionActor("AB", again, clock=lambda: NOW)
    await actor.start()
    assert actor.state.to_snapshot() == before  # old and new records replay together
    await actor.stop()
    await again.close()
