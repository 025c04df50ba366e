"""Region leases on Redis: which node owns (writes) which region, and with which epoch.

Keys (no personal data; a region's keys share its ``{AB}`` Redis Cluster hash tag)::

    tandtid:{AB}:lease        "<epoch> <node> <advertised address>", PX ttl; only the holder renews
    tandtid:{AB}:lease_epoch  INCR counter: the last epoch handed out for the region
    tandtid:{AB}:epoch        the journal's highest accepted epoch (see RedisStreamJournal)
    tandtid:nodes             sorted set: node name -> last heartbeat (Redis server time, ms)

Acquiring is one Lua script: ``SET lease NX PX ttl``; on success the epoch is ``INCR`` of the
counter (raised above the journal's accepted epoch if a single-node run left it higher), and
the journal's accepted epoch is raised to it AT ONCE. That fences the previous owner before
the new one even recovers: an append the old owner makes after the takeover is refused with
StaleEpoch, so the new owner's recovered state can never miss an acknowledged write.

Renewal (every ``ttl / 3``) is a compare-and-renew script: PEXPIRE only while the value is
still ours. A lease that is not ours any more, or that could not be renewed before its local
deadline (``ttl`` minus a safety margin after the last renewal was SENT), is given up at once
through ``on_lost`` so the region stops writing; the journal fence covers the gap between.

Spreading: each node heartbeats into ``tandtid:nodes``; the live nodes are those seen within
``node_ttl``; a node holds at most ``ceil(regions / live nodes)`` leases, gives back its surplus
and takes free regions up to its share, preferring the regions that rank highest for it by a
rendezvous hash so that nodes starting together mostly try different regions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.model import REGIONS
from persistence.redis_journal import region_key

log = logging.getLogger("tandtid.lease")

NODES_KEY = "tandtid:nodes"

ACQUIRE_LUA = """
if not redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[1]) then
  return false
end
local epoch = redis.call('INCR', KEYS[2])
local accepted = tonumber(redis.call('GET', KEYS[3]) or '0')
if epoch <= accepted then
  epoch = accepted + 1
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[3], epoch)
redis.call('SET', KEYS[1], epoch .. ' ' .. ARGV[2], 'PX', ARGV[1])
return epoch
"""

RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

HEARTBEAT_LUA = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"""

