"""Integration tests: the notifier over a real FileJournal, a real SMTP server (aiosmtpd, in this
process) and a real notifier process killed with SIGKILL.

- every expected e-mail arrives across a SIGKILL and a restart, including entries appended
  while the restarted notifier tails the journal from another process (with its ledger and the
  accounts in SQLite files, and with ``--redis``: journal, ledger and accounts in a real
  redis-server): at least once, and a second copy only of a message the SMTP server accepted
  before the kill but the ledger had not recorded yet, with the same Message-ID (the receiving
  side drops it);
- reminders go out at the right instant across the October 2026 DST change (fake clock);
- moved and cancelled bookings do not get stale reminders;
- with no SMTP host, messages land in the outbox, one .eml per key, readable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from engine.calendar import TZ, cell_epoch, day_of
from engine.events import Booked, Cancelled, ClinicRegistered, Event, Rescheduled, to_record
from engine.model import resource_to_record
from engine.records import Booking, BookingStatus
from persistence.codec import pack_events
from persistence.file_journal import FileJournal
from persistence.journal import Journal
from persistence.redis_journal import RedisStreamJournal
from server import runtime
from server import serve as serve_module
from server.consumers.notify import notifier as notifier_module
from server.consumers.notify.ledger import Ledger
from server.consumers.notify.mailer import MailConfig, OutboxMailer, SmtpMailer
from server.consumers.notify.messages import KEY_HEADER, Mail, compose, message_id
from server.consumers.notify.notifier import Notifier
from server.consumers.notify.outbox import Outbox, OutboxDamaged, encode, file_name
from server.consumers.notify.reminders import Reminder, Schedule, parse_leads
from server.identity.accounts import AccountStore, Role
from server.stores import open_accounts, open_ledger
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, clinic
from tests.support.smtp import Inbox, smtp_server
from tests.support.stores import StoreBackend
from tests.support.waiting import eventually, eventually_sync

REPO = Path(__file__).resolve().parents[2]
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
WAIT_S = 30.0  # scaled by eventually_sync; the process waits below are bounds, not assertions


# -- a real SMTP server -----------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as server:
        yield server


# -- journal fixtures -------------------------------------------------------------------------------


def registered(region: str) -> ClinicRegistered:
    c, resources = clinic(region, 1)
    return ClinicRegistered(c.to_record(), [resource_to_record(r) for r in resources])


def booked(booking_id: str, patient: str, region: str, day: int, cell: int, at: int = NOW) -> Booked:
    return Booked(
        booking_id, patient, f"{region}-c1", f"{region}-c1-r1", "checkup", day, cell, 2, at, "", "", ""
    )


async def append(journal: Journal, region: str, *events: Event) -> int:
    return await journal.append(region, 1, pack_events([to_record(e) for e in events]))


def expected_keys(
    batches: list[tuple[str, int, list[Event]]], patients_with_accounts: set[str], owners: dict[str, str]
) -> set[str]:
    kinds = {Booked: "booked", Cancelled: "cancelled", Rescheduled: "rescheduled"}
    keys = set()
    for region, position, events in batches:
        for index, event in enumerate(events):
            kind = kinds.get(type(event))
            if kind is not None and owners[event.booking_id] in patients_with_accounts:  # type: ignore[union-attr]
                keys.add(f"{region}:{position}:{index}:{kind}")
    return keys


def cursors(data: Path, redis_url: str | None = None) -> dict[str, int]:
    if redis_url is not None:
        ledger = open_ledger(data, redis_url)
        try:
            return ledger.cursors()
        finally:
            ledger.close()
    path = data / "notify.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    try:
        return {r: p for r, p in db.execute("SELECT region, position FROM cursors")}
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def start_notifier(
    data: Path, smtp_port: int, log: Path, redis_url: str | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TANDTID_SMTP_HOST": "127.0.0.1",
        "TANDTID_SMTP_PORT": str(smtp_port),
        "TANDTID_REMINDERS": "",
        "PYTHONPATH": str(REPO),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.consumers.notify",
                "--data",
                str(data),
                "--regions",
                "AB,M",
                *(["--redis", redis_url] if redis_url else []),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


# -- at least once across SIGKILL, a duplicate only with the same Message-ID ----------------------------


@pytest.mark.slow
async def test_sigkill_and_restart_send_every_email_and_repeat_none_but_the_last_accepted(
    tmp_path: Path, smtp: tuple[Inbox, int], backend: StoreBackend
) -> None:
    inbox, port = smtp
    data, url = tmp_path / "data", backend.redis_url
    accounts = open_accounts(data, url, hasher=FAST_HASHER)
    patients = [
        accounts.create_user(f"p{i}@example.test", "password-123", f"Patient {i}", Role.PATIENT).id
        for i in range(4)
    ]
    accounts.close()
    ghost = "u_without_account"
    journal: Journal = RedisStreamJournal(url) if url else FileJournal(data)
    await journal.open()
    batches: list[tuple[str, int, list[Event]]] = []
    owners: dict[str, str] = {}

    async def add(region: str, *events: Event) -> None:
        position = await append(journal, region, *events)
        batches.append((region, position, list(events)))

    try:
        for region in ("AB", "M"):
            await add(region, registered(region))
        n = 0
        for region, count in (("AB", 24), ("M", 10)):
            for i in range(count):
                n += 1
                patient = ghost if n == 5 else patients[n % len(patients)]
                booking_id = f"{region}-b{n}"
                owners[booking_id] = patient
                # some entries hold two bookings (one actor batch), so keys with index 1 occur
                if i % 6 == 5:
                    n += 1
                    second = f"{region}-b{n}"
                    owners[second] = patients[n % len(patients)]
                    await add(
                        region,
                        booked(booking_id, patient, region, FIRST_DAY + i % 5, CELL_0900 + 2 * i),
                        booked(second, owners[second], region, FIRST_DAY + 5, CELL_0900 + 2 * i),
                    )
                else:
                    await add(
                        region, booked(booking_id, patient, region, FIRST_DAY + i % 5, CELL_0900 + 2 * i)
                    )
        await add("AB", Cancelled("AB-b2", "clinic", NOW + 60, NOW + 660))
        await add("AB", Rescheduled("AB-b3", "AB-c1-r2", FIRST_DAY + 1, CELL_0900, NOW + 60))
        await add("M", Cancelled(f"M-b{n}", "patient", NOW + 60, 0))

        wanted = expected_keys(batches, set(patients), owners)
        assert len(wanted) > 30

        inbox.hold_after = 12
        log = tmp_path / "notifier.log"
        first = start_notifier(data, port, log, url)
        try:
            eventually_sync(
                inbox.holding.is_set, timeout=WAIT_S, what="the notifier to be in the middle of sending"
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(WAIT_S)
        assert first.returncode == -signal.SIGKILL
        inbox.hold_after = None
        inbox.release.set()
        before_kill = set(inbox.keys())  # accepted by SMTP; the ledger may lack the last of them
        assert 12 <= len(before_kill) < len(wanted)

        second = start_notifier(data, port, log, url)
        try:
            last = {r: max(p for reg, p, _ in batches if reg == r) for r in ("AB", "M")}
            eventually_sync(
                lambda: (
                    set(inbox.keys()) >= wanted
                    and all(cursors(data, url).get(r, 0) >= p for r, p in last.items())
                ),
                timeout=WAIT_S,
                what="every e-mail after the restart",
            )

            # the restarted notifier tails the journal another process appends to
            owners["AB-b900"] = patients[0]
            await add("AB", booked("AB-b900", patients[0], "AB", FIRST_DAY + 2, CELL_0900 + 8))
            wanted |= {f"AB:{batches[-1][1]}:0:booked"}
            eventually_sync(
                lambda: set(inbox.keys()) >= wanted and cursors(data, url).get("AB", 0) >= batches[-1][1],
                timeout=WAIT_S,
                what="the e-mail of a booking journaled while the notifier runs",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(WAIT_S)
        assert second.returncode == 0, log.read_text()
    finally:
        await journal.close()

    counts = Counter(inbox.keys())
    assert set(counts) == wanted  # none missing
    # At least once: a message accepted between SMTP's 250 and the ledger's commit when the kill
    # came is sent again after the restart. Only such a message: never one the ledger recorded.
    repeated = {k for k, c in counts.items() if c > 1}
    assert repeated <= before_kill, sorted(repeated - before_kill)
    for message in inbox.messages:  # a repeat carries the same Message-ID as the first copy
        key = str(message[KEY_HEADER])
        assert message["Message-ID"] == message_id(key)
        attachments = list(message.iter_attachments())
        assert [a.get_content_type() for a in attachments] == ["text/calendar"]
        assert "BEGIN:VEVENT" in attachments[0].get_content()
    cancelled = next(
        m for m in inbox.messages if m[KEY_HEADER].endswith(":cancelled") and "AB" in m[KEY_HEADER]
    )
    assert "av kliniken" in cancelled.get_body(preferencelist=("plain",)).get_content()
    # personal data stays out of the log
    assert "@example.test" not in log.read_text()


# -- reminders across the October DST change ------------------------------------------------------------


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_reminders_at_the_right_local_time_across_october_dst(
    tmp_path: Path, smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, port = smtp
    # due reminders are taken in chunks (yielding between): one per chunk here, so the two due
    # together on Tuesday go out over two chunks of one send_due_reminders call
    monkeypatch.setattr(notifier_module, "PLAN_CHUNK", 1)
    data = tmp_path / "data"
    accounts = AccountStore(data / "accounts.sqlite3", hasher=FAST_HASHER)
    patient = accounts.create_user("dst@example.test", "password-123", "Dst Patient", Role.PATIENT).id
    monday = day_of(datetime(2026, 10, 26).date())
    nine = 9 * 4
    start = cell_epoch(monday, nine, 15)
    assert start == utc(2026, 10, 26, 8, 0)  # 09:00 CET (+01:00)
    booked_at = int(utc(2026, 10, 20, 10, 0))
    journal = FileJournal(data)
    await journal.open()
    await append(journal, "AB", registered("AB"))
    await append(journal, "AB", booked("AB-b1", patient, "AB", monday, nine, at=booked_at))
    await append(journal, "AB", booked("AB-b2", patient, "AB", monday, nine + 8, at=booked_at))
    await append(journal, "AB", booked("AB-b3", patient, "AB", monday, nine + 16, at=booked_at))
    await append(
        journal,
        "AB",
        Rescheduled("AB-b2", "AB-c1-r1", monday + 1, nine, booked_at + 60),
        Cancelled("AB-b3", "patient", booked_at + 60, 0),
    )
    clock = Clock(utc(2026, 10, 24, 12, 0))
    ledger = Ledger(data / "notify.sqlite3")
    notifier = Notifier(
        journal,
        ledger=ledger,
        accounts=accounts,
        mailer=SmtpMailer(MailConfig(host="127.0.0.1", port=port)),
        clock=clock,
        regions=["AB"],
        reminder_poll_s=3600,
    )
    await notifier.start()
    try:
        await asyncio.wait_for(notifier.wait_caught_up(), WAIT_S)
        await eventually(lambda: len(inbox.keys()) == 5, timeout=WAIT_S, what="the five confirmations")

        clock.now = utc(2026, 10, 25, 7, 59, 59)  # 08:59:59 local, after the clocks went back
        assert await notifier.send_due_reminders() == 0
        clock.now = utc(2026, 10, 25, 8, 0)  # 09:00 local on Sunday
        assert await notifier.send_due_reminders() == 1
        r24 = inbox.messages[-1]
        assert r24[KEY_HEADER] == f"AB-b1.{monday}.{nine}:r24"  # the booking and the time it is for
        sent_at = datetime.fromtimestamp(clock.now, TZ)
        assert (sent_at.hour, sent_at.minute, sent_at.utcoffset().total_seconds()) == (9, 0, 3600)  # type: ignore[union-attr]
        assert "om 24 timmar" in r24.get_body(preferencelist=("plain",)).get_content()

        clock.now = utc(2026, 10, 26, 5, 59, 59)
        assert await notifier.send_due_reminders() == 0
        clock.now = utc(2026, 10, 26, 6, 0)  # 07:00 local, 2 h before 09:00
        assert await notifier.send_due_reminders() == 1
        assert inbox.messages[-1][KEY_HEADER] == f"AB-b1.{monday}.{nine}:r2"
        # the cancelled booking (AB-b3) got no reminder at all; the moved one (AB-b2) none for
        # its old Monday time — only for its new Tuesday 09:00 time
        clock.now = utc(2026, 10, 27, 6, 0)  # Tuesday 07:00 local, before the moved time
        assert await notifier.send_due_reminders() == 2  # r24 (late, it fell due Monday) and r2 of AB-b2
        keys = inbox.keys()
        assert not any(k.startswith((f"AB-b2.{monday}.", "AB-b3.")) for k in keys)
        assert {k for k in keys if k.startswith("AB-b2.")} == {
            f"AB-b2.{monday + 1}.{nine}:r24",
            f"AB-b2.{monday + 1}.{nine}:r2",
        }
        assert sum(1 for k in keys if k.endswith((":r24", ":r2"))) == 4
        # nothing twice: asking again sends nothing
        assert await notifier.send_due_reminders() == 0
    finally:
        await notifier.stop()
        ledger.close()
        accounts.close()
        await journal.close()


async def test_a_composed_message_reaches_a_real_smtp_server_as_it_was_composed(
    smtp: tuple[Inbox, int],
) -> None:
    """The bytes go over SMTP unchanged (dot-stuffing undone by the server), under the envelope
    the message names; the server's parser reads the same headers and text."""
    inbox, port = smtp
    c, _ = clinic("AB", 1)
    booking = Booking(
        "AB-b1", "p1", "AB-c1", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900, 2, BookingStatus.BOOKED, NOW
    )
    mail = compose(
        "booked",
        "AB:3:0:booked",
        booking=booking,
        clinic=c,
        to_name="Åsa Öberg",
        to_email="asa@example.test",
        sender="Tandtid Väst <no-reply@example.test>",
        now_s=NOW,
    )
    assert await SmtpMailer(MailConfig(host="127.0.0.1", port=port)).send(mail) == "smtp"
    assert inbox.envelopes == [("no-reply@example.test", ["asa@example.test"], mail.data)]
    (message,) = inbox.messages
    assert (message["From"], message["To"], message[KEY_HEADER]) == (
        "Tandtid Väst <no-reply@example.test>",
        "Åsa Öberg <asa@example.test>",
        "AB:3:0:booked",
    )
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().startswith("Hej Åsa Öberg,\r\n\r\nDin tid är bokad.")


