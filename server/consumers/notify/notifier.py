"""The notifier: tells patients by e-mail when their bookings are made, cancelled or moved,
and reminds them before their appointments. Nothing lost, nothing sent twice.

How: it is a reader of the process's ``Feed`` (``server.consumers.follow``), which starts each
region from the actors' snapshot, hands the notifier every entry after its durable cursor
(``notify.sqlite3``) and restarts it after any error. Each message has a key derived from its
journal entry (``AB:12:0:booked``; reminders ``AB-b7.740000.36:r24``), used as the e-mail's
Message-ID. After a message is handed over, its key is recorded as sent — in
the same SQLite transaction that moves the cursor past the entry's last message. A key
already recorded is never sent again, so a restarted notifier resumes without repeats.

The one window: a crash after the SMTP server accepted a message (its 250 reply to DATA)
and before the ledger commit (a local SQLite write, well under a millisecond of work plus
one fsync) resends that one message after restart — with the same Message-ID, so mail
systems that dedupe by it drop it. The outbox channel has no such window (the outbox writes a
key once: the record named by it is the record).

Run it on a feed shared with the webhook dispatcher (``Notifier.from_env(feed, ...)``, ``await
start()`` / ``stop()``), as ``tandtid serve``'s consumers' process does (``server.consumers.process``;
``--consumers in-process``: in the server's own), or standalone: ``python -m server.consumers.notify --data DIR [--redis
URL]`` (given a journal instead of a feed, the notifier runs a feed of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from engine.calendar import cell_epoch, day_of_epoch
from engine.model import Clinic
from engine.records import Booking, BookingStatus
from persistence.journal import Journal
from server.consumers.feed import Fact, PendingCursors, RegionView, StateUnavailable
from server.consumers.follow import Entry, Feed, Up, finish_first, why
from server.consumers.notify.ledger import LedgerStore
from server.consumers.notify.mailer import (
    MailConfig,
    Mailer,
    MailUnavailable,
    OutboxMailer,
    Rejected,
    mailer_for,
)
from server.consumers.notify.messages import TEMPLATES, Mail, compose
from server.consumers.notify.reminders import DEFAULT_LEADS, Reminder, Schedule, parse_leads, plan
from server.consumers.workers import in_consumer_thread
from server.identity.accounts import Accounts, User
from server.stores import STORE_ERRORS, open_accounts, open_ledger, open_outbox

log = logging.getLogger("tandtid.notify")

CURSOR_FLUSH_S = 1.0
PLAN_AHEAD_S = 12 * 3600  # reminders are planned for appointments up to max(lead) + this ahead
PLAN_CHUNK = (
    500  # bookings (or due reminders) looked at between two yields to the event loop (~4 us each: ~2 ms)
)


@dataclass
class NotifierStats:
    sent: int = 0
    skipped: int = 0
    rejected: int = 0
    retries: int = 0
    reminders: int = 0


class Notifier:
    name = "notifier"

    def __init__(
        self,
        source: Journal | Feed,
        *,
        ledger: LedgerStore,
        accounts: Accounts,
        mailer: Mailer,
        sender: str = MailConfig.sender,
        clock: Callable[[], float] = time.time,
        leads: tuple[int, ...] = DEFAULT_LEADS,
        regions: Iterable[str] | None = None,
        reminder_poll_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        self._owns_feed = not isinstance(source, Feed)
        self.feed = source if isinstance(source, Feed) else Feed(source, regions=regions)
        self.ledger = ledger
        self.accounts = accounts
        self.mailer = mailer
        self.sender = sender
        self.clock = clock
        self.leads = leads
        self.regions = tuple(regions) if regions is not None else self.feed.regions
        self.projection = self.feed.projection
        self.reminder_poll_s = reminder_poll_s
        self.retry_max_s = retry_max_s
        self.schedule = Schedule()
        self.stats = NotifierStats()
        # region -> (the view reminders were planned from, appointments planned up to)
        self._planned: dict[str, tuple[RegionView, int]] = {}
        self._cursors = PendingCursors(self.ledger.advance, CURSOR_FLUSH_S)
        self._tasks: list[asyncio.Task[None]] = []
        self._handing_over = asyncio.Lock()  # SMTP: one message between hand-over and record
        self._owned: list[Callable[[], None]] = []
        # entered around the first plan of every region's reminders, once (``tandtid serve``:
        # ``runtime.long_lived_made``: no collections while it is made, then it is frozen)
        self.first_plan: Callable[[], AbstractContextManager[None]] | None = None
        self.feed.add(self)

    @classmethod
    def from_env(
        cls,
        source: Journal | Feed,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        accounts: Accounts | None = None,
        clock: Callable[[], float] = time.time,
        regions: Iterable[str] | None = None,
        redis_url: str | None = None,
    ) -> Notifier:
        """The notifier of a data directory: ``notify.sqlite3``, ``accounts.sqlite3`` (or both in
        the Redis at ``redis_url``), and SMTP (``TANDTID_SMTP_*``) or the outbox;
        ``TANDTID_REMINDERS`` (default ``24h,2h``)."""
        env = dict(os.environ) if env is None else env
        config = MailConfig.from_env(env)
        leads = parse_leads(env["TANDTID_REMINDERS"]) if "TANDTID_REMINDERS" in env else DEFAULT_LEADS
        ledger = open_ledger(data_dir, redis_url)
        own_accounts = accounts is None
        store = accounts if accounts is not None else open_accounts(data_dir, redis_url)
        notifier = cls(
            source,
            ledger=ledger,
            accounts=store,
            mailer=mailer_for(config, lambda: open_outbox(data_dir, redis_url)),
            sender=config.sender,
            clock=clock,
            leads=leads,
            regions=regions,
        )
        notifier._owned.append(ledger.close)
        if isinstance(notifier.mailer, OutboxMailer):
            notifier._owned.append(notifier.mailer.outbox.close)
        if own_accounts:
            notifier._owned.append(store.close)
        return notifier

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the reminder and cursor loops (supervised), and the feed when it is the
        notifier's own (a shared feed is started by its owner once every reader is added)."""
        self._tasks.append(
            self.feed.supervise(("notifier",), "*", self._remind_forever, name="notify-reminders")
        )
        self._tasks.append(asyncio.create_task(self._cursors.flush_forever(), name="notify-cursors"))
        if self._owns_feed:
            await self.feed.start()

    async def stop(self) -> None:
        if self._owns_feed:
            await self.feed.stop()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await in_consumer_thread(self._cursors.flush)
        for close in self._owned:
            close()
        self._owned.clear()

    async def wait_caught_up(self) -> None:
        """Until every region's projection has reached the journal's end as of ``start``."""
        await self.feed.wait_caught_up()

    def cursors(self) -> dict[str, int]:
        """The durable cursor per region (blocking; the feed calls it in a worker thread)."""
        return self.ledger.cursors()

    # -- journal facts ---------------------------------------------------------------------------

    async def handle(self, region: str, entries: list[Entry]) -> None:
        """Send the messages of a run of entries after the cursor and move the cursor past the
        last: one worker-thread call composes them all, and a keyed mailer writes them with the
        cursor in one transaction."""
        planned = self._planned.get(region)
        if planned is not None and planned[0] is not self.projection.views.get(region):
            planned = None  # the view was reloaded: the next scan plans from the new one
        wanted: list[tuple[str, Fact, str, int]] = []
        for _, facts in entries:
            for fact in facts:
                if fact.kind in ("booked", "rescheduled") and planned is not None:
                    # within the planned horizon: plan now (beyond it, the next scan of the view will)
                    self._plan_booking(region, planned[0], fact.booking.id, planned[1])
                if fact.kind in TEMPLATES:
                    wanted.append((fact.key, fact, fact.kind, 0))
        position = entries[-1][0]
        if not wanted:
            self._cursors.note(region, position)
            return
        await self._deliver(wanted, region=region, position=position)
        self._cursors.discard(region)

    async def _deliver(
        self,
        messages: list[tuple[str, Fact, str, int]],
        *,
        region: str | None = None,
        position: int | None = None,
    ) -> None:
        """Send each (key, fact, kind, lead) whose key is not recorded yet, record them, and move
        the cursor to ``region``/``position`` when given. The look-up of the keys and composing
        are one worker-thread call; a keyed mailer (the outbox) gets all messages in one call
        and they are recorded with the cursor in one transaction; SMTP messages are recorded
        one by one, each right after the server accepted it."""
        composed = await in_consumer_thread(self._compose_unsent, messages, int(self.clock()))
        recorded: list[tuple[str, str]] = []  # (key, channel) to record with the cursor
        keyed: list[Mail] = []
        for key, fact_region, mail in composed:
            if isinstance(mail, str):
                self._skipped(key, mail)
                recorded.append((key, mail))
            elif self.mailer.keyed:
                keyed.append(mail)
            else:
                # One message at a time in the whole notifier, from the hand-over to its record:
                # a crash resends at most the one message the server had accepted (see above).
                async with self._handing_over:
                    await self._send(mail, fact_region)
        if keyed:
            channel = await self._send_keyed(keyed)
            recorded += [(mail.key, channel) for mail in keyed]
        if recorded or (region is not None and position is not None):
            await self._record(recorded, region or "*", region, position)

    async def _record(
        self,
        sent: list[tuple[str, str]],
        fact_region: str,
        region: str | None = None,
        position: int | None = None,
    ) -> None:
        """Record messages handed over (and the cursor). This write is retried where it failed
        (a full disk), never by a restart: a restart would send the messages again. The
        notifier is reported down for the region meanwhile."""
        delay = 0.1
        while True:
            try:
                await in_consumer_thread(
                    self.ledger.record_many, sent, self.clock(), region=region, position=position
                )
            except STORE_ERRORS as exc:
                self.feed.health.down(self.name, fact_region, f"recording a sent message: {why(exc)}")
                log.error(
                    "%d messages sent but not recorded (%s); retrying in %.1fs", len(sent), why(exc), delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            if delay > 0.1:
                self.feed.health.up(self.name, fact_region)
            return

    def _skipped(self, key: str, why_not: str) -> None:
        self.stats.skipped += 1
        if why_not == "skipped:no-account":
            log.info("message %s: no account for the patient; not sent", key)
        else:
            log.warning("message %s: cannot be composed; not sent", key)

    async def _send(self, mail: Mail, region: str) -> None:
        """Hand one message over, retrying while the mail server is unavailable, and record it."""
        key = mail.key
        delay = 1.0
        while True:
            try:
                # A stop (or a restart of the region's pipeline) while the mail server takes the
                # message waits for its answer and the record: cancelled between the two, the
                # message would be sent again.
                await finish_first(self._hand_over(mail, region))
            except Rejected:
                self.stats.rejected += 1
                log.warning("message %s: refused by the mail server for good; not retried", key)
                await self._record([(key, "rejected")], region)
            except MailUnavailable as exc:
                delay = await self._wait_for_mail_server(exc, delay)
                continue
            return

    async def _wait_for_mail_server(self, exc: MailUnavailable, delay: float) -> float:
        """Count the retry, wait ``delay`` and return the next (doubled, up to ``retry_max_s``)."""
        self.stats.retries += 1
        log.warning("%s; retrying in %.0f s", exc, delay)
        await asyncio.sleep(delay)
        return min(delay * 2, self.retry_max_s)

    async def _hand_over(self, mail: Mail, region: str) -> None:
        channel = await self.mailer.send(mail)
        self.stats.sent += 1
        log.info("message %s sent via %s", mail.key, channel)
        await self._record([(mail.key, channel)], region)

    async def _send_keyed(self, mails: list[Mail]) -> str:
        """Hand messages to a keyed mailer in one call, retrying while it is unavailable (a key
        already written is not written again)."""
        delay = 1.0
        while True:
            try:
                channel = await self.mailer.send_many(mails)
            except MailUnavailable as exc:
                delay = await self._wait_for_mail_server(exc, delay)
                continue
            self.stats.sent += len(mails)
            log.info("%d messages written to the %s", len(mails), channel)
            return channel

    def _compose_unsent(
        self, messages: list[tuple[str, Fact, str, int]], now_s: int
    ) -> list[tuple[str, str, Mail | str]]:
        """In a worker thread (the account look-ups are SQLite; composing is ~60 us of string formatting):
        (key, the fact's region, the message or the channel to record when there is none) for
        every message whose key is not recorded as sent."""
        unsent = set(self.ledger.unsent([key for key, _, _, _ in messages]))
        todo = [message for message in messages if message[0] in unsent]
        users = self.accounts.get_many(fact.booking.patient for _, fact, _, _ in todo)  # one look-up
        return [
            (key, fact.region, self._compose(key, fact, kind, lead_s, now_s, users.get(fact.booking.patient)))
            for key, fact, kind, lead_s in todo
        ]

    def _compose(
        self, key: str, fact: Fact, kind: str, lead_s: int, now_s: int, user: User | None
    ) -> Mail | str:
        """In a worker thread: the message to ``user`` (the patient), or the channel to record when
        there is none."""
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
        if not self.feed.all_caught_up:
            return 0
        now = self.clock()
        await self._plan(now)
        sent = 0
        while True:  # in chunks, yielding between: after a start or a pause thousands may be due at once
            popped = self.schedule.due(now, PLAN_CHUNK)
            due = []
            for reminder in popped:
                fact = self._current(reminder, now)
                if fact is not None:
                    due.append((reminder.key, fact, "reminder", reminder.lead_s))
            if due:
                await self._deliver(due)
                self.stats.reminders += len(due)
                sent += len(due)
            if len(popped) < PLAN_CHUNK:
                return sent
            await asyncio.sleep(0)

    async def _plan(self, now: float) -> None:
        """Plan the reminders of appointments from now to ``max(leads) + PLAN_AHEAD_S`` ahead,
        looking at each region's bookings on those days again when its view was reloaded or
        the horizon moved on."""
        if not self.leads:
            return
        until = int(now) + max(self.leads) + PLAN_AHEAD_S
        for region in self.regions:
            view = self.projection.views.get(region)
            if view is None:
                continue
            seen = self._planned.get(region)
            if seen is not None and seen[0] is view and seen[1] >= until - PLAN_AHEAD_S // 2:
                continue
            try:
                reads = self.projection.reads(region)
            except StateUnavailable:
                continue  # the region's actor is recovering: the next poll plans it
            after = seen[1] if seen is not None and seen[0] is view else int(now)
            self._planned[region] = (view, until)  # facts handled from now on plan themselves
            # a booking's cells are in its own Stockholm-local day: starts in (after, until] are on these
            first_day, last_day = day_of_epoch(after), day_of_epoch(until)
            looked = 0
            for clinic in list(reads.clinics.values()):
                for day in range(first_day, last_day + 1):
                    bookings = reads.bookings_on(clinic.id, day)
                    for booking in bookings:
                        self._plan_one(region, view, booking, clinic, until, after)
                    looked += 1 + len(bookings)
                if looked >= PLAN_CHUNK:
                    looked = 0
                    await asyncio.sleep(0)
                    try:
                        reads = self.projection.reads(region)  # an actor may have reloaded meanwhile
                    except StateUnavailable:
                        break

    def _plan_booking(
        self, region: str, view: RegionView, booking_id: str, until: int, after: int = 0
    ) -> None:
        """Plan the reminders of one booking as the region has it, if it starts in (after, until]."""
        found = self.projection.booking(region, booking_id)
        if found is not None:
            self._plan_one(region, view, found[0], found[1], until, after)

    def _plan_one(
        self, region: str, view: RegionView, booking: Booking, clinic: Clinic, until: int, after: int
    ) -> None:
        if booking.status != BookingStatus.BOOKED:
            return
        try:
            start = cell_epoch(booking.day, booking.cell, clinic.cell_minutes)
        except ValueError:  # a time the calendar cannot place (never written by the engine)
            log.warning("booking in region %s: time not on the calendar; no reminders", region)
            return
        if not after < start <= until:
            return
        decided = view.time_set_at(booking)
        self.schedule.add(plan(region, booking.id, booking.day, booking.cell, start, decided, self.leads))

    def _current(self, reminder: Reminder, now: float) -> Fact | None:
        """The reminder's booking as a fact, if the booking still stands at that time and its
        time was decided before the reminder fell due."""
        found = self.projection.booking(reminder.region, reminder.booking_id)
        view = self.projection.views.get(reminder.region)
        if found is None or view is None:
            return None
        booking, clinic = found
        if (
            booking.status != BookingStatus.BOOKED
            or now >= reminder.start
            or (booking.day, booking.cell) != (reminder.day, reminder.cell)
            or reminder.due <= view.time_set_at(booking)
        ):
            return None
        return Fact(reminder.region, 0, 0, "reminder", booking, clinic, int(now))

    async def _remind_forever(self, up: Up) -> None:
        await self.feed.wait_caught_up()
        up()
        first_plan, self.first_plan = self.first_plan, None
        if first_plan is not None:
            with first_plan():
                await self.send_due_reminders()
            await asyncio.sleep(self.reminder_poll_s)
        while True:
            await self.send_due_reminders()
            await asyncio.sleep(self.reminder_poll_s)
