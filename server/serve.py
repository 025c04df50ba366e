"""Process wiring: settings -> journal -> regions -> app -> uvicorn, and the demo seed.

Order on start: open the journal, start every region actor (each recovers from snapshot +
journal in the background; /ready says when), optionally seed an empty store, then serve.
On SIGTERM/SIGINT uvicorn stops accepting, finishes in-flight requests, and we stop the
actors (taking no new commands) and close the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import multiprocessing
import os
import resource
import signal
import time
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from engine.model import REGIONS
from persistence.journal import Journal, Snapshot
from server import metrics
from server.consumers.follow import Feed
from server.consumers.notify.notifier import Notifier
from server.consumers.process import ConsumerProcess
from server.consumers.webhooks.dispatcher import WebhookDispatcher
from server.data_lock import data_directory_lock
from server.health import Health
from server.http.app import create_app
from server.http.forwarding import Forwarder
from server.http.protocol import http_protocol
from server.identity.accounts import Accounts
from server.live.protocol import UVICORN_WS_OPTIONS
from server.regions.lease import LeaseManager
from server.regions.routing import Regions
from server.runtime import gc_paused, long_lived_made, threads_served_often, tune_gc
from server.settings import Settings, env_list

log = logging.getLogger("tandtid.serve")

DEMO_PASSWORD = "tandtid-demo"
DEMO_ACCOUNTS = (
    ("patient@demo.tandtid.se", "Demo Patient", "patient"),
    ("staff@demo.tandtid.se", "Demo Staff", "staff"),
    ("clinicadmin@demo.tandtid.se", "Demo Clinic Admin", "clinic_admin"),
    ("admin@demo.tandtid.se", "Demo Admin", "admin"),
)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=Path(args.data) if getattr(args, "data", None) else None,
        redis_url=getattr(args, "redis", None),
        node=getattr(args, "node", None),
        advertise=getattr(args, "advertise", None),
        log_level=getattr(args, "log_level", None),
        consumers=getattr(args, "consumers", None),
        forwarded_allow_ips=env_list(args.forwarded_allow_ips)
        if getattr(args, "forwarded_allow_ips", None)
        else None,
    )


async def open_journal(settings: Settings) -> Journal:
    journal: Journal
    if settings.redis_url:
        from persistence.redis_journal import RedisStreamJournal

        journal = RedisStreamJournal(settings.redis_url)
    else:
        from persistence.file_journal import FileJournal

        journal = FileJournal(settings.data_dir)
    await journal.open()
    return journal


def make_regions(settings: Settings, journal: Journal, clock: Callable[[], float] = time.time) -> Regions:
    return Regions(
        journal,
        clock=clock,
        epoch=settings.epoch,
        snapshot_every_events=settings.snapshot_every_events,
        snapshot_every_s=settings.snapshot_every_s,
        tick_interval_s=settings.tick_interval_s,
    )


@dataclass
class BuiltServer:
    """A server ready to serve: its journal open, its regions recovered, the app and the uvicorn
    config that serves it. ``await serve()`` runs it until ``should_exit``; ``await close()``
    afterwards (or instead) stops the regions and closes the journal."""

    settings: Settings
    journal: Journal
    regions: Regions
    app: Starlette
    config: uvicorn.Config
    server: uvicorn.Server
    leases: LeaseManager | None = None  # with --node: which regions this node writes
    forwarder: Forwarder | None = None  # with --node: requests for other nodes' regions go there

    async def serve(self) -> None:
        await self.server.serve()

    async def close(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.leases is not None:
            await self.leases.stop()  # hands every lease back: other nodes take over at once
        await self.regions.stop()
        await self.journal.close()


async def start_leases(settings: Settings, regions: Regions) -> LeaseManager:
    """With ``--node``: no region is written until this node holds its lease; the node takes
    its fair share of the regions now (and waits for them to recover), more or fewer later as
    nodes come and go. Requests for the other regions are forwarded to their owners
    (``server.http.forwarding``)."""
    if not settings.redis_url or not settings.node:
        raise ValueError("--node needs --redis: region leases live in Redis")
    await regions.stand_by()
    leases = LeaseManager(
        settings.redis_url,
        settings.node,
        settings.advertise or f"http://{settings.host}:{settings.port}",
        ttl_ms=settings.lease_ttl_ms,
        on_acquired=regions.take,
        on_lost=regions.give_up,
    )
    await leases.start()
    await asyncio.gather(*(regions.actors[r].wait_ready() for r in leases.held), return_exceptions=True)
    return leases


async def build_server(
    settings: Settings,
    *,
    journal: Journal | None = None,
    clock: Callable[[], float] = time.time,
    accounts: Accounts | None = None,
    **uvicorn_options: Any,
) -> BuiltServer:
    """settings -> journal -> regions (started: recovered and ready) -> app -> uvicorn config.

    The one place that wires a server: ``tandtid serve``, the fan-out bench and the tests'
    live servers all build theirs here. ``journal``: an open journal (default: the one the
    settings name, opened here); ``uvicorn_options`` override the served config (e.g. a
    ``backlog``, or uvicorn's stock ``ws`` protocol for a comparison)."""
    journal = journal if journal is not None else await open_journal(settings)
    served = journal
    metrics.JOURNAL_ROUNDS.set_function(lambda: float(getattr(served, "rounds", 0)))
    metrics.JOURNAL_WRITABLE.set_function(lambda: 0.0 if served.write_failure() else 1.0)
    regions = make_regions(settings, journal, clock)
    leases = await start_leases(settings, regions) if settings.node else None
    if leases is None:
        await regions.start()
    app = create_app(settings, regions=regions, accounts=accounts)
    forwarder = None
    if leases is not None:
        forwarder = Forwarder(leases, settings.secret_key, timeout_s=settings.forward_timeout_s)
        app.state.forwarder = forwarder
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "lifespan": "on",
        "ws_max_size": settings.max_ws_frame,
        "http": http_protocol(settings.max_header_bytes, settings.max_headers),  # 431 past the limits
        # Behind a proxy (nginx) every peer is the proxy: believe its X-Forwarded-For only when the
        # operator names it, so per-address caps and rate limits count clients, not the proxy.
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
        "access_log": False,
        "server_header": False,  # no "server: uvicorn": what runs here is nobody's business
        "timeout_keep_alive": settings.keep_alive_s,
        **UVICORN_WS_OPTIONS,  # the hub writes pre-framed diffs straight to sockets; no deflate
        **uvicorn_options,
    }
    config = uvicorn.Config(app, **options)
    return BuiltServer(settings, journal, regions, app, config, uvicorn.Server(config), leases, forwarder)


