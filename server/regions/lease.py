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

The rounds run in a thread of their own with their own (blocking) Redis connection, so an
event loop busy for longer than the TTL (a large recovery, a seed) keeps its leases. What the
thread decides reaches the loop as ``on_acquired``/``on_lost`` calls, run one after another in
the order decided. A loop that has not run a callback for ``max_stall_ms`` is taken for hung:
the thread stops renewing and the leases lapse to other nodes (a SIGSTOPped process stops
the thread with it).

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
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import NoScriptError, RedisError

from engine.model import REGIONS
from persistence import redis_client
from persistence.redis_journal import region_key
from server.cancelling import cancel_until_done

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
# What the loop is told, in order. "handed_back": lost, and released once the region stopped writing.
Change = tuple[Literal["acquired", "lost", "handed_back"], str, int]


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

    ``redis_url``: the Redis the leases live in (the manager opens its own blocking
    connection, used only by its thread). ``on_acquired(region, epoch)`` runs on the event
    loop when this node takes a region (start writing it with that epoch); ``on_lost(region,
    epoch)`` when it must stop writing it (lost, expired, unrenewable or handed back). Either
    may be a plain function or a coroutine function; they run one at a time, in order.
    ``await start()``, then ``await stop()`` (which hands every lease back and closes).
    """

    def __init__(
        self,
        redis_url: str,
        node: str,
        advertise: str,
        *,
        regions: tuple[str, ...] | None = None,
        ttl_ms: int = 5_000,
        node_ttl_ms: int | None = None,
        max_stall_ms: int = 30_000,
        on_acquired: Callback | None = None,
        on_lost: Callback | None = None,
    ) -> None:
        if " " in node or not node:
            raise ValueError("a node name is one word")
        self.client = redis_client.connect(
            redis_url, socket_timeout=ttl_ms / 3000, socket_connect_timeout=ttl_ms / 3000
        )
        self.node = node
        self.advertise = advertise
        self.regions = regions if regions is not None else tuple(r.code for r in REGIONS)
        self.ttl_ms = ttl_ms
        self.node_ttl_ms = node_ttl_ms if node_ttl_ms is not None else ttl_ms
        self.interval_s = ttl_ms / 3000  # renew three times per TTL
        self.margin_s = ttl_ms / 5000  # give a lease up this long before it could expire
        self.max_stall_s = max_stall_ms / 1000
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.live_nodes = 0
        self.seen_owners: dict[str, Owner | None] = {}  # as of the last round (forwarding reads it)
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()  # guards _held: the thread changes it, the loop reads it
        self._rank = sorted(self.regions, key=lambda code: _rendezvous(node, code), reverse=True)
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_seen = time.monotonic()
        self._changes: asyncio.Queue[Change] | None = None
        self._teller: asyncio.Task[None] | None = None
        self._scripts: dict[str, Any] = {
            name: self.client.register_script(source)
            for name, source in (
                ("acquire", ACQUIRE_LUA),
                ("renew", RENEW_LUA),
                ("release", RELEASE_LUA),
                ("heartbeat", HEARTBEAT_LUA),
            )
        }

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """One balancing round now, its callbacks awaited (so a lone node owns its share before
        serving), then rounds every ``ttl / 3`` in the lease thread."""
        self._loop = asyncio.get_running_loop()
        self._loop_seen = time.monotonic()
        try:
            changes = await asyncio.to_thread(self.round)
        except (RedisError, OSError) as exc:
            log.warning("node %s: first lease round failed (%s)", self.node, type(exc).__name__)
            changes = []
        for change in changes:
            await self._tell(change)
        self._changes = asyncio.Queue()
        self._teller = asyncio.create_task(self._tell_forever(self._changes), name=f"leases-{self.node}")
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, name=f"leases-{self.node}", daemon=True)
        self._thread.start()

    async def pause(self) -> None:
        """Stop renewing WITHOUT handing anything back: what a frozen process looks like
        from outside (tests use it for the stale-owner case); ``start()`` resumes."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._halt.set()
            await asyncio.to_thread(thread.join)
        teller, self._teller = self._teller, None
        if teller is not None:
            assert self._changes is not None
            # What the thread decided is told before pausing, unless a callback hangs.
            told = asyncio.ensure_future(self._changes.join())
            await asyncio.wait({told}, timeout=self.ttl_ms / 1000)
            told.cancel()
            await cancel_until_done(teller)  # a callback's redis-py call may swallow one cancel

    async def stop(self) -> None:
        """Stop, hand every lease back (the regions stop writing first) and close."""
        await self.pause()
        for region, held in self.held.items():
            with self._lock:
                self._held.pop(region, None)
            await self._tell(("handed_back", region, held.epoch))
        with contextlib.suppress(RedisError, OSError):
            await asyncio.to_thread(self.client.zrem, NODES_KEY, self.node)
        self.client.close()

    @property
    def held(self) -> dict[str, _Held]:
        """A copy of the leases held now, by region."""
        with self._lock:
            return dict(self._held)

    def owns(self, region: str) -> bool:
        held = self._held.get(region)
        return held is not None and time.monotonic() < held.deadline

    def epoch_of(self, region: str) -> int | None:
        held = self._held.get(region)
        return held.epoch if held is not None else None

    async def owners(self) -> dict[str, Owner | None]:
        """Every region's current lease holder, read from Redis now (one pipelined round)."""
        return await asyncio.to_thread(self._owners)

    # -- the lease thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._halt.wait(self.interval_s):
            assert self._loop is not None
            stalled = time.monotonic() - self._loop_seen
            try:
                self._loop.call_soon_threadsafe(self._seen)
            except RuntimeError:
                return  # the loop is closed: nothing left to write for
            changes: list[Change] = []
            if stalled > self.max_stall_s:
                log.error(
                    "node %s: the event loop has not answered for %.0f s; letting its leases lapse",
                    self.node,
                    stalled,
                )
            else:
                try:
                    changes = self.round()
                except (RedisError, OSError) as exc:
                    log.warning("node %s: lease round failed (%s)", self.node, type(exc).__name__)
            changes += self._expire_overdue()
            for change in changes:
                self._post(change)

    def _seen(self) -> None:
        self._loop_seen = time.monotonic()

    def _post(self, change: Change) -> None:
        assert self._loop is not None and self._changes is not None
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._changes.put_nowait, change)

    async def _tell_forever(self, changes: asyncio.Queue[Change]) -> None:
        while True:
            change = await changes.get()
            try:
                await self._tell(change)
            except Exception:  # a callback's bug must not stop the telling of the next
                log.exception("node %s: lease callback for region %s failed", self.node, change[1])
            finally:
                changes.task_done()

    async def _tell(self, change: Change) -> None:
        kind, region, epoch = change
        callback = self.on_acquired if kind == "acquired" else self.on_lost
        if callback is not None:
            result = callback(region, epoch)
            if inspect.isawaitable(result):
                await result
        if kind == "handed_back":
            await asyncio.to_thread(self._release, region, epoch)

    # -- the balancing round (in the lease thread, or before it starts) ----------------

    def round(self) -> list[Change]:
        """Heartbeat, renew what is held, give back surplus, take free regions up to the share.
        Blocking: runs in the lease thread. Returns what the loop must be told, in order."""
        sent = time.monotonic()
        self.live_nodes = int(
            self._scripts["heartbeat"](keys=[NODES_KEY], args=[self.node, self.node_ttl_ms])
        )
        changes = self._renew(sent)
        owners = self._owners()
        self.seen_owners = owners
        share = fair_share(len(self.regions), self.live_nodes)
        held = self.held
        surplus = len(held) - share
        if surplus > 0:
            # Hand back the regions that rank lowest for this node.
            for region in [r for r in reversed(self._rank) if r in held][:surplus]:
                _, _, epoch = self._give_up(region)
                changes.append(("handed_back", region, epoch))
            return changes
        wanted = share - len(held)
        for region in self._rank:
            if wanted <= 0:
                break
            if region in held or owners[region] is not None:
                continue
            acquired = self._acquire(region)
            if acquired is not None:
                changes.append(("acquired", region, acquired))
                wanted -= 1
        return changes

    def _owners(self) -> dict[str, Owner | None]:
        pipe = self.client.pipeline(transaction=False)
        for region in self.regions:
            pipe.get(region_key(region, "lease"))
        values = pipe.execute()
        return {region: parse_lease(v) for region, v in zip(self.regions, values, strict=True)}

    def _renew(self, sent: float) -> list[Change]:
        held = self.held
        if not held:
            return []
        replies = self._renew_all(held)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # The server lost its scripts (restart, SCRIPT FLUSH): none of those renewals ran.
            self.client.script_load(RENEW_LUA)
            replies = self._renew_all(held)
        changes: list[Change] = []
        for region, reply in zip(held, replies, strict=True):
            if isinstance(reply, Exception):
                continue  # unknown outcome: the local deadline decides
            if int(reply) == 1:
                with self._lock:
                    if region in self._held:
                        self._held[region].deadline = sent + self.ttl_ms / 1000 - self.margin_s
            else:
                log.warning(
                    "node %s: lease of region %s expired or was taken over; stepping down", self.node, region
                )
                changes.append(self._give_up(region))
        return changes

    def _renew_all(self, held: dict[str, _Held]) -> list[Any]:
        """The renew script for every held lease, pipelined (split per shard on a Redis Cluster;
        EVALSHA by name: redis-py's cluster pipeline refuses its evalsha method)."""
        pipe = self.client.pipeline(transaction=False)
        sha = self._scripts["renew"].sha
        for region, lease in held.items():
            pipe.execute_command("EVALSHA", sha, 1, region_key(region, "lease"), lease.value, self.ttl_ms)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies

    def _acquire(self, region: str) -> int | None:
        sent = time.monotonic()
        reply = self._scripts["acquire"](
            keys=[
                region_key(region, "lease"),
                region_key(region, "lease_epoch"),
                region_key(region, "epoch"),
            ],
            args=[self.ttl_ms, f"{self.node} {self.advertise}"],
        )
        if reply is None:
            return None
        epoch = int(reply)
        with self._lock:
            self._held[region] = _Held(epoch, self._value(epoch), sent + self.ttl_ms / 1000 - self.margin_s)
        log.info("node %s: acquired region %s at epoch %d", self.node, region, epoch)
        return epoch

    def _expire_overdue(self) -> list[Change]:
        now = time.monotonic()
        changes: list[Change] = []
        for region, held in self.held.items():
            if now >= held.deadline:
                log.warning(
                    "node %s: could not renew the lease of region %s in time; stepping down",
                    self.node,
                    region,
                )
                changes.append(self._give_up(region))
        return changes

    def _give_up(self, region: str) -> Change:
        """Forget the lease here; the loop is told (``on_lost``) by the caller's change."""
        with self._lock:
            held = self._held.pop(region)
        return ("lost", region, held.epoch)

    def _value(self, epoch: int) -> str:
        return f"{epoch} {self.node} {self.advertise}"

    def _release(self, region: str, epoch: int) -> None:
        """Delete the lease if it is still ours (another node may take it at once)."""
        try:
            self._scripts["release"](keys=[region_key(region, "lease")], args=[self._value(epoch)])
        except (RedisError, OSError) as exc:
            log.warning("node %s: could not release region %s (%s)", self.node, region, type(exc).__name__)


def _rendezvous(node: str, region: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{node}\0{region}".encode(), digest_size=8).digest(), "big")
