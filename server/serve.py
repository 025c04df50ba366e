"""Process wiring: settings -> journal -> regions -> app -> uvicorn, and the demo seed.

Order on start: open the journal, start every region actor (each recovers from snapshot +
journal in the background; /ready says when), optionally seed an empty store, then serve.
On SIGTERM/SIGINT uvicorn stops accepting, finishes in-flight requests, and we stop the
actors (taking no new commands) and close the journal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from engine.calendar import day_of_epoch
from persistence.journal import Journal
from server import metrics
from server.consumers.notify.notifier import Notifier
from server.consumers.webhooks.dispatcher import WebhookDispatcher
from server.data_lock import data_directory_lock
from server.http.app import create_app
from server.http.protocol import http_protocol
from server.identity.accounts import AccountStore
from server.live.protocol import UVICORN_WS_OPTIONS
from server.regions.lease import LeaseManager
from server.regions.routing import Regions
from server.runtime import tune_gc
from server.settings import Settings

log = logging.getLogger("tandtid.serve")

DEMO_PASSWORD = "tandtid-demo"
DEMO_ACCOUNTS = (
    ("patient@demo.tandtid.se", "Demo Patient", "patient"),
    ("staff@demo.tandtid.se", "Demo Staff", "staff"),
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

    async def serve(self) -> None:
        await self.server.serve()

    async def close(self) -> None:
        if self.leases is not None:
            await self.leases.stop()  # hands every lease back: other nodes take over at once
            await self.leases.client.aclose()
        await self.regions.stop()
        await self.journal.close()


async def start_leases(settings: Settings, regions: Regions) -> LeaseManager:
    """With ``--node``: no region is written until this node holds its lease; the node takes
    its fair share of the regions now (and waits for them to recover), more or fewer later as
    nodes come and go. The other regions answer 503 here (forwarding to their owner is to come)."""
    if not settings.redis_url or not settings.node:
        raise ValueError("--node needs --redis: region leases live in Redis")
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.lease_ttl_ms / 3000,
        socket_connect_timeout=settings.lease_ttl_ms / 3000,
    )
    regions.stand_by()
    leases = LeaseManager(
        client,
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
    accounts: AccountStore | None = None,
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
    regions = make_regions(settings, journal, clock)
    leases = await start_leases(settings, regions) if settings.node else None
    if leases is None:
        await regions.start()
    app = create_app(settings, regions=regions, accounts=accounts)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "lifespan": "on",
        "ws_max_size": settings.max_ws_frame,
        "http": http_protocol(settings.max_header_bytes, settings.max_headers),  # 431 past the limits
        "proxy_headers": False,
        "access_log": False,
        **UVICORN_WS_OPTIONS,  # the hub writes pre-framed diffs straight to sockets; no deflate
        **uvicorn_options,
    }
    config = uvicorn.Config(app, **options)
    return BuiltServer(settings, journal, regions, app, config, uvicorn.Server(config), leases)


async def store_is_empty(regions: Regions) -> bool:
    """Whether no region has a clinic. A region that did not recover has a journal, so the
    store is not empty (never seed over a damaged store)."""
    if regions.not_ready():
        return False
    for region in regions.actors:
        if await regions.query(region, lambda state: len(state.clinics)):
            return False
    return True


PREBOOK_CHUNK = 5_000  # Book commands in flight per region at a time: memory stays flat
PREBOOK_LEAD_S = 15 * 60  # pre-booked times start at least this long after seeding begins


async def seed_regions(
    regions: Regions, scale: str, days: int = 90, now: float | None = None, booked: float = 0.0
) -> int:
    """Register the seed's clinics and open their days through the actors, then (``booked`` > 0)
    book about that share of the open cells (``server.demo.seed.prebook_region``), region by region
    in chunks. Returns clinics added."""
    from engine.errors import Refused
    from server.demo.catalogue import build_catalog
    from server.demo.seed import prebook_region, seed_commands

    now_s = int(now if now is not None else time.time())
    first_day = day_of_epoch(now_s)
    scale_: str | int = int(scale) if scale.isdigit() else scale
    per_region = seed_commands(scale_, first_day=first_day, days=days)
    catalog = build_catalog(scale_) if booked else {}
    clinics = bookings = refused = 0
    for region, commands in per_region.items():
        # one region at a time keeps memory flat; within a region the actor batches them
        results = await asyncio.gather(*(regions.submit(cmd) for cmd in commands))
        clinics += sum(1 for events in results for e in events if type(e).__name__ == "ClinicRegistered")
        if not booked:
            continue
        books = prebook_region(
            region, catalog[region], booked, first_day=first_day, days=days, not_before=now_s + PREBOOK_LEAD_S
        )
        while chunk := list(itertools.islice(books, PREBOOK_CHUNK)):
            for outcome in await asyncio.gather(*(regions.submit(b) for b in chunk), return_exceptions=True):
                if isinstance(outcome, Refused):
                    refused += 1  # e.g. a time that passed while seeding: the seed is not the test
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    bookings += 1
    if booked:
        log.info("pre-booked %d times (%d refused)", bookings, refused)
    return clinics


async def pass_over_seed(settings: Settings, journal: Journal) -> None:
    """Move the notifier's and the webhook dispatcher's cursors past the seed: its bookings were
    made by no one who can be told (opaque ``seed-p…`` patients), and acting on each of millions
    of them (one SQLite look-up per booking) would keep the server busy for half an hour. They
    still replay the seed into their projections, so later changes to those bookings are told."""
    from engine.model import REGIONS
    from server.consumers.notify.ledger import Ledger
    from server.consumers.webhooks.store import WebhookStore

    ends = {r.code: await journal.last_position(r.code) for r in REGIONS}
    ledger, hooks = (
        Ledger(settings.data_dir / "notify.sqlite3"),
        WebhookStore(settings.data_dir / "webhooks.sqlite3"),
    )
    try:
        for region, end in ends.items():
            ledger.advance(region, end)
            hooks.advance(region, end)
    finally:
        ledger.close()
        hooks.close()


async def first_clinic(regions: Regions, region: str = "AB") -> str | None:
    ids = await regions.query(region, lambda state: sorted(state.clinics))
    return ids[0] if ids else None


def create_demo_accounts(settings: Settings, clinic: str | None) -> list[tuple[str, str, str]]:
    from server.identity.accounts import AccountStore, EmailTaken, Role

    store = AccountStore(settings.data_dir / "accounts.sqlite3")
    made = []
    try:
        for email, name, role in DEMO_ACCOUNTS:
            if role == "staff" and clinic is None:
                continue
            with contextlib.suppress(EmailTaken):  # a restart keeps the accounts it made before
                store.create_user(email, DEMO_PASSWORD, name, Role(role), clinic if role == "staff" else None)
            made.append((email, role, (clinic or "") if role == "staff" else ""))
    finally:
        store.close()
    return made


async def seed_store(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    with data_directory_lock(settings.data_dir):
        return await _seed_store(args, settings)


async def _seed_store(args: argparse.Namespace, settings: Settings) -> int:
    journal = await open_journal(settings)
    regions = make_regions(settings, journal)
    await regions.start()
    try:
        if not await store_is_empty(regions):
            print("the store already has clinics; not seeding")
            return 1
        started = time.perf_counter()
        clinics = await seed_regions(regions, args.scale, days=args.days, booked=args.booked)
        print(
            f"seeded {clinics} clinics ({args.booked:.0%} pre-booked) in {time.perf_counter() - started:.1f}s"
        )
        await pass_over_seed(settings, journal)
        for actor in regions.actors.values():
            await actor.snapshot_now()
    finally:
        await regions.stop()
        await journal.close()
    return 0


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT, holding the data directory's lock (one writer only)."""
    settings = settings_from_args(args)
    with data_directory_lock(settings.data_dir):
        return await _serve(args, settings)


async def _serve(args: argparse.Namespace, settings: Settings) -> int:
    built = await build_server(settings)
    journal, regions = built.journal, built.regions
    if (args.seed or args.seed_if_empty) and await store_is_empty(regions):
        clinics = await seed_regions(regions, args.scale, booked=args.booked)
        await pass_over_seed(settings, journal)
        clinic = await first_clinic(regions)
        accounts = create_demo_accounts(settings, clinic)
        print(f"Seeded {clinics} demo clinics in all 21 regions.", flush=True)
        print(f"Demo accounts (password {DEMO_PASSWORD!r}):", flush=True)
        for email, role, at in accounts:
            print(f"  {role:8s} {email}" + (f"  (clinic {at})" if at else ""), flush=True)
    notifier = Notifier.from_env(journal, settings.data_dir)
    await notifier.start()
    webhooks = WebhookDispatcher.open(journal, settings.data_dir)
    await webhooks.start()
    tune_gc()
    built.app.state.webhook_store = webhooks.store
    built.app.state.webhook_dispatcher = webhooks
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
    try:
        await built.serve()
    finally:
        await notifier.stop()
        await webhooks.stop()
        await built.close()
    return 0
