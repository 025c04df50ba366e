"""``tandtid journal check|repair --redis URL``: the same as ``persistence.file_check`` for the
Redis stream journal (``persistence.redis_journal``).

``check_region`` reads a region's stream without changing anything. An entry is damaged when
its fields are not ``position, epoch, payload`` with integer position and epoch, when its
position does not follow the one before it (or, for the first entry, the snapshot's), or when
its payload does not decode into events. Recovery stops at such an entry (the region FAILS);
the report lists it with the booking ids its bytes name (decoded when they decode, else read
from the raw bytes, best effort), and every entry a repair would remove.

``repair_region`` (stop every server writing the region first) removes from the stream the
damaged entries the snapshot already covers (recovery never reads them) and, from the first
damaged entry past the snapshot on, every entry (the positions after it could not be replayed
in order); the position counter is set back to the last good position. A snapshot whose chunks
are missing or fail their CRC-32 (recovery does not load it) makes the region damaged too; repair
sets it aside and recovery replays the stream from its start. Nothing is deleted
without a copy: removed entries go to the stream ``tandtid:{AB}:set-aside:<ms>`` (their fields
plus ``id``), a snapshot past the cut or damaged to the hash ``tandtid:{AB}:set-aside-snapshot:<ms>``
(its chunks stay where it points).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import redis

from engine.events import from_record
from engine.model import REGION_CODES
from persistence import redis_client
from persistence.codec import unpack_events
from persistence.file_check import LostFrame, RegionCheck, SnapshotFile, bookings_in
from persistence.redis_journal import SNAPSHOT_FIELDS, SnapshotHead, region_key

PAGE = 1_000


@dataclass(slots=True)
class _Walk:
    """What one pass over a region's stream found."""

    entries: list[tuple[bytes, list[Any]]] = field(default_factory=list)  # (id, fields) in order
    damaged: dict[bytes, str] = field(default_factory=dict)  # id -> why
    positions: dict[bytes, int | None] = field(default_factory=dict)  # id -> position (None: unreadable)


def connect(url: str) -> Any:
    """A client whose XRANGE replies come back as Redis sent them (field order kept): a
    ``redis.Redis``, or a ``redis.RedisCluster`` for a cluster node (persistence.redis_client;
    ``repair`` on a cluster needs redis-py 6 or newer: its MULTI is one region's keys)."""
    client = redis_client.connect(url, decode_responses=False)
    client.set_response_callback("XRANGE", lambda response, **_options: response)
    return client


def regions_in(client: redis.Redis) -> list[str]:
    """Region codes with a journal stream or a snapshot in Redis."""
    return [
        code
        for code in sorted(REGION_CODES)
        if client.exists(region_key(code, "journal"), region_key(code, "snapshot"))
    ]


def check_region(client: redis.Redis, region: str) -> RegionCheck:
    """Read ``region``'s stream and snapshot and report (changes nothing). ``size`` counts
    entries; ``position`` is the last position recovery reaches."""
    report, walk, cut = _check(client, region)
    return report


def repair_region(client: redis.Redis, region: str) -> RegionCheck:
    """Remove the damaged entries (see the module docstring), keeping copies; returns the
    check made before, ``repaired`` set. Stop every server writing ``region`` first."""
    report, walk, cut = _check(client, region)
    if report.status != "damaged":
        return report
    stamp = int(time.time() * 1000)
    aside = region_key(region, f"set-aside:{stamp}")
    doomed = [(i, f) for i, f in walk.entries if i in walk.damaged or (cut is not None and i >= cut)]
    pipe = client.pipeline(transaction=True)
    for stream_id, fields in doomed:
        copy: dict[Any, Any] = {**_field_map(fields), b"id": stream_id}
        pipe.xadd(aside, copy)
    if doomed:
        pipe.xdel(region_key(region, "journal"), *[i for i, _ in doomed])
        report.set_aside.append(aside)
    if cut is not None:
        pipe.set(region_key(region, "position"), report.position)
    if any(s.position is None or s.position > report.position for s in report.snapshots):
        pipe.rename(region_key(region, "snapshot"), region_key(region, f"set-aside-snapshot:{stamp}"))
        report.set_aside.append(region_key(region, f"set-aside-snapshot:{stamp}"))
    pipe.execute()
    report.repaired = True
    return report


