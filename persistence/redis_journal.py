"""RedisStreamJournal: one Redis stream per region, one server round trip per append.

Keys of region ``AB`` (the braces are a Redis Cluster hash tag: one shard per region)::

    tandtid:{AB}:journal    stream; each entry has fields position, epoch, payload (in that order)
    tandtid:{AB}:position   INCR counter: the last position handed out
    tandtid:{AB}:epoch      the highest epoch accepted (fencing token)
    tandtid:{AB}:snapshot             hash: position, stream_id, version, length, crc32, chunks,
                                      previous (the pointer to the current snapshot)
    tandtid:{AB}:snapshot:<version>   list: that snapshot's payload in chunks of SNAPSHOT_CHUNK bytes

An append is one EVALSHA of a Lua script that fences the epoch, INCRs the position and
XADDs the entry atomically. Group commit: the appends of all regions made in the same
event-loop instant (and those made while a round is in flight) travel in ONE pipelined
round trip; each region's script still runs atomically and is fenced on its own. A round
that fails fails every append in it. redis-py's retries are switched off: retrying a
non-idempotent append after a lost reply could journal a batch twice (only an append the
server refused with NOSCRIPT, which therefore did not run, is sent again after loading the
script). Every Redis or socket failure surfaces as JournalUnavailable; a lost reply means
the entry MAY be written, which is why the actor reloads from the journal after any failed
append.

Reading from position ``after`` starts at the stream id stored with the snapshot when
the snapshot is at or before ``after`` (or at an id this object remembers from its own
recent appends), else at the start of the stream, and skips entries with position <=
``after``: recovery (after == snapshot position) skips nothing; a tail from an arbitrary
old position costs one transfer of the entries since the snapshot.

A snapshot (up to ~100 MB for Stockholm) is never one command: Redis runs one command at a
time and, under ``appendfsync always``, a 96 MB HSET held every client's appends (every region,
every node) for 0.3-1.3 s. ``save_snapshot`` RPUSHes the payload in chunks, each its own round trip
(other clients' commands run between them), to a new ``version`` key that expires unless the save
finishes (a crash halfway leaves nothing behind for good), then SWITCH_LUA atomically checks that
every chunk is there and points the hash at the new version; the old version's chunks (and those of
the one before, if a crash came between a switch and its cleanup) are UNLINKed after. A reader
reads the hash, then the chunks one by one, and checks length and CRC-32 against the hash: a chunk
that vanished because a newer snapshot replaced it makes it start again; a missing or damaged one
under an unchanged pointer is damage: logged, listed in ``problems()`` and not loaded (recovery
replays the whole stream, which refuses to start past a trimmed head). A hash with a ``payload``
field and no ``version`` is the older one-command format: still read, in one HGET.

After a snapshot is saved, history older than the snapshot AND older than
``retention_s`` (by the server clock in the stream ids) is trimmed with XTRIM MINID.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, OutOfMemoryError, ReadOnlyError, RedisError
from redis.retry import Retry

from persistence.journal import Entry, Journal, JournalUnavailable, Snapshot, StaleEpoch
from persistence.redis_client import connect_async, is_cluster

_T = TypeVar("_T")

log = logging.getLogger(__name__)

PAGE = 10_000  # most stream entries per XRANGE round trip
PAGE_MIN = 100  # fewest (the first page of a read)
PAGE_BYTES = 8 * 1024 * 1024  # aimed-for payload bytes per XRANGE page
TAIL_BLOCK_MS = 1_000  # XREAD BLOCK; well under the socket timeout
RECENT_IDS = 4_096  # remembered (position -> stream id) of this object's appends per region
SNAPSHOT_CHUNK = 1024 * 1024  # payload bytes per snapshot command (write and read)
SNAPSHOT_WRITING_MS = 600_000  # a half-written snapshot's chunks expire this long after the last one
SNAPSHOT_LOAD_ATTEMPTS = 5  # reads started again when newer snapshots replace the one being read
WRITE_PROBE = "tandtid:write-probe"  # ping's probe write while writes fail (expires in a second)

APPEND_LUA = """
local accepted = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = tonumber(ARGV[1])
if epoch < accepted then
  return {-1, tostring(accepted)}
end
if epoch > accepted then
  redis.call('SET', KEYS[1], ARGV[1])
end
local position = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[3], '*', 'position', position, 'epoch', ARGV[1], 'payload', ARGV[2])
return {position, id}
"""


# KEYS: the snapshot hash, the new version's chunk list. ARGV: version, position, stream_id, length,
# crc32, chunks. Returns {0} when chunks are missing (expired: the save took too long), {2} when the
# stored snapshot is at a later position (a deposed owner's late save: dropped, its chunks gone), else
# {1, the version replaced, the one before that} (b"" when none): their chunks are to be UNLINKed.
SWITCH_LUA = """
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[6]) then
  return {0}
