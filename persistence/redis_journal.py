"""RedisStreamJournal: one Redis stream per region, one server round trip per append.

Keys of region ``AB`` (the braces are a Redis Cluster hash tag: one shard per region)::

    tandtid:{AB}:journal    stream; each entry has fields position, epoch, payload (in that order)
    tandtid:{AB}:position   INCR counter: the last position handed out
    tandtid:{AB}:epoch      the highest epoch accepted (fencing token)
    tandtid:{AB}:snapshot   hash: position, stream_id, payload

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

After a snapshot is saved, history older than the snapshot AND older than
``retention_s`` (by the server clock in the stream ids) is trimmed with XTRIM MINID.
"""

from __future__ import annotations

import asyncio
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

PAGE = 10_000  # most stream entries per XRANGE round trip
PAGE_MIN = 100  # fewest (the first page of a read)
PAGE_BYTES = 8 * 1024 * 1024  # aimed-for payload bytes per XRANGE page
TAIL_BLOCK_MS = 1_000  # XREAD BLOCK; well under the socket timeout
RECENT_IDS = 4_096  # remembered (position -> stream id) of this object's appends per region
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
        """Store the snapshot (one HSET), then trim history that is older than it and older
        than the retention period (by the server's clock: TIME, asked after the HSET)."""
        stream_id = await self._stream_id_of(region, snapshot.position)
        await self._call(
            self._redis.hset(
                region_key(region, "snapshot"),
                mapping={"position": snapshot.position, "stream_id": stream_id, "payload": snapshot.payload},
            )
        )
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
        values = await self._call(self._redis.hmget(region_key(region, "snapshot"), "position", "payload"))
        if values[0] is None or values[1] is None:
            return None
        return Snapshot(int(values[0]), _as_bytes(values[1]))

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