def _check(client: redis.Redis, region: str) -> tuple[RegionCheck, _Walk, bytes | None]:
    report = RegionCheck(region, "ok", 0, 0, 0)
    head = SnapshotHead.of(client.hmget(region_key(region, "snapshot"), list(SNAPSHOT_FIELDS)))
    base = head.position if head is not None else 0  # a damaged snapshot's too: its claim is judged
    problems: list[str] = []
    if head is not None:
        snapshot, damage = _snapshot(client, region, head)
        report.snapshots = [snapshot]
        if damage is not None:
            problems.append(f"snapshot at position {head.position}: {damage}")
    walk = _walk(client, region)
    report.size = len(walk.entries)
    # Recovery: from the snapshot on, each entry after ``base`` must be the next position.
    position = base
    cut: bytes | None = None
    for stream_id, _fields in walk.entries:
        found = walk.positions[stream_id]
        why = walk.damaged.get(stream_id)
        if found is not None and found <= base and cut is None:
            if why is not None:
                problems.append(
                    f"entry {stream_id.decode()} (position {found}, covered by the snapshot): {why}"
                )
            continue
        if cut is not None:
            continue
        if why is None and found != position + 1:
            why = f"position {found} where {position + 1} was expected"
            walk.damaged[stream_id] = why
        if why is not None:
            cut = stream_id
            problems.append(f"entry {stream_id.decode()}: {why}")
            continue
        position = found if found is not None else position
    report.position = position
    if problems:
        report.status = "damaged"
        report.problem = "; ".join(problems)
        for stream_id, fields in walk.entries:
            if stream_id in walk.damaged or (cut is not None and stream_id >= cut):
                report.lost.append(_lost(stream_id, fields, walk, stream_id not in walk.damaged))
    return report, walk, cut


def _snapshot(client: redis.Redis, region: str, head: SnapshotHead) -> tuple[SnapshotFile, str | None]:
    """The snapshot the hash points at, its chunks read one by one (as a load does), and why it
    is damaged (None when it is not)."""
    if not head.version:  # the older format: the payload in the hash
        size = int(client.hstrlen(region_key(region, "snapshot"), "payload"))
        damage = None if size or client.hexists(region_key(region, "snapshot"), "payload") else "no payload"
    else:
        size = crc32 = 0
        for index in range(head.chunks):
            chunk: bytes | None = client.lindex(head.chunks_key(region), index)  # type: ignore[assignment]
            if chunk is None:
                break
            size, crc32 = size + len(chunk), zlib.crc32(chunk, crc32)
        damage = head.damage(size, crc32)
    return SnapshotFile("snapshot", None if damage else head.position, size), damage


def _walk(client: redis.Redis, region: str) -> _Walk:
    walk = _Walk()
    key = region_key(region, "journal")
    start: bytes | str = "-"
    while True:
        page: list[Any] = client.execute_command("XRANGE", key, start, "+", "COUNT", PAGE)  # type: ignore[no-untyped-call]
        for item_id, fields in page:
            stream_id = bytes(item_id)
            raw = _fields(fields)
            walk.entries.append((stream_id, raw))
            position, why = _verify(raw)
            walk.positions[stream_id] = position
            if why is not None:
                walk.damaged[stream_id] = why
        if len(page) < PAGE:
            return walk
        start = b"(" + bytes(page[-1][0])


def _fields(fields: Any) -> list[Any]:
    """The entry's fields as the flat list Redis sent (name, value, name, value, ...)."""
    if isinstance(fields, dict):
        return [x for pair in fields.items() for x in pair]
    return list(fields)


def _field_map(fields: list[Any]) -> dict[bytes, bytes]:
    return {bytes(fields[i]): bytes(fields[i + 1]) for i in range(0, len(fields) - 1, 2)}


def _verify(fields: list[Any]) -> tuple[int | None, str | None]:
    """(position, why it is damaged or None)."""
    names = [bytes(fields[i]) for i in range(0, len(fields), 2)]
    position: int | None = None
    if len(fields) >= 2 and names[:1] == [b"position"]:
        try:
            position = int(fields[1])
        except ValueError:
            position = None
    if names != [b"position", b"epoch", b"payload"] or len(fields) != 6:
        return (
            position,
            f"fields {[n.decode('ascii', 'replace') for n in names]}, not position, epoch, payload",
        )
    try:
        int(fields[3])
    except ValueError:
        return position, "an epoch that is not a number"
    if position is None:
        return None, "a position that is not a number"
    try:
        for record in unpack_events(bytes(fields[5])):
            from_record(record)
    except (ValueError, TypeError, KeyError) as exc:
        return position, f"a payload that does not decode ({type(exc).__name__})"
    return position, None


def _lost(stream_id: bytes, fields: list[Any], walk: _Walk, intact: bool) -> LostFrame:
    frame = LostFrame(0, 0, walk.positions[stream_id], intact, source="redis", stream_id=stream_id.decode())
    values = _field_map(fields)
    payload = values.get(b"payload", b"".join(bytes(f) for f in fields))
    bookings_in(frame, payload, readable=intact)
    return frame
