"""Integration tests: the journal consumers (notifier and webhook dispatcher on ONE feed) over a
real FileJournal and a real redis-server, fed by real region actors, telling a real SMTP server
and a real HTTP receiver.

- consumers stopped while bookings happen, the actors' snapshot written and (Redis) the history
  before it trimmed, then started again: every fact told once (by key), none twice;
- Redis killed and restarted under running consumers: they report themselves down, re-tail, and
  again nothing is lost or told twice;
- a consumer stopped by a full disk is restarted with backoff; meanwhile /ready answers
  "degraded" naming it and its region, and the restarts are counted in /metrics.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from argon2 import PasswordHasher
from prometheus_client import REGISTRY

from engine.commands import Book, Cancel, Command, Party, Reschedule
from engine.events import Booked, Cancelled, ClinicRegistered, Rescheduled, to_record
from engine.model import resource_to_record
from persistence.codec import pack_events
from persistence.file_journal import FileJournal
from persistence.journal import Journal
from persistence.redis_journal import RedisStreamJournal
from server.consumers.follow import Feed
from server.consumers.notify.ledger import Ledger
from server.consumers.notify.mailer import MailConfig, SmtpMailer
from server.consumers.notify.notifier import Notifier
from server.consumers.webhooks.dispatcher import EVENT_TYPES, WebhookDispatcher
from server.consumers.webhooks.store import WebhookStore
from server.health import Health
from server.http.app import create_app
from server.identity.accounts import AccountStore, Role
from server.regions.actor import Committed, Reloaded, Unavailable
from server.regions.routing import Regions
from server.settings import Settings
from tests.support import free_port
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, clinic, setup_commands
from tests.support.redis_server import RedisServer
from tests.support.smtp import Inbox, smtp_server

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
WAIT_S = 30.0  # a bound for "arrives at all"; never used to assert speed
KINDS = {Booked: "booked", Cancelled: "cancelled", Rescheduled: "rescheduled"}


# -- a real webhook receiver ---------------------------------------------------------------------


class Receiver:
    """An HTTP server that answers 200 and counts the event ids it was sent; while ``answer``
    is clear, it counts an event and holds its answer back until ``answer`` is set."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._lock = threading.Lock()
        self.answer = threading.Event()
        self.answer.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.ids.append(self.headers["Tandtid-Event-Id"])
                receiver.answer.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self) -> list[str]:
        with self._lock:
            return list(self.ids)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as server:
        yield server


# -- the world: a journal, the AB actor, accounts, consumers ------------------------------------------