Callback = Callable[[str, int], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a region's lease, as read from Redis."""

    epoch: int
    node: str
    address: str


def parse_lease(value: bytes | str | None) -> Owner | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split(" ", 2)
    if len(parts) != 3:
        return None  # "pending": mid-acquire (never visible outside the script) or foreign
    return Owner(int(parts[0]), parts[1], parts[2])


def fair_share(regions: int, live_nodes: int) -> int:
    return math.ceil(regions / max(1, live_nodes))


@dataclass(slots=True)
class _Held:
    epoch: int
    value: str
    deadline: float  # monotonic: past this the lease may have expired in Redis


class LeaseManager:
    """Acquires, renews and gives up region leases for one node.

    ``on_acquired(region, epoch)`` runs when this node takes a region (start writing it with
    that epoch); ``on_lost(region, epoch)`` when it must stop writing it (lost, expired,
    unrenewable or handed back). Either may be a plain function or a coroutine function.
    ``await start()``, then ``await stop()`` (which hands every lease back).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        node: str,
        advertise: str,
        *,
        regions: tuple[str, ...] | None = None,
        ttl_ms: int = 5_000,
        node_ttl_ms: int | None = None,
        on_acquired: Callback | None = None,
        on_lost: Callback | None = None,
    ) -> None:
        if " " in node or not node:
            raise ValueError("a node name is one word")
        self.client = client
        self.node = node
        self.advertise = advertise
        self.regions = regions if regions is not None else tuple(r.code for r in REGIONS)
        self.ttl_ms = ttl_ms
        self.node_ttl_ms = node_ttl_ms if node_ttl_ms is not None else ttl_ms
        self.interval_s = ttl_ms / 3000  # renew three times per TTL
        self.margin_s = ttl_ms / 5000  # give a lease up this long before it could expire
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.held: dict[str, _Held] = {}
        self.live_nodes = 0
        self._rank = sorted(self.regions, key=lambda code: _rendezvous(node, code), reverse=True)
        self._task: asyncio.Task[None] | None = None
        self._scripts: dict[str, Any] = {
            name: client.register_script(source)
            for name, source in (
                ("acquire", ACQUIRE_LUA),
                ("renew", RENEW_LUA),
                ("release", RELEASE_LUA),
                ("heartbeat", HEARTBEAT_LUA),
            )
        }

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """One balancing round now (so a lone node owns its share before serving), then
        keep going every ``ttl / 3`` in the background."""
        await self.round()
        self._task = asyncio.create_task(self._loop(), name=f"leases-{self.node}")

    async def pause(self) -> None:
        """Stop renewing WITHOUT handing anything back: what a frozen process looks like
        from outside (tests use it for the stale-owner case); ``start()`` resumes."""
        task, self._task = self._task, None
        if task is None:
            return
        # Cancelled again until it ends: on Python 3.11 a wait_for inside redis-py can swallow a
        # cancel that arrives as its reply does, and the loop would go on renewing for ever.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError):
            task.result()  # the loop only ever ends by a cancel

    async def stop(self) -> None:
        """Stop and hand every lease back (the regions stop writing first)."""
        await self.pause()
        for region in list(self.held):
            await self._give_up(region, release=True)
        with contextlib.suppress(RedisError, OSError):
            await self.client.zrem(NODES_KEY, self.node)

    def owns(self, region: str) -> bool:
        held = self.held.get(region)
        return held is not None and time.monotonic() < held.deadline

    def epoch_of(self, region: str) -> int | None:
        held = self.held.get(region)
        return held.epoch if held is not None else None

    async def owners(self) -> dict[str, Owner | None]:
        """Every region's current lease holder, read from Redis (one pipelined round)."""
        pipe = self.client.pipeline(transaction=False)
        for region in self.regions:
            pipe.get(region_key(region, "lease"))
        values = await pipe.execute()
        return {region: parse_lease(v) for region, v in zip(self.regions, values, strict=True)}

    # -- the balancing round -------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.round()
            except (RedisError, OSError) as exc:
                log.warning("node %s: lease round failed (%s)", self.node, type(exc).__name__)
            await self._expire_overdue()

    async def round(self) -> None:
        """Heartbeat, renew what is held, give back surplus, take free regions up to the share."""
        sent = time.monotonic()
        self.live_nodes = int(
            await self._scripts["heartbeat"](keys=[NODES_KEY], args=[self.node, self.node_ttl_ms])
        )
        await self._renew(sent)
        share = fair_share(len(self.regions), self.live_nodes)
        surplus = len(self.held) - share
        if surplus > 0:
            # Hand back the regions that rank lowest for this node.
            for region in [r for r in reversed(self._rank) if r in self.held][:surplus]:
                await self._give_up(region, release=True)
            return
        wanted = share - len(self.held)
        if wanted <= 0:
            return
        owners = await self.owners()
        for region in self._rank:
            if wanted <= 0:
                break
            if region in self.held or owners[region] is not None:
                continue
            if await self._acquire(region):
                wanted -= 1

    async def _renew(self, sent: float) -> None:
        regions = list(self.held)
        if not regions:
            return
        pipe = self.client.pipeline(transaction=False)
        for region in regions:
            await self._scripts["renew"](
                keys=[region_key(region, "lease")], args=[self.held[region].value, self.ttl_ms], client=pipe
            )
        replies = await pipe.execute(raise_on_error=False)
        for region, reply in zip(regions, replies, strict=True):
            held = self.held.get(region)
            if held is None or isinstance(reply, Exception):
                continue  # unknown outcome: the local deadline decides
            if int(reply) == 1:
                held.deadline = sent + self.ttl_ms / 1000 - self.margin_s
            else:
                log.warning(
                    "node %s: lease of region %s expired or was taken over; stepping down", self.node, region
                )
                await self._give_up(region, release=False)

    async def _acquire(self, region: str) -> bool:
        sent = time.monotonic()
        reply = await self._scripts["acquire"](
            keys=[
                region_key(region, "lease"),
                region_key(region, "lease_epoch"),
                region_key(region, "epoch"),
            ],
            args=[self.ttl_ms, f"{self.node} {self.advertise}"],
        )
        if reply is None:
            return False
        epoch = int(reply)
        self.held[region] = _Held(
            epoch, f"{epoch} {self.node} {self.advertise}", sent + self.ttl_ms / 1000 - self.margin_s
        )
        log.info("node %s: acquired region %s at epoch %d", self.node, region, epoch)
        await _call(self.on_acquired, region, epoch)
        return True

    async def _expire_overdue(self) -> None:
        now = time.monotonic()
        for region in [r for r, held in self.held.items() if now >= held.deadline]:
            log.warning(
                "node %s: could not renew the lease of region %s in time; stepping down", self.node, region
            )
            await self._give_up(region, release=False)

    async def _give_up(self, region: str, *, release: bool) -> None:
        """Stop writing the region first, then (when asked) hand the lease back."""
        held = self.held.pop(region, None)
        if held is None:
            return
        await _call(self.on_lost, region, held.epoch)
        if release:
            try:
                await self._scripts["release"](keys=[region_key(region, "lease")], args=[held.value])
            except (RedisError, OSError) as exc:
                log.warning(
                    "node %s: could not release region %s (%s)", self.node, region, type(exc).__name__
                )


def _rendezvous(node: str, region: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{node}\0{region}".encode(), digest_size=8).digest(), "big")


async def _call(callback: Callback | None, region: str, epoch: int) -> None:
    if callback is None:
        return
    result = callback(region, epoch)
    if inspect.isawaitable(result):
        await result
