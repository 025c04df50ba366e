"""Region leases on a real redis-server: two nodes share the 21 regions fairly, a paused
owner's regions move to the other node within seconds under a higher epoch, and the stale
owner's appends are refused by the journal (its actor is fenced) and it steps down."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from engine.commands import Book
from engine.model import REGIONS
from persistence.journal import StaleEpoch
from persistence.redis_journal import RedisStreamJournal, region_key
from server.regions.actor import Lifecycle, RegionActor, Unavailable
from server.regions.lease import LeaseManager, parse_lease
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands
from tests.support.live_server import LiveServer, catalog_commands
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually, scaled

pytestmark = pytest.mark.redis

TTL_MS = 1_500
ALL = {r.code for r in REGIONS}


class Node:
    """A lease manager plus the record of what its callbacks were told."""

    def __init__(self, url: str, name: str, **options: Any) -> None:
        self.acquired: list[tuple[str, int]] = []
        self.lost: list[tuple[str, int]] = []
        self.leases = LeaseManager(
            url,
            name,
            f"http://{name}.invalid:8000",
            ttl_ms=TTL_MS,
            on_acquired=lambda region, epoch: self.acquired.append((region, epoch)),
            on_lost=lambda region, epoch: self.lost.append((region, epoch)),
            **options,
        )

    @property
    def held(self) -> set[str]:
        return set(self.leases.held)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def two_nodes(redis_server: RedisServer) -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node(redis_server.url, "node-a"), Node(redis_server.url, "node-b")
    await a.leases.start()
    await b.leases.start()
    await eventually(
        lambda: a.held | b.held == ALL and {len(a.held), len(b.held)} == {10, 11},
        what="the 21 regions split 11/10 between the two nodes",
    )
    yield a, b
    await a.leases.stop()
    await b.leases.stop()


async def test_two_nodes_share_the_regions_fairly_and_redis_agrees(
    client: aioredis.Redis, two_nodes: tuple[Node, Node]
) -> None:
    a, b = two_nodes
    assert not a.held & b.held
    owners = await a.leases.owners()
    for region in ALL:
        owner = owners[region]
        assert owner is not None
        node = a if region in a.held else b
        assert owner.node == node.leases.node
        assert owner.address == node.leases.advertise
        assert owner.epoch == node.leases.epoch_of(region)
        # The journal already fences below the lease's epoch, before the owner appends anything.
        assert int(await client.get(region_key(region, "epoch"))) == owner.epoch
    # Key names carry the region hash tag and no personal data.
    keys = {k.decode() for k in await client.keys("tandtid:*")}
    assert "tandtid:{AB}:lease" in keys and "tandtid:nodes" in keys
    # Leases outlive several TTLs while renewed (a renewal that silently failed would drop them).
    await asyncio.sleep(3 * TTL_MS / 1000)
    assert len(a.held) + len(b.held) == 21
    for node in (a, b):
        assert len(node.acquired) - len(node.lost) == len(node.held)  # every take and give-up was told


async def test_a_paused_owner_loses_its_regions_and_its_stale_appends_are_refused(
    redis_server: RedisServer, client: aioredis.Redis, two_nodes: tuple[Node, Node]
) -> None:
    a, b = two_nodes
    stale, other = (a, b) if "AB" in a.held else (b, a)
    old_epoch = stale.leases.epoch_of("AB")
    assert old_epoch is not None
    stale_regions = stale.held

    journal = RedisStreamJournal(redis_server.url)
    await journal.open()
    actor = RegionActor("AB", journal, epoch=old_epoch, clock=lambda: NOW, retry_backoff_s=(0.05, 0.2))
    try:
        await actor.start()
        for command in setup_commands():
            await actor.submit(command)  # the owner writes while it holds the lease

        await stale.leases.pause()  # frozen past its TTL, as a SIGSTOPped process would be
        await eventually(
            lambda: other.held == ALL, what="the other node to take every region of the paused one"
        )
        for region in stale_regions:
            new_epoch = other.leases.epoch_of(region)
            assert new_epoch is not None and new_epoch > (dict(stale.acquired)[region])
        owner = parse_lease(await client.get(region_key("AB", "lease")))
        assert owner is not None and owner.node == other.leases.node

        # The stale owner wakes and writes with its old epoch: the journal refuses it, its actor
        # is fenced and the booking is not acknowledged.
        with pytest.raises(Unavailable):
            await actor.submit(Book("AB-b1", "p1", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900))
        assert actor.lifecycle is Lifecycle.FENCED
        with pytest.raises(StaleEpoch):
            await journal.append("AB", old_epoch, b"late")

        # Its lease manager resumes, finds the leases taken over and steps down from every one.
        lost_before = len(stale.lost)
        await stale.leases.start()
        assert {region for region, _ in stale.lost[lost_before:]} == stale_regions
        # ... and then gets its fair share back, under newer epochs than the other node's.
        await eventually(lambda: {len(a.held), len(b.held)} == {10, 11}, what="the two nodes to share again")
    finally:
        await actor.stop()
        await journal.close()


async def test_a_node_that_cannot_renew_steps_down_before_its_lease_can_expire(
    redis_server: RedisServer, client: aioredis.Redis
) -> None:
    node = Node(redis_server.url, "node-a")
    await node.leases.start()
    assert node.held == ALL  # a lone node owns everything
    redis_server.kill()
    # The lease thread forgets a lease first, then the loop is told (on_lost): wait for both.
    await eventually(
        lambda: node.held == set() and {region for region, _ in node.lost} == ALL,
        what="the node to give up the leases it cannot renew, each told to the loop",
    )
    assert len(node.lost) == len(ALL)  # each region told once
    await node.leases.pause()


async def test_a_busy_event_loop_keeps_its_leases_while_a_hung_one_lets_them_lapse(
    redis_server: RedisServer, client: aioredis.Redis
) -> None:
    """Renewal runs in the lease thread: a loop blocked for several TTLs (a large recovery)
    keeps every lease at the same epoch and the other node gets none; a loop blocked past
    ``max_stall_ms`` is taken for hung and its leases go to the other node."""
    busy = Node(redis_server.url, "node-a", max_stall_ms=6 * TTL_MS)
    other = Node(redis_server.url, "node-b")
    await busy.leases.start()
    await other.leases.start()
    try:
        await eventually(
            lambda: (
                {len(busy.held), len(other.held)} == {10, 11}
                and all(len(n.acquired) - len(n.lost) == len(n.held) for n in (busy, other))
            ),
            what="the two nodes to share, and their loops to be told",
        )
        held = {node.leases.node: node.held for node in (busy, other)}
        epochs = {region: node.leases.epoch_of(region) for node in (busy, other) for region in node.held}
        told = [(len(node.acquired), len(node.lost)) for node in (busy, other)]
        time.sleep(3 * TTL_MS / 1000)  # noqa: ASYNC251 - the point: nothing else runs on this loop
        assert {node.leases.node: node.held for node in (busy, other)} == held
        owners = await other.leases.owners()
        assert {region: owner.epoch for region, owner in owners.items() if owner is not None} == epochs
        await asyncio.sleep(TTL_MS / 1000)  # the loop runs the callbacks of what the thread decided
        assert [(len(node.acquired), len(node.lost)) for node in (busy, other)] == told  # nothing moved

        time.sleep(8 * TTL_MS / 1000)  # noqa: ASYNC251 - hung past max_stall_ms
        await eventually(lambda: other.held == ALL, what="the hung node's leases to lapse to the other")
        assert busy.held == set()
        await eventually(
            lambda: {region for region, _ in busy.lost[told[0][1] :]} == held["node-a"],
            what="the hung node's loop to be told, once it runs",
        )
    finally:
        await busy.leases.stop()
        await other.leases.stop()


# -- tandtid serve --redis URL --node NAME --advertise ADDRESS ------------------------------------


def owned(server: LiveServer) -> set[str]:
    assert server.regions is not None
    return {code for code, actor in server.regions.actors.items() if actor.ready}


async def test_served_nodes_write_only_the_regions_they_own_and_take_over_on_shutdown(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    def node(name: str) -> LiveServer:
        return LiveServer(
            tmp_path / name,
            redis_url=redis_server.url,
            catalog=False,
            node=name,
            advertise=f"http://{name}.invalid:8000",
            lease_ttl_ms=TTL_MS,
        )

    a = node("node-a").start()
    b: LiveServer | None = None
    try:
        assert owned(a) == ALL  # alone, a node owns every region
        assert a.regions is not None
        for command in catalog_commands():
            await asyncio.wrap_future(a.call(a.regions.submit(command)))
        b = node("node-b").start()
        await eventually(
            lambda: {len(owned(a)), len(owned(b))} == {10, 11} and owned(a) | owned(b) == ALL,
            what="the two served nodes to split the regions",
        )
        owner, other = (a, b) if "AB" in owned(a) else (b, a)
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.get(f"{owner.url}/api/regions/AB/summary")
            assert r.status_code == 200 and len(r.json()["clinics"]) == 2, r.text
            # The other node answers reads of AB from its replica (the owner's advertised address
            # is not even reachable here) and has nothing down; a command is forwarded (and fails).
            r = await client.get(f"{other.url}/api/regions/AB/summary")
            assert r.status_code == 200 and len(r.json()["clinics"]) == 2, r.text
            ready = (await client.get(f"{other.url}/ready")).json()
            assert ready["status"] == "ready" and "AB" not in ready["regions_owned"], ready
            assert other.regions is not None and other.regions.actors["AB"].following

            owner.stop()  # a clean shutdown hands its leases back: the other node takes them at once
            await eventually(lambda: owned(other) == ALL, what="the other node to own every region")
            r = await client.get(f"{other.url}/api/regions/AB/summary")
            assert r.status_code == 200 and len(r.json()["clinics"]) == 2, (
                r.text
            )  # recovered from the journal
    finally:
        for server in (a, b):
            if server is not None:
                server.stop()


async def test_pause_ends_even_when_a_callback_swallows_the_cancel(
    redis_server: RedisServer, client: aioredis.Redis
) -> None:
    """On Python 3.11 redis-py's wait_for can swallow a cancel that arrives with a reply; a lease
    callback doing Redis work could then keep the loop's teller alive and pause()/stop() hang."""
    node = Node(redis_server.url, "node-a")
    swallowing = asyncio.Event()

    async def on_lost(region: str, epoch: int) -> None:
        node.lost.append((region, epoch))
        if swallowing.is_set():
            return
        swallowing.set()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as wait_for does on 3.11
            await asyncio.sleep(3600)

    node.leases.on_lost = on_lost
    await node.leases.start()
    await client.delete(region_key("AB", "lease"))  # lost: the next renewal finds it gone
    await eventually(swallowing.is_set, what="the lost lease's callback")
    pausing = asyncio.create_task(node.leases.pause())
    await asyncio.wait({pausing}, timeout=scaled(10.0))
    assert pausing.done(), "pause() still waits for a teller that took its cancel for nothing"
    await pausing
    await node.leases.stop()
    assert node.held == set()