@dataclass(frozen=True, slots=True)
class Seeded:
    clinics: int
    bookings: int
    refused: int  # Book commands the engine refused (0 unless the generator is wrong)
    first_clinic: str | None  # Stockholm's first clinic by id: the demo staff account's


async def journal_is_empty(journal: Journal) -> bool:
    """No region has an entry or a snapshot: the only store ``seed_journal`` fills."""
    for region in REGIONS:
        if await journal.last_position(region.code):
            return False
    for region in reversed(REGIONS):  # the smallest regions first: a seeded store answers fast
        if await journal.load_snapshot(region.code) is not None:
            return False
    return True


async def seed_journal(
    journal: Journal,
    scale: str,
    *,
    days: int = 90,
    now: float | None = None,
    booked: float = 0.0,
    epoch: int = 1,
    workers: int | None = None,
) -> Seeded:
    """Fill an EMPTY journal with the demo. Per region, ``server.demo.seed.seeded_state`` builds
    the state with the engine's own ``apply`` (clinics, opened days and ``booked`` share of the
    open cells pre-booked); its catalogue events (clinics registered, days opened) are appended
    as ONE journal entry, and the whole state is stored as the region's snapshot at that entry.
    The pre-booked times are in the snapshot only: no journal entry per booking. Recovery loads
    the snapshot like any other; the consumers, which read the journal, learn the clinics and
    have no seed bookings to replay (their patients are opaque ``seed-p…`` ids nobody can tell).
    The snapshot is saved twice so a FileJournal keeps an identical ``.snap.prev``: it is the
    pre-booked times' only copy. Start the actors afterwards.

    With ``booked``, regions are built in ``workers`` processes (default: one per CPU), largest
    first, each handing back only its packed payloads; ``workers=1`` builds them one at a time
    in a thread of this process (the default without ``booked``: a few seconds of work)."""
    from server.demo.catalogue import build_catalog
    from server.demo.seed import SeededRegion, seeded_region

    now_s = int(now if now is not None else time.time())
    scale_: str | int = int(scale) if scale.isdigit() else scale
    catalog = build_catalog(scale_)
    order = sorted(catalog, key=lambda r: -sum(len(res) for _, res in catalog[r]))
    if workers is None:
        workers = max(1, min(len(order), len(os.sched_getaffinity(0)))) if booked else 1
    loop = asyncio.get_running_loop()
    seeded: list[SeededRegion] = []
    pool: concurrent.futures.Executor
    if workers > 1:
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn")
        )
    else:
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="seed")
    with pool:
        pending = [
            loop.run_in_executor(
                pool, functools.partial(seeded_region, r, catalog[r], now=now_s, days=days, booked=booked)
            )
            for r in order
        ]
        for done in asyncio.as_completed(pending):
            region = await done
            position = await journal.append(region.region, epoch, region.catalogue)
            snapshot = Snapshot(position=position, payload=region.snapshot)
            await journal.save_snapshot(region.region, snapshot)
            await journal.save_snapshot(region.region, snapshot)
            seeded.append(dataclasses.replace(region, catalogue=b"", snapshot=b""))  # stored: let go
    refused = sum(r.refused for r in seeded)
    if refused:
        log.warning("the seed's generator made %d Book commands the engine refused", refused)
    first = next((r.first_clinic for r in seeded if r.region == "AB"), None)
    return Seeded(sum(r.clinics for r in seeded), sum(r.bookings for r in seeded), refused, first)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the seed's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def create_demo_accounts(settings: Settings, clinic: str | None) -> list[tuple[str, str, str]]:
    from server.identity.accounts import CLINIC_ROLES, EmailTaken, Role
    from server.stores import open_accounts

    store = open_accounts(settings.data_dir, settings.redis_url)
    made = []
    try:
        for email, name, role in DEMO_ACCOUNTS:
            at_clinic = Role(role) in CLINIC_ROLES
            if at_clinic and clinic is None:
                continue
            with contextlib.suppress(EmailTaken):  # a restart keeps the accounts it made before
                store.create_user(email, DEMO_PASSWORD, name, Role(role), clinic if at_clinic else None)
            made.append((email, role, (clinic or "") if at_clinic else ""))
    finally:
        store.close()
    return made


