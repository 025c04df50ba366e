"""The notifier: tells patients by e-mail when their bookings are made, cancelled or moved,
and reminds them before their appointments. Nothing lost, nothing sent twice.

How (see ``server.consumers.feed``): per region it replays the journal into a projection, then
acts on every entry after its durable cursor (``notify.sqlite3``), then tails. Each message
has a key derived from its journal entry (``AB:12:0:booked``, reminders ``…:r24``), used as
the e-mail's Message-ID. After a message is handed over, its key is recorded as sent — in
the same SQLite transaction that moves the cursor past the entry's last message. A key
already recorded is never sent again, so a restarted notifier resumes without repeats.

The one window: a crash after the SMTP server accepted a message (its 250 reply to DATA)
and before the ledger commit (a local SQLite write, well under a millisecond of work plus
one fsync) resends that one message after restart — with the same Message-ID, so mail
systems that dedupe by it drop it. The outbox channel has no such window (the file named by
the key is the record).

Run it inside ``tandtid serve`` (``Notifier.from_env(...)``, ``await start()`` / ``stop()``) or
standalone: ``python -m server.consumers.notify --data DIR [--redis URL]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from engine.model import REGIONS
from engine.records import BookingStatus
from persistence.journal import Journal
from server.consumers.feed import Fact, PendingCursors, Projection, follow_region
from server.consumers.notify.ledger import Ledger
from server.consumers.notify.mailer import MailConfig, Mailer, MailUnavailable, Rejected, mailer_for
from server.consumers.notify.messages import TEMPLATES, compose
from server.consumers.notify.reminders import DEFAULT_LEADS, Reminder, Schedule, parse_leads, plan
from server.identity.accounts import AccountStore

log = logging.getLogger("tandtid.notify")

CURSOR_FLUSH_S = 1.0


@dataclass
class NotifierStats:
    sent: int = 0
    skipped: int = 0
    rejected: int = 0
    retries: int = 0
    reminders: int = 0


class Notifier:
    def __init__(
        self,
        journal: Journal,
        *,
        ledger: Ledger,
        accounts: AccountStore,
        mailer: Mailer,
        sender: str = MailConfig.sender,
        clock: Callable[[], float] = time.time,
        leads: tuple[int, ...] = DEFAULT_LEADS,
        regions: Iterable[str] | None = None,
        reminder_poll_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        self.journal = journal
        self.ledger = ledger
        self.accounts = accounts
        self.mailer = mailer
        self.sender = sender
        self.clock = clock
        self.leads = leads
        self.regions = tuple(regions) if regions is not None else tuple(r.code for r in REGIONS)
        self.reminder_poll_s = reminder_poll_s
        self.retry_max_s = retry_max_s
        self.projection = Projection()
        self.schedule = Schedule()
        self.stats = NotifierStats()
        self._caught_up: set[str] = set()
        self._all_caught_up = asyncio.Event()
        self._cursors = PendingCursors(self.ledger.advance, CURSOR_FLUSH_S)
        self._tasks: list[asyncio.Task[None]] = []
        self._owned: list[Callable[[], None]] = []

    @classmethod
    def from_env(
        cls,
        journal: Journal,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        accounts: AccountStore | None = None,
        clock: Callable[[], float] = time.time,
        regions: Iterable[str] | None = None,
    ) -> Notifier:
        """The notifier of a data directory: ``notify.sqlite3``, ``accounts.sqlite3``, and SMTP
        (``TANDTID_SMTP_*``) or the outbox; ``TANDTID_REMINDERS`` (default ``24h,2h``)."""
        env = dict(os.environ) if env is None else env
        config = MailConfig.from_env(env)
        leads = parse_leads(env["TANDTID_REMINDERS"]) if "TANDTID_REMINDERS" in env else DEFAULT_LEADS
        ledger = Ledger(data_dir / "notify.sqlite3")
        own_accounts = accounts is None
        store = accounts if accounts is not None else AccountStore(data_dir / "accounts.sqlite3")
        notifier = cls(
            journal,
            ledger=ledger,
            accounts=store,
            mailer=mailer_for(config, data_dir),
            sender=config.sender,
            clock=clock,
            leads=leads,
            regions=regions,
        )
        notifier._owned.append(ledger.close)
        if own_accounts:
            notifier._owned.append(store.close)
        return notifier

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        cursors = await asyncio.to_thread(self.ledger.cursors)
        for region in self.regions:
            self._tasks.append(
                asyncio.create_task(
                    follow_region(
                        self.journal,
                        region,
                        self.projection,
                        cursor=cursors.get(region, 0),
                        handle=self._handle,
                        caught_up=self._region_caught_up,
                    ),
                    name=f"notify-{region}",
                )
            )
        self._tasks.append(asyncio.create_task(self._remind_forever(), name="notify-reminders"))
        self._tasks.append(asyncio.create_task(self._cursors.flush_forever(), name="notify-cursors"))
        for task in self._tasks:
            task.add_done_callback(self._crashed)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.remove_done_callback(self._crashed)
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self._cursors.flush)
        for close in self._owned:
            close()
        self._owned.clear()

    async def wait_caught_up(self) -> None:
        """Until every region's replay has reached the journal's end as of ``start``."""
        await self._all_caught_up.wait()

    @staticmethod
    def _crashed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("notifier task %s died", task.get_name(), exc_info=task.exception())

    def _region_caught_up(self, region: str) -> None:
        self._caught_up.add(region)
        if len(self._caught_up) == len(self.regions):
            self._all_caught_up.set()

    # -- journal facts ---------------------------------------------------------------------------

    async def _handle(self, region: str, position: int, facts: list[Fact], act: bool) -> None:
        for fact in facts:
            if fact.kind in ("booked", "rescheduled"):
                try:
                    start = fact.start
                except ValueError:  # a time the calendar cannot place (never written by the engine)
                    log.warning("message %s: booking time not on the calendar; no reminders", fact.key)
                    continue
                self.schedule.add(plan(region, fact.booking.id, fact.key, start, fact.at, self.leads))
        if not act:
            return
        wanted = [f for f in facts if f.kind in TEMPLATES]
        if not wanted:
            self._cursors.note(region, position)
            return
        for i, fact in enumerate(wanted):
            last = i == len(wanted) - 1
            await self._deliver(
                fact.key, fact, region=region if last else None, position=position if last else None
            )
        self._cursors.discard(region)

    async def _deliver(
        self,
        key: str,
        fact: Fact,
        *,
        region: str | None = None,
        position: int | None = None,
        kind: str | None = None,
        lead_s: int = 0,
    ) -> None:
        """Send one message unless its key is already recorded; record it (and the cursor)."""
        if await asyncio.to_thread(self.ledger.is_sent, key):
            if region is not None and position is not None:
                await asyncio.to_thread(self.ledger.advance, region, position)
            return
        channel = await self._send(key, fact, kind or fact.kind, lead_s)
        await asyncio.to_thread(
            self.ledger.record, key, channel, self.clock(), region=region, position=position
        )

    async def _send(self, key: str, fact: Fact, kind: str, lead_s: int) -> str:
        # The account look-up (SQLite) and composing (header parsing: a third of the event loop
        # under booking load) run in a worker thread; only the hand-over is awaited here.
        message = await asyncio.to_thread(self._compose, key, fact, kind, lead_s, int(self.clock()))
        if isinstance(message, str):
            self.stats.skipped += 1
            if message == "skipped:no-account":
                log.info("message %s: no account for the patient; not sent", key)
            else:
                log.warning("message %s: cannot be composed; not sent", key)
            return message
        delay = 1.0
        while True:
            try:
                channel = await self.mailer.send(key, message)
            except Rejected:
                self.stats.rejected += 1
                log.warning("message %s: refused by the mail server for good; not retried", key)
                return "rejected"
            except MailUnavailable as exc:
                self.stats.retries += 1
                log.warning("%s; retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.stats.sent += 1
            log.info("message %s sent via %s", key, channel)
            return channel

    def _compose(self, key: str, fact: Fact, kind: str, lead_s: int, now_s: int) -> EmailMessage | str:
        """In a worker thread: the message, or the channel to record when there is none."""
        user = self.accounts.get(fact.booking.patient)
        if user is None or not user.email:
            return "skipped:no-account"
        try:
            return compose(
                kind,
                key,
                booking=fact.booking,
                clinic=fact.clinic,
                to_name=user.name,
                to_email=user.email,
                sender=self.sender,
                now_s=now_s,
                by=fact.by,
                previous=fact.previous,
                lead_s=lead_s,
            )
        except (KeyError, ValueError):  # no template, or a time the calendar cannot place
            return "skipped:uncomposable"

    # -- reminders -------------------------------------------------------------------------------

    async def send_due_reminders(self) -> int:
        """Send every reminder due now (per ``clock``) that is still current. Returns how many
        were sent. Does nothing until every region has caught up with its journal (before
        that, a booking may look current that a later entry cancels)."""
        if not self._all_caught_up.is_set():
            return 0
        now = self.clock()
        sent = 0
        for reminder in self.schedule.due(now):
            fact = self._current(reminder, now)
            if fact is None:
                continue
            await self._deliver(reminder.key, fact, kind="reminder", lead_s=reminder.lead_s)
            self.stats.reminders += 1
            sent += 1
        return sent

    def _current(self, reminder: Reminder, now: float) -> Fact | None:
        """The reminder's booking as a fact, if the booking still stands at that time."""
        booking = self.projection.bookings.get(reminder.booking_id)
        if (
            booking is None
            or booking.status != BookingStatus.BOOKED
            or now >= reminder.start
            or self.projection.times.get(booking.id) != reminder.time_key
        ):
            return None
        clinic = self.projection.clinics.get(booking.clinic)
        if clinic is None:
            return None
        region, position, index, _ = reminder.time_key.split(":")
        return Fact(region, int(position), int(index), "reminder", booking, clinic, int(now))

    async def _remind_forever(self) -> None:
        await self._all_caught_up.wait()
        while True:
            await self.send_due_reminders()
            await asyncio.sleep(self.reminder_poll_s)