async def test_the_first_plan_of_every_region_runs_once_inside_first_plan(tmp_path: Path) -> None:
    """``tandtid serve`` pauses the collector around the notifier's first plan and freezes what it
    made (``first_plan``): entered once, left when the reminders of the bookings already
    journalled are in the schedule."""
    data = tmp_path / "data"
    accounts = AccountStore(data / "accounts.sqlite3", hasher=FAST_HASHER)
    journal = FileJournal(data)
    await journal.open()
    monday = day_of(datetime(2026, 10, 26).date())
    await append(journal, "AB", registered("AB"))
    await append(
        journal, "AB", booked("AB-b1", "u_nobody", "AB", monday, 9 * 4, at=int(utc(2026, 10, 20, 10, 0)))
    )
    ledger = Ledger(data / "notify.sqlite3")
    notifier = Notifier(
        journal,
        ledger=ledger,
        accounts=accounts,
        mailer=OutboxMailer(Outbox(data / "outbox")),
        clock=Clock(utc(2026, 10, 25, 12, 0)),  # the appointment is ~20 h away: both reminders planned
        regions=["AB"],
        reminder_poll_s=0.01,
    )
    planned: list[tuple[int, int]] = []

    @contextlib.contextmanager
    def first_plan() -> Iterator[None]:
        before = len(notifier.schedule)
        yield
        planned.append((before, len(notifier.schedule)))

    notifier.first_plan = first_plan
    await notifier.start()
    try:
        await eventually(lambda: bool(planned), timeout=WAIT_S, what="the first plan")
        await asyncio.sleep(0.1)  # ten more polls
    finally:
        await notifier.stop()
        ledger.close()
        accounts.close()
        await journal.close()
    # once; the 24 h reminder was due at the first poll and went out (to nobody: no account)
    assert planned == [(0, 1)]