@dataclass
class World:
    data: Path
    make_journal: Callable[[], Journal]
    redis: RedisServer | None
    inbox: Inbox
    smtp_port: int
    receiver: Receiver
    journal: Journal | None = None
    regions: Regions | None = None
    accounts: AccountStore | None = None
    patients: list[str] = field(default_factory=list)
    commits: list[Committed] = field(default_factory=list)
    n: int = 0

    async def start(self) -> None:
        self.journal = self.make_journal()
        await self.journal.open()
        self.regions = Regions(self.journal, clock=lambda: NOW, regions=("AB",), retry_backoff_s=(0.05, 0.2))
        await self.regions.start()
        self.regions.add_listener(self._committed)
        for command in setup_commands("AB"):
            await self.submit(command)
        self.accounts = AccountStore(self.data / "accounts.sqlite3", hasher=FAST_HASHER)
        self.patients = [
            self.accounts.create_user(f"p{i}@example.test", "password-123", f"P {i}", Role.PATIENT).id
            for i in range(8)
        ]
        store = WebhookStore(self.data / "webhooks.sqlite3")
        store.create_endpoint("AB-c1", self.receiver.url, list(EVENT_TYPES), 0)
        store.close()

    async def close(self) -> None:
        if self.regions is not None:
            await self.regions.stop()
        if self.journal is not None:
            await self.journal.close()
        if self.accounts is not None:
            self.accounts.close()

    def _committed(self, item: Committed | Reloaded) -> None:
        if isinstance(item, Committed):
            self.commits.append(item)

    async def submit(self, command: Command) -> None:
        """Submit, retrying while the region reloads (after Redis came back)."""
        assert self.regions is not None
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                await self.regions.submit(command)
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def book(self, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            self.n += 1
            booking = f"AB-bc{self.n}"
            patient = self.patients[self.n % len(self.patients)]
            await self.submit(
                Book(
                    booking,
                    patient,
                    "AB-c1-r1",
                    "checkup",
                    FIRST_DAY + 1 + self.n // 6,  # 09:00-12:00, six times a day
                    CELL_0900 + 2 * (self.n % 6),
                )
            )
            ids.append(booking)
        return ids

    def expected(self) -> tuple[set[str], set[str]]:
        """E-mail keys and webhook event ids of every booking fact the actor committed."""
        keys, ids = set(), set()
        for commit in self.commits:
            for index, event in enumerate(commit.events):
                kind = KINDS.get(type(event))
                if kind is not None:
                    keys.add(f"AB:{commit.position}:{index}:{kind}")
                    ids.add(f"AB-{commit.position}-{index}")
        return keys, ids

    async def all_told(self) -> None:
        keys, ids = self.expected()
        await until(
            lambda: set(self.inbox.keys()) >= keys and set(self.receiver.received()) >= ids,
            "every fact told",
        )

    def told_once(self) -> None:
        keys, ids = self.expected()
        mails, hooks = Counter(self.inbox.keys()), Counter(self.receiver.received())
        assert set(mails) == keys
        assert set(hooks) == ids
        assert [k for k, c in mails.items() if c > 1] == []
        assert [i for i, c in hooks.items() if c > 1] == []


class Consumers:
    """One feed, the notifier and the dispatcher on it: what ``tandtid serve`` runs."""

    def __init__(
        self, world: World, journal: Journal, health: Health | None = None, shared: bool = False
    ) -> None:
        assert world.accounts is not None and world.regions is not None
        # shared: the facts read the actor's own state, as in ``tandtid serve``; else the feed's replica
        states = world.regions.state_of if shared else None
        self.feed = Feed(journal, regions=["AB"], health=health, backoff_s=(0.05, 0.2), states=states)
        self.ledger = Ledger(world.data / "notify.sqlite3")
        self.notifier = Notifier(
            self.feed,
            ledger=self.ledger,
            accounts=world.accounts,
            mailer=SmtpMailer(MailConfig(host="127.0.0.1", port=world.smtp_port)),
            clock=lambda: NOW,
            leads=(),
        )
        self.webhooks = WebhookDispatcher.open(
            self.feed, world.data, backoff_base_s=0.05, backoff_cap_s=0.2, poll_s=0.05
        )

    async def start(self) -> None:
        await self.notifier.start()
        await self.webhooks.start()
        await self.feed.start()
        # A reader without a cursor starts where the feed loads the region: bookings made
        # before that are not its to tell, so the tests book only once it has loaded.
        await self.feed.wait_caught_up()

    async def stop(self) -> None:
        await self.feed.stop()
        await self.notifier.stop()
        await self.webhooks.stop()
        self.ledger.close()


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.redis)])
async def world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    smtp: tuple[Inbox, int],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[World]:
    monkeypatch.setenv("TANDTID_WEBHOOK_ALLOW_HTTP", "1")  # the receiver is plain HTTP on loopback
    data = tmp_path / "data"
    redis: RedisServer | None = None
    make: Callable[[], Journal]
    if request.param == "file":

        def make() -> Journal:
            return FileJournal(data)
    else:
        redis = RedisServer().start()
        url = redis.url

        def make() -> Journal:
            # retention 0: a snapshot trims every entry before it, as 96 h later in production
            return RedisStreamJournal(url, retention_s=0)

    w = World(data, make, redis, smtp[0], smtp[1], receiver)
    await w.start()
    try:
        yield w
    finally:
        await w.close()
        if redis is not None:
            redis.stop()