async def seed_store(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with data_directory_lock(settings.data_dir):
        return await _seed_store(args, settings)


async def _seed_store(args: argparse.Namespace, settings: Settings) -> int:
    journal = await open_journal(settings)
    try:
        if not await journal_is_empty(journal):
            print("the store already has clinics; not seeding")
            return 1
        started, cpu = time.perf_counter(), _cpu_seconds()
        seeded = await seed_journal(
            journal, args.scale, days=args.days, booked=args.booked, epoch=settings.epoch
        )
        print(
            f"seeded {seeded.clinics} clinics, {seeded.bookings} bookings ({args.booked:.0%} pre-booked)"
            f" in {time.perf_counter() - started:.1f}s ({_cpu_seconds() - cpu:.1f} CPU-seconds)"
        )
        accounts = create_demo_accounts(settings, seeded.first_clinic)
        print(f"demo accounts (password {DEMO_PASSWORD!r}): " + ", ".join(email for email, _, _ in accounts))
    finally:
        await journal.close()
    return 0


@contextlib.contextmanager
def first_plan() -> Iterator[None]:
    """Around the notifier's first plan of reminders, the start's last long job on the loop: its
    objects made with the collector off and then frozen, and the GIL handed to waiting threads
    often meanwhile (``server.runtime``)."""
    with long_lived_made(), threads_served_often():
        yield


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT, holding the data directory's lock (one writer only)."""
    settings = settings_from_args(args)
    with data_directory_lock(settings.data_dir):
        return await _serve(args, settings)


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    journal = await open_journal(settings)
    if (args.seed or args.seed_if_empty) and await journal_is_empty(journal):
        seeded = await seed_journal(journal, args.scale, booked=args.booked, epoch=settings.epoch)
        accounts = create_demo_accounts(settings, seeded.first_clinic)
        print(
            f"Seeded {seeded.clinics} demo clinics in all 21 regions, {seeded.bookings} times pre-booked.",
            flush=True,
        )
        print(f"Demo accounts (password {DEMO_PASSWORD!r}):", flush=True)
        for email, role, at in accounts:
            print(f"  {role:12s} {email}" + (f"  (clinic {at})" if at else ""), flush=True)
    process = None
    if settings.consumers == "process":
        # Started first: it loads its replicas of the snapshots while the regions recover here, not
        # on the other core beside the first requests (the mix's sign-ups in its first second).
        process = ConsumerProcess.of_store(
            settings.data_dir, settings.redis_url, Health(), settings.log_level, settings.consumers_hung_s
        )
        await process.start([] if settings.node else [region.code for region in REGIONS])
    with gc_paused():  # the whole start: collect once, after everything is loaded (tune_gc)
        built = await build_server(settings, journal=journal)
        consumers = await start_consumers(settings, built, process)
    tune_gc()
    server = built.server
    url = f"http://{'localhost' if settings.host in ('127.0.0.1', '0.0.0.0') else settings.host}:{settings.port}/"
    if getattr(args, "open", False):

        async def _open() -> None:
            while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
                await asyncio.sleep(0.1)
            print(f"tandtid is serving {url}", flush=True)
            webbrowser.open(url)

        asyncio.get_running_loop().create_task(_open())
    log.info(
        "serving %s at %s (journal: %s)",
        dt.date.today(),
        url,
        "redis" if settings.redis_url else f"files in {settings.data_dir}",
    )
    # uvicorn re-raises the signal that stopped it once it has drained (so that the process ends
    # the default way), and the default ends it at once: without this, nothing below ran on SIGTERM
    # or Ctrl-C (no actor stopped, no lease handed back, the journal not closed).
    for stopping in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stopping, _end_after_cleanup)
    try:
        await built.serve()
    finally:
        await consumers.stop()
        await built.close()
    return 0