def test_serves_first_plan_pauses_the_collector_and_hands_the_gil_over_often_then_restores_both() -> None:
    """Threads waiting for the GIL (a sign-up's argon2 and SQLite calls) get it every 0.5 ms while
    the loop plans (they waited ~800 ms in the first sign-ups after /ready); afterwards the
    interpreter's own switch interval and collector are back."""
    before, enabled = sys.getswitchinterval(), gc.isenabled()
    with serve_module.first_plan():
        assert sys.getswitchinterval() == runtime.LONG_JOB_SWITCH_S < before
        assert not gc.isenabled()
        with runtime.threads_served_often():  # a sign-up meanwhile
            pass
        assert sys.getswitchinterval() == runtime.LONG_JOB_SWITCH_S  # the plan still runs
    gc.unfreeze()  # what the block froze: this test process's objects, back to the collector
    assert sys.getswitchinterval() == before and gc.isenabled() == enabled


def test_due_reminders_come_earliest_first_and_at_most_the_limit() -> None:
    schedule = Schedule()
    schedule.add([Reminder(100 + i, f"b{i}:r24", "AB", f"b{i}", 1, 1, 86400, 200) for i in (3, 1, 2, 9)])
    assert [r.booking_id for r in schedule.due(105, limit=2)] == ["b1", "b2"]
    assert [r.booking_id for r in schedule.due(105, limit=2)] == ["b3"]
    assert schedule.due(105) == [] and len(schedule) == 1