# -- tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["own-replica", "actor-state"])
async def test_consumers_resume_from_the_snapshot_after_history_is_trimmed(
    world: World, shared: bool
) -> None:
    assert world.journal is not None and world.regions is not None
    actor = world.regions.actor("AB")
    consumers = Consumers(world, world.journal, shared=shared)
    await consumers.start()
    await world.book(4)
    await world.all_told()
    await actor.snapshot_now()
    if world.redis is not None:
        # everything before the snapshot is gone (told already): a replay from position 0
        # would find no clinic, and the old consumers skipped every fact after it
        assert [e.position async for e in world.journal.read("AB")][0] == actor.position
    await consumers.stop()

    # while the consumers are away: bookings, a cancellation, a move
    booked = await world.book(4)
    await world.submit(Cancel(booked[0], Party.CLINIC, "AB-c1"))
    patient = world.patients[(world.n - 2) % 8]
    await world.submit(Reschedule(booked[1], patient, "AB-c1-r2", FIRST_DAY + 3, CELL_0900))
    if world.redis is None:
        # and a snapshot past their cursors: they act on entries before it, re-applied over it
        await actor.snapshot_now()

    restarted = Consumers(world, world.make_journal(), shared=shared)
    await restarted.feed.journal.open()
    await restarted.start()
    try:
        await world.all_told()
        await world.book(2)  # and it goes on tailing
        await world.all_told()
        assert restarted.feed.health.degraded() == []
        view = restarted.feed.projection.views["AB"]
        assert view.base > 0  # it started from the snapshot (or the actor's state), not from position 0
        assert (view.replica is None) is shared  # no copy of the bookings beside the actor's
    finally:
        await restarted.stop()
        await restarted.feed.journal.close()
    world.told_once()
    moved = [m for m in world.inbox.messages if str(m["X-Tandtid-Key"]).endswith(":rescheduled")]
    assert len(moved) == 1
    # the time before the move, from the event itself (the booking was moved after the snapshot)
    text = moved[0].get_body(preferencelist=("plain",)).get_content()
    assert "(tidigare " in text and "(tidigare )" not in text


@pytest.mark.parametrize("world", ["file"], indirect=True)
async def test_a_stop_while_a_message_and_a_webhook_are_taken_waits_for_their_answers(world: World) -> None:
    """The mail server and the receiver have the booking's message and event and have not
    answered yet when the consumers are stopped: the stop waits for the answers and records
    them, so the consumers started again send neither a second time."""
    consumers = Consumers(world, world.journal)  # type: ignore[arg-type]
    await consumers.start()
    world.inbox.answer.clear()
    world.receiver.answer.clear()
    try:
        await world.book(1)
        keys, ids = world.expected()
        await until(
            lambda: set(world.inbox.keys()) == keys and set(world.receiver.received()) == ids,
            "the message and the event taken, unanswered",
        )
        # the sender's POST and the feed's pipeline (the notifier's hand-over) are cancelled
        stopping = [
            asyncio.create_task(consumers.webhooks.stop()),
            asyncio.create_task(consumers.feed.stop()),
        ]
        for _ in range(20):
            await asyncio.sleep(0)  # loop turns, not time: the cancellations reach the hand-overs
        assert not any(task.done() for task in stopping)  # nothing answered yet
    finally:
        world.inbox.answer.set()
        world.receiver.answer.set()
    await asyncio.gather(*stopping)
    await consumers.notifier.stop()
    consumers.ledger.close()

    restarted = Consumers(world, world.journal)  # type: ignore[arg-type]
    await restarted.start()
    try:
        await world.book(1)
        await world.all_told()
    finally:
        await restarted.stop()
    world.told_once()


@pytest.mark.redis
@pytest.mark.parametrize("world", ["redis"], indirect=True)
async def test_a_redis_restart_under_running_consumers_loses_and_repeats_nothing(world: World) -> None:
    assert world.journal is not None and world.redis is not None
    consumers = Consumers(world, world.journal)
    await consumers.start()
    try:
        await world.book(3)
        await world.all_told()
        world.redis.kill()
        health = consumers.feed.health
        await until(lambda: health.is_down("notifier", "AB") and health.is_down("webhooks", "AB"), "down")
        assert {(t["part"], t["region"]) for t in health.degraded()} >= {
            ("notifier", "AB"),
            ("webhooks", "AB"),
        }
        restarts = REGISTRY.get_sample_value(
            "tandtid_consumer_restarts_total", {"consumer": "notifier", "region": "AB", "kind": "journal"}
        )
        assert restarts is not None and restarts >= 1
        world.redis.start()  # same port and data: the AOF is reloaded
        await world.book(3)
        await world.all_told()
        await world.regions.actor("AB").snapshot_now()  # type: ignore[union-attr]  # trims what was told
        await world.book(2)
        await world.all_told()
        await until(lambda: health.degraded() == [], "the consumers up again")
    finally:
        await consumers.stop()
    world.told_once()