def _end_after_cleanup(signum: int, _frame: object) -> None:
    """The re-raised signal: the clean-up after ``serve`` runs, then the process ends. Another one
    meanwhile (a second Ctrl-C) ends it at once, the default way."""
    signal.signal(signum, signal.SIG_DFL)


class InProcessConsumers:
    """The consumers on the server's own loop and threads (``--consumers in-process``): one feed of
    the journal for both, supervised; ``/ready`` tells. It reads the bookings from the actors' own
    state (no copy). With --node a region's actor may live on another node: the feed then keeps
    compact replicas of its own."""

    def __init__(self, settings: Settings, built: BuiltServer) -> None:
        self.feed = Feed(
            built.journal,
            health=built.app.state.health,
            states=None if settings.node else built.regions.state_of,
        )
        self.notifier = Notifier.from_env(self.feed, settings.data_dir, redis_url=settings.redis_url)
        self.notifier.first_plan = first_plan
        self.webhooks = WebhookDispatcher.open(self.feed, settings.data_dir, settings.redis_url)
        built.app.state.webhook_store = self.webhooks.store
        built.app.state.webhook_dispatcher = self.webhooks

    async def start(self, regions: list[str]) -> None:
        await self.notifier.start()
        await self.webhooks.start()
        await self.feed.start(regions)

    def follow(self, region: str) -> None:
        self.feed.follow(region)

    async def unfollow(self, region: str) -> None:
        await self.feed.unfollow(region)

    async def stop(self) -> None:
        await self.feed.stop()
        await self.notifier.stop()
        await self.webhooks.stop()


async def start_consumers(
    settings: Settings, built: BuiltServer, process: ConsumerProcess | None = None
) -> InProcessConsumers | ConsumerProcess:
    """The journal consumers, for the regions this node owns: in their own ``process``
    (``server.consumers.process``, started before the server was built: now told the regions this
    node owns, its health shown on /ready) or in this one. They run once per region in a cluster,
    with its owner (they resume from their durable cursors when the region moves). No await between
    telling them the regions and listening for moves: no move is missed."""
    consumers: InProcessConsumers | ConsumerProcess
    if process is not None:
        built.app.state.health = process.health  # with what it reported before the app existed
        built.app.state.consumer_process = process
        for region in sorted(built.regions.owned - process.regions):
            process.follow(region)
        for region in sorted(process.regions - built.regions.owned):
            process.unfollow(region)
        consumers = process
    else:
        consumers = InProcessConsumers(settings, built)
        await consumers.start(sorted(built.regions.owned))
    built.regions.add_ownership_listener(
        lambda region, owned: consumers.follow(region) if owned else consumers.unfollow(region)
    )
    return consumers