def test_reminder_leads_parse() -> None:
    assert parse_leads("24h,2h") == (86400, 7200)
    assert parse_leads(" 90m , 24h") == (86400, 5400)
    assert parse_leads("") == ()
    with pytest.raises(ValueError):
        parse_leads("soon")


# -- the outbox -------------------------------------------------------------------------------------------


async def test_without_smtp_messages_go_to_the_outbox_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    accounts = AccountStore(data / "accounts.sqlite3", hasher=FAST_HASHER)
    patient = accounts.create_user("outbox@example.test", "password-123", "Out Box", Role.PATIENT).id
    journal = FileJournal(data)
    await journal.open()
    await append(journal, "M", registered("M"))
    position = await append(journal, "M", booked("M-b1", patient, "M", FIRST_DAY, CELL_0900))
    outbox = Outbox(data / "outbox")

    async def run_once() -> None:
        ledger = Ledger(data / "notify.sqlite3")
        notifier = Notifier(
            journal,
            ledger=ledger,
            accounts=accounts,
            mailer=OutboxMailer(outbox),
            clock=Clock(NOW),
            regions=["M"],
            reminder_poll_s=3600,
        )
        await notifier.start()
        try:
            await asyncio.wait_for(notifier.wait_caught_up(), WAIT_S)
            await eventually(lambda: ledger.cursor("M") >= position, timeout=WAIT_S, what="the cursor")
        finally:
            await notifier.stop()
            ledger.close()

    try:
        await run_once()
        await run_once()  # a restart sends nothing again
    finally:
        accounts.close()
        await journal.close()
    names = outbox.names()
    assert names == [f"M_{position}_0_booked.eml"]
    view = outbox.view(names[0])
    assert view is not None
    assert view["key"] == f"M:{position}:0:booked"
    assert view["attachments"] == [{"filename": "M-b1.ics", "content_type": "text/calendar"}]
    assert "Bokningsnummer: M-b1" in view["text"]
    assert outbox.view("../accounts.sqlite3") is None