@pytest.mark.parametrize("world", ["file"], indirect=True)
async def test_a_consumer_stopped_by_a_full_disk_is_restarted_and_ready_says_so(world: World) -> None:
    assert world.journal is not None and world.regions is not None
    settings = Settings.from_env(env={}, data_dir=world.data, secret_key="s" * 32)
    app = create_app(settings, regions=world.regions, accounts=world.accounts)
    consumers = Consumers(world, world.journal, health=app.state.health)
    health = consumers.feed.health
    await consumers.start()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tandtid")

    async def ready() -> dict[str, Any]:
        r = await client.get("/ready")
        assert r.status_code == 200  # degraded still serves
        body: dict[str, Any] = r.json()
        return body

    try:
        await world.book(2)
        await world.all_told()
        assert (await ready())["status"] == "ready"

        # the dispatcher's store is full: it is stopped, restarted with backoff, and named
        fill_the_disk(consumers.webhooks.store, HOOKS_FILLER)
        await world.book(2)
        await until(lambda: health.is_down("webhooks", "AB"), "the dispatcher down")
        body = await ready()
        assert body["status"] == "degraded"
        (trouble,) = body["degraded"]
        assert (trouble["part"], trouble["region"]) == ("webhooks", "AB") and "full" in trouble["why"]
        metrics = (await client.get("/metrics")).text
        assert 'tandtid_consumer_restarts_total{consumer="webhooks",kind="disk",region="AB"}' in metrics
        assert "@example.test" not in metrics
        keys, ids = world.expected()
        await until(lambda: set(world.inbox.keys()) >= keys, "e-mails while the dispatcher is down")
        assert not set(world.receiver.received()) >= ids
        free_the_disk(consumers.webhooks.store)
        await world.all_told()
        await until(lambda: not health.is_down("webhooks", "AB"), "the dispatcher up")
        assert (await ready())["degraded"] == []

        # the notifier's ledger is full after a message went out: it retries the record (a
        # restart would send the message again) and is named meanwhile
        fill_the_disk(consumers.ledger, LEDGER_FILLER)
        await world.book(1)
        await until(lambda: health.is_down("notifier", "AB"), "the notifier down")
        (trouble,) = (await ready())["degraded"]
        assert (trouble["part"], trouble["region"]) == ("notifier", "AB") and "full" in trouble["why"]
        free_the_disk(consumers.ledger)
        await world.all_told()
        await until(lambda: not health.is_down("notifier", "AB"), "the notifier up")
        body = await ready()
        assert (body["status"], body["degraded"]) == ("ready", [])
    finally:
        await client.aclose()
        await consumers.stop()
    world.told_once()


class SQLiteStore(Protocol):
    _lock: threading.Lock
    _db: sqlite3.Connection


# One filler row of ``size`` bytes for the table the consumer writes first (its own pages
# must be full too: a row that fits a page's free space needs no new page).
LEDGER_FILLER = (
    "INSERT INTO sent (key, channel, sent_at) VALUES ('filler-' || hex(randomblob(8)) || ?, 'x', 0)"
)
HOOKS_FILLER = (
    "INSERT INTO deliveries (endpoint, event_id, type, region, position, body, status, next_attempt_at,"
    " created_at) VALUES ('filler', 'filler', 'filler', 'XX', 0, ?, 'cancelled', 0, 0)"
)


def fill_the_disk(store: SQLiteStore, filler: str) -> None:
    """SQLite's own "database or disk is full" on the store's connection: no page more than
    the file has, and the free bytes taken by rows of shrinking size."""
    with store._lock:
        db = store._db
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        for size in (512, 64, 1):
            try:
                for _ in range(100_000):
                    db.execute(filler, (b"x" * size,) if "body" in filler else ("x" * size,))
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc)
            else:
                raise AssertionError("the store never filled up")


def free_the_disk(store: SQLiteStore) -> None:
    with store._lock:
        store._db.execute("PRAGMA max_page_count = 1073741823")