end
local stored = redis.call('HGET', KEYS[1], 'position')
if stored and tonumber(stored) > tonumber(ARGV[2]) then
  redis.call('UNLINK', KEYS[2])
  return {2}
end
redis.call('PERSIST', KEYS[2])
local old = redis.call('HMGET', KEYS[1], 'version', 'previous')
redis.call('UNLINK', KEYS[1])
redis.call('HSET', KEYS[1], 'position', ARGV[2], 'stream_id', ARGV[3], 'version', ARGV[1],
  'length', ARGV[4], 'crc32', ARGV[5], 'chunks', ARGV[6], 'previous', old[1] or '')
return {1, old[1] or '', old[2] or ''}
"""
SNAPSHOT_FIELDS = ("position", "version", "length", "crc32", "chunks")


@dataclass(frozen=True, slots=True)
class SnapshotHead:
    """What a region's snapshot hash says about the snapshot it points at."""

    position: int
    version: bytes  # b"": the older format, the whole payload in the hash's ``payload`` field
    length: int
    crc32: int
    chunks: int

    @classmethod
    def of(cls, values: list[Any]) -> SnapshotHead | None:
        """From an HMGET of SNAPSHOT_FIELDS; None when there is no snapshot."""
        position, version, length, crc32, chunks = values
        if position is None:
            return None
        if not version:
            return cls(int(position), b"", 0, 0, 0)
        return cls(int(position), _as_bytes(version), int(length), int(crc32), int(chunks))

    def chunks_key(self, region: str) -> str:
        return snapshot_chunks_key(region, self.version)

    def damage(self, length: int, crc32: int) -> str | None:
        """Why chunks of ``length`` bytes in all with this CRC-32 are not this snapshot, or None."""
        if (length, crc32) == (self.length, self.crc32):
            return None
        return f"{length} bytes with CRC-32 {crc32}, where {self.length} with {self.crc32} were saved"


def snapshot_chunks_key(region: str, version: bytes) -> str:
    return region_key(region, f"snapshot:{version.decode()}")


def region_key(region: str, name: str) -> str:
    """``tandtid:{AB}:<name>`` — every key of a region shares the ``{AB}`` hash tag."""
    return f"tandtid:{{{region}}}:{name}"


def _raw(response: Any, **_options: Any) -> Any:
    return response


def _entry(item: list[Any]) -> Entry:
    fields = item[1]
    # Fields are written in a fixed order by APPEND_LUA: position, epoch, payload. The stream id
    # is the server's clock (ms) when XADD wrote it: the commit time.
    return Entry(int(fields[1]), int(fields[3]), bytes(fields[5]), _id_tuple(bytes(item[0]))[0] / 1000)


@dataclass(slots=True)
class _Pending:
    region: str
    epoch: int
    payload: bytes
    future: asyncio.Future[tuple[int, bytes]]