def _mail(key: str, text: str = "Hej") -> Mail:
    return Mail(
        key,
        "tandtid@example.test",
        "patient@example.test",
        f"X-Tandtid-Key: {key}\r\n\r\n{text}\r\n".encode(),
    )


def test_the_outbox_is_one_log_written_once_per_name_by_every_writer(tmp_path: Path) -> None:
    """Two outboxes on one directory (the server's and a notifier's, or two processes): each sees
    what the other wrote, a name is written once, the newest comes first."""
    first, second = Outbox(tmp_path / "outbox"), Outbox(tmp_path / "outbox")
    assert first.names() == [] and first.read("AB_1_0_booked.eml") is None
    assert first.put_many([_mail("AB:1:0:booked"), _mail("AB:1:0:booked"), _mail("AB:2:0:booked")]) == 2
    assert second.put_many([_mail("AB:2:0:booked", "again"), _mail("AB:3:0:booked")]) == 1
    assert not first.put(_mail("AB:3:0:booked"))
    assert first.names() == ["AB_3_0_booked.eml", "AB_2_0_booked.eml", "AB_1_0_booked.eml"]
    message = second.read("AB_2_0_booked.eml")
    assert message is not None and message.get_content().strip() == "Hej"
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == ["messages.log"]
    assert (tmp_path / "outbox" / "messages.log").stat().st_mode & 0o777 == 0o600