async def test_a_fact_that_cannot_be_placed_stops_the_consumer_and_is_reported(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    data = tmp_path / "data"
    accounts = AccountStore(data / "accounts.sqlite3", hasher=FAST_HASHER)
    patient = accounts.create_user("u@example.test", "password-123", "U", Role.PATIENT).id
    journal = FileJournal(data)
    await journal.open()
    c, resources = clinic("AB", 1)
    registered = ClinicRegistered(c.to_record(), [resource_to_record(r) for r in resources])
    await journal.append("AB", 1, pack_events([to_record(registered)]))
    told = await journal.append(
        "AB",
        1,
        pack_events(
            [
                to_record(
                    Booked(
                        "AB-b1",
                        patient,
                        "AB-c1",
                        "AB-c1-r1",
                        "checkup",
                        FIRST_DAY,
                        CELL_0900,
                        2,
                        NOW,
                        "",
                        "",
                        "",
                    )
                )
            ]
        ),
    )
    # a cancellation of a booking no entry made (a damaged or foreign journal)
    unplaced = await journal.append(
        "AB", 1, pack_events([to_record(Cancelled("AB-bnone", "patient", NOW, 0))])
    )
    ledger = Ledger(data / "notify.sqlite3")
    feed = Feed(journal, regions=["AB"], backoff_s=(0.05, 0.2))
    notifier = Notifier(
        feed,
        ledger=ledger,
        accounts=accounts,
        mailer=SmtpMailer(MailConfig(host="127.0.0.1", port=port)),
        clock=lambda: NOW,
        leads=(),
    )
    await notifier.start()
    await feed.start()
    try:
        await until(lambda: inbox.keys() == [f"AB:{told}:0:booked"], "the booking's e-mail")
        await until(lambda: feed.health.is_down("notifier", "AB"), "the notifier reported down")
        (trouble,) = feed.health.degraded()
        why = str(trouble["why"])
        assert f"position {unplaced}" in why and "Cancelled" in why
        await until(lambda: feed.health.degraded()[0]["restarts"] == 3, "restarts with backoff")
        restarts = REGISTRY.get_sample_value(
            "tandtid_consumer_restarts_total", {"consumer": "notifier", "region": "AB", "kind": "unplaced"}
        )
        assert restarts is not None and restarts >= 2
        await asyncio.to_thread(notifier._cursors.flush)
        assert ledger.cursor("AB") == told  # never moved past the fact it could not place
    finally:
        await feed.stop()
        await notifier.stop()
        ledger.close()
        accounts.close()
        await journal.close()


@dataclass
class Recording:
    """A reader that records the runs of entries it is handed (its cursor: nothing read yet)."""

    name: str = "recording"
    runs: list[list[int]] = field(default_factory=list)

    def cursors(self) -> dict[str, int]:
        return {}

    async def handle(self, region: str, entries: list[tuple[int, list[Any]]]) -> None:
        self.runs.append([position for position, _ in entries])


@pytest.mark.parametrize("batch_entries", [256, 8])
async def test_a_reader_is_handed_the_entries_queued_for_it_as_runs_in_order(
    tmp_path: Path, batch_entries: int
) -> None:
    """Entries waiting for a reader reach it together (one call, so one write for many), each
    once and in journal order, never more than ``batch_entries`` per call."""
    journal = FileJournal(tmp_path / "data")
    await journal.open()
    c, resources = clinic("AB", 1)
    registered = ClinicRegistered(c.to_record(), [resource_to_record(r) for r in resources])
    positions = [await journal.append("AB", 1, pack_events([to_record(registered)]))]
    for n in range(60):
        booked = Booked(
            f"AB-b{n}",
            "patient-1",
            "AB-c1",
            "AB-c1-r1",
            "checkup",
            FIRST_DAY,
            CELL_0900 + 2 * n,
            2,
            NOW,
            "",
            "",
            "",
        )
        positions.append(await journal.append("AB", 1, pack_events([to_record(booked)])))
    feed = Feed(journal, regions=["AB"], backoff_s=(0.05, 0.2), batch_entries=batch_entries)
    reader = Recording()
    feed.add(reader)
    await feed.start()
    try:
        await until(lambda: sum(len(run) for run in reader.runs) >= len(positions), "every entry handed over")
        assert [p for run in reader.runs for p in run] == positions  # each once, in order
        assert max(len(run) for run in reader.runs) <= batch_entries
        assert len(reader.runs) < len(positions)  # queued entries went together
    finally:
        await feed.stop()
        await journal.close()