class RedisStreamJournal(Journal):
    """Journal in Redis streams. ``await open()`` before use, ``await close()`` after."""

    def __init__(
        self,
        url: str,
        *,
        retention_s: int = 96 * 3600,
        socket_timeout_s: float = 3.0,
        health_check_interval_s: int = 5,
    ) -> None:
        self._url = url
        self._retention_ms = retention_s * 1000
        self._socket_timeout_s = socket_timeout_s
        self._health_check_interval_s = health_check_interval_s
        self._client: Any = None  # redis.asyncio.Redis or RedisCluster (persistence.redis_client)
        self._append_sha: str = ""
        self._recent: dict[str, OrderedDict[int, bytes]] = {}
        self._pending: list[_Pending] = []  # appends waiting for the next round trip
        self._flushing = False  # a round is scheduled or in flight
        self.rounds = 0  # pipelined append round trips made (each carries one or more regions)
        self._write_failure: str | None = None  # see write_failure()
        self._problems: dict[str, list[str]] = {}  # see problems()

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and load the append script; JournalUnavailable when Redis is down."""
        if self._client is not None:
            return
        await asyncio.to_thread(is_cluster, self._url)  # decided off the loop, once per URL
        client = connect_async(
            self._url,
            socket_timeout=self._socket_timeout_s,
            socket_connect_timeout=self._socket_timeout_s,
            health_check_interval=self._health_check_interval_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
        for command in ("XRANGE", "XREVRANGE", "XREAD"):
            client.set_response_callback(command, _raw)
        self._client = client
        try:
            self._append_sha = await self._call(client.script_load(APPEND_LUA))
        except JournalUnavailable:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def ping(self) -> bool:
        """Reachable. While writes fail (``write_failure``: Redis refuses every write for now:
        out of memory under maxmemory noeviction, a failed save with stop-writes-on-bgsave-error,
        a read-only replica), also a tiny probe write whose success clears that."""
        try:
            if self._write_failure is not None:
                try:
                    await self._redis.set(WRITE_PROBE, b"1", px=1000)
                    self._write_failure = None
                except RedisError as exc:
                    self._refused(exc)
            return bool(await self._call(self._redis.ping()))
        except JournalUnavailable:
            return False

    def write_failure(self) -> str | None:
        return self._write_failure

    def _refused(self, reply: Exception) -> bool:
        """Remember a write Redis refused for now (OOM, MISCONF, READONLY); True if it was one."""
        if isinstance(reply, OutOfMemoryError):
            kind = "OOM"
        elif isinstance(reply, ReadOnlyError):
            kind = "READONLY"
        elif str(reply).startswith("MISCONF"):
            kind = "MISCONF"
        else:
            return False
        self._write_failure = f"{kind}: {str(reply).split('. script:')[0][:120]}"
        return True

    # -- appends ---------------------------------------------------------------------

    async def append(self, region: str, epoch: int, payload: bytes) -> int:
        self._redis  # noqa: B018 - raises when not open
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._pending.append(_Pending(region, epoch, payload, future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._start_round)  # appends made in this same instant join the round
        position, stream_id = await future
        recent = self._recent.setdefault(region, OrderedDict())
        recent[position] = stream_id
        if len(recent) > RECENT_IDS:
            recent.popitem(last=False)
        return position

    def written_at(self, region: str, position: int) -> float:
        recent = self._recent.get(region)
        stream_id = recent.get(position) if recent is not None else None
        return _id_tuple(stream_id)[0] / 1000 if stream_id else 0.0

    def _start_round(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._flushing = False
            return
        task = asyncio.get_running_loop().create_task(self._round(batch))
        task.add_done_callback(self._round_done)

    def _round_done(self, _task: asyncio.Task[None]) -> None:
        if self._pending:
            asyncio.get_running_loop().call_soon(self._start_round)
        else:
            self._flushing = False

    async def _round(self, batch: list[_Pending]) -> None:
        """One pipelined round trip for ``batch``; resolves every append's future."""
        try:
            replies = await self._evalsha_all(batch)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # The server lost its scripts (restart, SCRIPT FLUSH): those appends did not run.
                self._append_sha = await self._call(self._redis.script_load(APPEND_LUA))
                again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                for i, reply in zip(again, await self._evalsha_all([batch[i] for i in again]), strict=True):
                    replies[i] = reply
        except BaseException as exc:
            error = exc if isinstance(exc, JournalUnavailable) else JournalUnavailable(f"redis: {exc!r}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        self.rounds += 1
        for item, reply in zip(batch, replies, strict=True):
            if item.future.done():
                continue
            if isinstance(reply, Exception):
                self._refused(reply)
                item.future.set_exception(JournalUnavailable(f"redis: {reply.__class__.__name__}: {reply}"))
            elif int(reply[0]) < 0:
                item.future.set_exception(
                    StaleEpoch(f"region {item.region}: epoch {item.epoch} < accepted {int(reply[1])}")
                )
            else:
                self._write_failure = None
                item.future.set_result((int(reply[0]), bytes(reply[1])))

    async def _evalsha_all(self, batch: list[_Pending]) -> list[Any]:
        """EVALSHA of the append script for every item, pipelined (no MULTI: each script is
        atomic by itself; on a Redis Cluster the pipeline is split per shard, each script's three
        keys share the region's slot); per-command errors come back in the list, not raised."""
        pipe = self._redis.pipeline(transaction=False)
        for item in batch:
            region = item.region
            pipe.execute_command(  # not pipe.evalsha(): redis-py's cluster pipeline refuses that name
                "EVALSHA",
                self._append_sha,
                3,
                region_key(region, "epoch"),
                region_key(region, "position"),
                region_key(region, "journal"),
                item.epoch,
                item.payload,
            )
        replies: list[Any] = await self._call(pipe.execute(raise_on_error=False))
        return replies

    async def last_position(self, region: str) -> int:
        value = await self._call(self._redis.get(region_key(region, "position")))
        return int(value) if value is not None else 0

    # -- reads -----------------------------------------------------------------------

    async def read(self, region: str, after: int = 0) -> AsyncIterator[Entry]:
        async for entry, _stream_id in self._read(region, after):
            yield entry

    async def _read(self, region: str, after: int) -> AsyncIterator[tuple[Entry, bytes]]:
        key = region_key(region, "journal")
        start = await self._start_id(region, after)
        count = PAGE_MIN
        while True:
            page = await self._call(self._command("XRANGE", key, start, "+", "COUNT", count))
            size = 0
            for item in page:
                entry = _entry(item)
                size += len(entry.payload)
                if entry.position > after:
                    yield entry, item[0]
            if len(page) < count:
                return
            start = b"(" + page[-1][0]
            # Pages of about PAGE_BYTES: few round trips for small entries, bounded memory for big ones.
            count = max(PAGE_MIN, min(PAGE, count * PAGE_BYTES // max(size, 1)))

    async def _start_id(self, region: str, after: int) -> bytes:
        """The stream id to XRANGE from (inclusive) to see every position > ``after``."""
        if after <= 0:
            return b"-"
        recent = self._recent.get(region)
        if recent and after in recent:
            return b"(" + recent[after]
        snap = await self._call(self._redis.hmget(region_key(region, "snapshot"), "position", "stream_id"))
        if snap[0] is not None and snap[1] and int(snap[0]) <= after:
            return _as_bytes(snap[1])
        return b"-"

    async def tail(self, region: str, after: int = 0) -> AsyncIterator[Entry]:
        """Entries after ``after``, then new ones as they come (XREAD BLOCK). Raises
        JournalUnavailable when Redis goes away; the caller re-tails from its last position."""
        key = region_key(region, "journal")
        position = after
        last_id: bytes | None = None
        while last_id is None:
            async for entry, stream_id in self._read(region, position):
                yield entry
                position, last_id = entry.position, stream_id
            if last_id is None:
                newest = await self._call(self._command("XREVRANGE", key, "+", "-", "COUNT", 1))
                if not newest:
                    last_id = b"0-0"
                elif int(newest[0][1][1]) <= position:
                    last_id = bytes(newest[0][0])
                # else: appended meanwhile; read again
        while True:
            reply = await self._call(
                self._command("XREAD", "COUNT", PAGE, "BLOCK", TAIL_BLOCK_MS, "STREAMS", key, last_id)
            )
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel that redis-py's wait_for swallowed (Python 3.11) as the reply came: on a
                # quiet stream nothing else would ever end this loop (a consumer's unfollow hung).
                raise asyncio.CancelledError
            if not reply:
                continue
            for item in _stream_items(reply):
                last_id = item[0]
                entry = _entry(item)
                if entry.position > position:
                    position = entry.position
                    yield entry

    # -- snapshots -------------------------------------------------------------------

    async def save_snapshot(self, region: str, snapshot: Snapshot) -> None:
        """Store the snapshot in chunks under a new version and switch the hash to it (see the
        module docstring), then trim history that is older than it and older than the retention
        period (by the server's clock: TIME, asked after the switch)."""
        stream_id = await self._stream_id_of(region, snapshot.position)
        version = secrets.token_hex(8).encode()
        chunks_key = snapshot_chunks_key(region, version)
        view = memoryview(snapshot.payload)
        crc32 = chunks = 0
        for start in range(0, len(view), SNAPSHOT_CHUNK):
            chunk = view[start : start + SNAPSHOT_CHUNK]
            pipe = self._redis.pipeline(transaction=False)  # one round trip, two small commands
            pipe.rpush(chunks_key, chunk)
            pipe.pexpire(chunks_key, SNAPSHOT_WRITING_MS)
            await self._call(pipe.execute())
            crc32 = zlib.crc32(chunk, crc32)  # as it goes: one 96 MB CRC would hold the loop
            chunks += 1
        reply = await self._call(
            self._redis.eval(
                SWITCH_LUA,
                2,
                region_key(region, "snapshot"),
                chunks_key,
                version,
                snapshot.position,
                stream_id,
                len(view),
                crc32,
                chunks,
            )
        )
        if not int(reply[0]):
            raise JournalUnavailable(f"region {region}: snapshot chunks expired before the switch")
        if int(reply[0]) == 2:
            log.warning(
                "region %s: a snapshot at position %d not saved: the stored one is newer",
                region,
                snapshot.position,
            )
            return
        replaced = [snapshot_chunks_key(region, bytes(old)) for old in reply[1:] if old]
        if replaced:
            await self._call(self._redis.unlink(*replaced))
        seconds, micros = await self._call(self._redis.time())
        if not stream_id:
            return
        cutoff_ms = seconds * 1000 + micros // 1000 - self._retention_ms
        minid = min(_id_tuple(stream_id), (cutoff_ms, 0))
        if minid[0] <= 0:
            return
        await self._call(
            self._redis.xtrim(
                region_key(region, "journal"), minid=f"{minid[0]}-{minid[1]}", approximate=False
            )
        )

    async def _stream_id_of(self, region: str, position: int) -> bytes:
        """The stream id of ``position`` (b"" when it is not in the stream)."""
        if position <= 0:
            return b""
        recent = self._recent.get(region)
        if recent and position in recent:
            return recent[position]
        key = region_key(region, "journal")
        end = b"+"
        while True:
            page = await self._call(self._command("XREVRANGE", key, end, "-", "COUNT", PAGE))
            for item in page:
                found = int(item[1][1])
                if found == position:
                    return bytes(item[0])
                if found < position:
                    return b""
            if len(page) < PAGE:
                return b""
            end = b"(" + page[-1][0]

    async def load_snapshot(self, region: str) -> Snapshot | None:
        """The snapshot the hash points at, read chunk by chunk and checked (length, CRC-32);
        None when there is none or it is damaged (logged, listed in ``problems()``: the caller
        replays the whole stream)."""
        for _attempt in range(SNAPSHOT_LOAD_ATTEMPTS):
            head = await self._snapshot_head(region)
            if head is None:
                return None
            payload, damage = await self._read_snapshot(region, head)
            if damage is None:
                return Snapshot(head.position, payload)
            if await self._snapshot_head(region) != head:
                continue  # replaced while read (its chunks unlinked): read the new one
            log.error("region %s: the snapshot at position %d is damaged (%s)", region, head.position, damage)
            problem = f"snapshot at position {head.position} is damaged ({damage}): not loaded"
            found = self._problems.setdefault(region, [])
            if problem not in found:  # a follower may load it again and again
                found.append(problem)
            return None
        raise JournalUnavailable(
            f"region {region}: the snapshot was replaced {SNAPSHOT_LOAD_ATTEMPTS} times while it was read"
        )

    async def _snapshot_head(self, region: str) -> SnapshotHead | None:
        return SnapshotHead.of(
            await self._call(self._redis.hmget(region_key(region, "snapshot"), *SNAPSHOT_FIELDS))
        )

    async def _read_snapshot(self, region: str, head: SnapshotHead) -> tuple[bytes, str | None]:
        """(payload, None), or (b"", why it is not the snapshot ``head`` describes)."""
        if not head.version:  # the older format: one HGET
            payload = await self._call(self._redis.hget(region_key(region, "snapshot"), "payload"))
            return (_as_bytes(payload), None) if payload is not None else (b"", "no payload in the hash")
        key = head.chunks_key(region)
        parts: list[bytes] = []
        crc32 = 0
        for index in range(head.chunks):
            chunk = await self._call(self._redis.lindex(key, index))
            if chunk is None:
                return b"", f"chunk {index + 1} of {head.chunks} is missing"
            parts.append(chunk)
            crc32 = zlib.crc32(chunk, crc32)  # as it goes, like the save
        damage = head.damage(sum(len(part) for part in parts), crc32)
        return (b"", damage) if damage is not None else (b"".join(parts), None)

    def problems(self) -> dict[str, list[str]]:
        return {region: list(found) for region, found in self._problems.items()}

    # -- internals -------------------------------------------------------------------

    @property
    def _redis(self) -> Any:
        if self._client is None:
            raise RuntimeError("RedisStreamJournal is not open; await open() first")
        return self._client

    def _command(self, *args: Any) -> Awaitable[Any]:
        """A raw command (stream replies come back unparsed: see ``_raw``)."""
        command: Awaitable[Any] = self._redis.execute_command(*args)
        return command

    @staticmethod
    async def _call(awaitable: Awaitable[_T]) -> _T:
        """Await a Redis call, turning every store failure into JournalUnavailable."""
        try:
            return await awaitable
        except (TimeoutError, RedisError, OSError) as exc:
            raise JournalUnavailable(f"redis: {exc.__class__.__name__}: {exc}") from exc


def _stream_items(reply: Any) -> list[Any]:
    """The entries of the one stream in an XREAD reply: RESP2 answers ``[[key, entries]]``,
    RESP3 (redis-py 8's default) ``{key: entries}``."""
    if isinstance(reply, dict):
        return [item for entries in reply.values() for item in entries]
    return [item for _key, entries in reply for item in entries]


def _id_tuple(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return int(ms), int(seq or 0)


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