def test_the_outbox_cuts_a_write_a_crash_interrupted_and_writes_its_batch_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Outbox(tmp_path).put_many([_mail("AB:1:0:booked")])
    log = tmp_path / "messages.log"
    whole = log.stat().st_size
    cut = encode("AB_2_0_booked.eml", _mail("AB:2:0:booked").data, 1)[:-7]
    with log.open("ab") as f:
        f.write(cut)
    reader = Outbox(tmp_path)
    assert reader.names() == ["AB_1_0_booked.eml"]  # a reader reads past nothing, cuts nothing
    assert log.stat().st_size == whole + len(cut)
    with caplog.at_level("WARNING", logger="tandtid.outbox"):
        assert Outbox(tmp_path).put_many([_mail("AB:2:0:booked")]) == 1
    assert f"cut {len(cut)} bytes" in caplog.text and "patient@example.test" not in caplog.text
    assert reader.names() == ["AB_2_0_booked.eml", "AB_1_0_booked.eml"]
    assert log.stat().st_size == 2 * whole


def test_a_damaged_record_with_whole_records_after_it_is_an_error(tmp_path: Path) -> None:
    Outbox(tmp_path).put_many([_mail("AB:1:0:booked")])
    Outbox(tmp_path).put_many([_mail("AB:2:0:booked")])
    log = tmp_path / "messages.log"
    data = bytearray(log.read_bytes())
    data[40] ^= 0xFF  # inside the first record
    log.write_bytes(bytes(data))
    with pytest.raises(OutboxDamaged, match="damaged record at byte 0"):
        Outbox(tmp_path).put_many([_mail("AB:3:0:booked")])
    with pytest.raises(OutboxDamaged):
        Outbox(tmp_path).names()
    assert log.read_bytes() == bytes(data)  # nothing cut, nothing added


def test_an_outbox_of_eml_files_moves_into_the_log_oldest_first(tmp_path: Path) -> None:
    for i, key in enumerate(["M:1:0:booked", "M:2:0:booked"]):
        path = tmp_path / file_name(key)
        path.write_bytes(_mail(key, f"old {i}").data)
        os.utime(path, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1)))
    outbox = Outbox(tmp_path)
    assert outbox.put_many([_mail("M:2:0:booked", "new"), _mail("M:3:0:booked")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messages.log"]
    assert outbox.names() == ["M_3_0_booked.eml", "M_2_0_booked.eml", "M_1_0_booked.eml"]
    message = Outbox(tmp_path).read("M_2_0_booked.eml")
    assert message is not None and message.get_content().strip() == "old 1"


def test_the_ledger_records_a_batch_and_its_cursor_in_one_step(backend: StoreBackend) -> None:
    """Both stores: the keys of an entry's messages looked up at once, recorded with the cursor
    at once; a key recorded before stays as it was, and the cursor never moves back."""
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    ledger = open_ledger(backend.data_dir, backend.redis_url)
    try:
        ledger.record_many([("AB:1:0:booked", "smtp")], NOW)
        keys = ["AB:2:0:booked", "AB:1:0:booked", "AB:2:1:cancelled"]
        assert ledger.unsent(keys) == ["AB:2:0:booked", "AB:2:1:cancelled"]
        assert ledger.unsent([]) == []
        ledger.record_many([(k, "outbox") for k in keys], NOW, region="AB", position=2)
        assert ledger.unsent(keys) == []
        assert ledger.cursor("AB") == 2 and ledger.sent_count() == 3
        ledger.record_many([], NOW, region="AB", position=1)  # never backwards
        ledger.record_many([("M:1:0:booked", "skipped:no-account")], NOW)  # no cursor given
        assert ledger.cursors() == {"AB": 2}
        assert ledger.unsent(["M:1:0:booked", "M:1:1:booked"]) == ["M:1:1:booked"]
    finally:
        ledger.close()
