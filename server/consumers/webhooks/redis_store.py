"""The webhook store in Redis (``--redis``): endpoints, deliveries and the dispatcher's cursors
shared by every node, with the same contract as the SQLite store (:mod:`.store`).

Keys (hash tag ``{webhooks}``; no personal data: ids, clinic and region codes)::

    tandtid:{webhooks}:endpoint:<id>          hash: clinic, url, secret, events (JSON), created_at, deleted
    tandtid:{webhooks}:clinic:<clinic>        sorted set of the clinic's live endpoints by created_at
    tandtid:{webhooks}:endpoints              sorted set of every live endpoint by created_at
    tandtid:{webhooks}:endpoints-version      INCR'd by every create and delete (in the same step)
    tandtid:{webhooks}:delivery-id            INCR counter: delivery ids, journal order per endpoint
    tandtid:{webhooks}:delivery:<id>          hash: the delivery's fields (body: the JSON sent)
    tandtid:{webhooks}:log:<endpoint>         sorted set of the endpoint's delivery ids (its log)
    tandtid:{webhooks}:pending:<endpoint>     sorted set of its pending delivery ids: the head is first
    tandtid:{webhooks}:pending-endpoints      set of endpoints with a pending delivery
    tandtid:{webhooks}:cursors                hash: region -> position
    tandtid:{webhooks}:changed                pub/sub: "endpoints <clinic>" after a create or delete

Queuing an entry's deliveries and moving the region's cursor past it is one Lua script, as is
every status change, so none is lost or queued twice. Unlike a SQLite commit, a script can run
and still raise here (its reply lost with the connection; redis-py may even send it again), so
each is safe to run twice: an entry at or below its region's cursor is not queued again, and
an outcome is recorded only on a pending delivery. Endpoint changes are announced on the
channel (for whoever listens), and bump the version that :meth:`RedisWebhookStore.subscriptions`
checks once per call, so every node's dispatcher sees an endpoint from the moment it exists.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from server.consumers.webhooks.store import (
    DELIVERED,
    FAILED,
    Attempt,
    Delivery,
    Endpoint,
    QueuedRow,
)
from server.redis_state import ADVANCE_LUA, CURSOR_LUA, connect

PREFIX = "tandtid:{webhooks}:"
CURSORS = PREFIX + "cursors"
COUNTER = PREFIX + "delivery-id"
PENDING_ENDPOINTS = PREFIX + "pending-endpoints"
ALL_ENDPOINTS = PREFIX + "endpoints"
VERSION = PREFIX + "endpoints-version"
CHANNEL = PREFIX + "changed"
_FIELDS = (
    "id",
    "endpoint",
    "event_id",
    "type",
    "region",
    "position",
    "body",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "last_status",
    "created_at",
    "finished_at",
    "replay_of",
)
_PAGE = 200  # delivery log rows read per round trip while filtering by status

# KEYS: endpoint:<id>, clinic:<clinic>, endpoints, endpoints-version; ARGV: id, clinic, url, secret,
# events (JSON), created_at.
_CREATE_ENDPOINT = """
redis.call('HSET', KEYS[1], 'clinic', ARGV[2], 'url', ARGV[3], 'secret', ARGV[4], 'events', ARGV[5],
           'created_at', ARGV[6], 'deleted', 0)
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
return redis.call('INCR', KEYS[4])
"""

# KEYS: endpoints-version, endpoints: the version and the endpoint ids at one moment.
_ENDPOINT_IDS = """
return {redis.call('GET', KEYS[1]) or '0', redis.call('ZRANGE', KEYS[2], 0, -1)}
"""

# Shared by the scripts: queue one delivery (ARGV-free: values passed in).
_QUEUE = """
local function queue(p, endpoint, event_id, kind, region, position, body, next_at, now, replay_of)
  local id = redis.call('INCR', p .. 'delivery-id')
  redis.call('HSET', p .. 'delivery:' .. id, 'id', id, 'endpoint', endpoint, 'event_id', event_id,
    'type', kind, 'region', region, 'position', position, 'body', body, 'status', 'pending',
    'attempts', 0, 'next_attempt_at', next_at, 'last_error', '', 'last_status', 0,
    'created_at', now, 'finished_at', 0, 'replay_of', replay_of)
  redis.call('ZADD', p .. 'log:' .. endpoint, id, id)
  redis.call('ZADD', p .. 'pending:' .. endpoint, id, id)
  redis.call('SADD', p .. 'pending-endpoints', endpoint)
  return id
end
local function settle(p, id)
  local endpoint = redis.call('HGET', p .. 'delivery:' .. id, 'endpoint')
  redis.call('ZREM', p .. 'pending:' .. endpoint, id)
  if redis.call('ZCARD', p .. 'pending:' .. endpoint) == 0 then
    redis.call('SREM', p .. 'pending-endpoints', endpoint)
  end
end
"""

# KEYS: cursors; ARGV: prefix, region, position, now, then (endpoint, event id, type, body) per row.
_ENQUEUE = (
    _QUEUE
    + CURSOR_LUA
    + """
local p = ARGV[1]
-- Queued already (this entry's script ran, its reply was lost, and the entry is handled again):
-- the cursor moved past it in that same run, so nothing is queued twice.
if tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '-1') >= tonumber(ARGV[3]) then return 0 end
for i = 5, #ARGV, 4 do
  queue(p, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[2], ARGV[3], ARGV[i + 3], ARGV[4], ARGV[4], '')
end
advance(KEYS[1], ARGV[2], ARGV[3])
return 0
"""
)

# KEYS: endpoint hash, clinic set, all endpoints, version; ARGV: prefix, clinic, endpoint id, now
_DELETE_ENDPOINT = (
    _QUEUE
    + """
local p = ARGV[1]
if redis.call('HGET', KEYS[1], 'clinic') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'deleted') ~= '0' then
  return 0
end
redis.call('HSET', KEYS[1], 'deleted', 1)
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('INCR', KEYS[4])
for _, id in ipairs(redis.call('ZRANGE', p .. 'pending:' .. ARGV[3], 0, -1)) do
  redis.call('HSET', p .. 'delivery:' .. id, 'status', 'cancelled', 'finished_at', ARGV[4],
             'last_error', 'endpoint deleted')
  settle(p, id)
end
return 1
"""
)

# ARGV: prefix. The head delivery of each endpoint with one, and the endpoint's url and secret.
_HEADS = """
local p = ARGV[1]
local out = {}
for _, endpoint in ipairs(redis.call('SMEMBERS', p .. 'pending-endpoints')) do
  local head = redis.call('ZRANGE', p .. 'pending:' .. endpoint, 0, 0)
  if #head == 0 then
    redis.call('SREM', p .. 'pending-endpoints', endpoint)
  else
    local row = redis.call('HMGET', p .. 'delivery:' .. head[1], unpack(cjson.decode(ARGV[2])))
    local target = redis.call('HMGET', p .. 'endpoint:' .. endpoint, 'url', 'secret')
    table.insert(row, target[1])
    table.insert(row, target[2])
    table.insert(out, row)
  end
end
return out
"""

# KEYS: delivery; ARGV: prefix, id, outcome (delivered|failed|retry), now, status code, error, next at
_SETTLE = (
    _QUEUE
    + """
local p = ARGV[1]
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_status', ARGV[5], 'last_error', ARGV[6])
if ARGV[3] == 'retry' then
  redis.call('HSET', KEYS[1], 'next_attempt_at', ARGV[7])
  return 1
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished_at', ARGV[4])
settle(p, ARGV[2])
return 1
"""
)

# KEYS: old delivery; ARGV: prefix, endpoint, now
_REPLAY = (
    _QUEUE
    + """
local p = ARGV[1]
local old = redis.call('HMGET', KEYS[1], 'endpoint', 'event_id', 'type', 'region', 'position', 'body',
                       'id', 'replay_of')
if old[1] ~= ARGV[2] then return false end
local original = old[8]
if original == '' then original = old[7] end
return queue(p, old[1], old[2], old[3], old[4], old[5], old[6], 0, ARGV[3], original)
"""
)


def _delivery(row: list[Any]) -> Delivery:
    (id_, endpoint, event_id, kind, region, position, body, status, attempts, next_at, error, last_status) = (
        row[:12]
    )
    created_at, finished_at, replay_of = row[12:15]
    return Delivery(
        int(id_),
        str(endpoint),
        str(event_id),
        str(kind),
        str(region),
        int(position),
        str(body).encode(),
        str(status),
        int(attempts),
        float(next_at),
        str(error),
        int(last_status),
        float(created_at),
        float(finished_at),
        int(replay_of) if replay_of else None,
    )


class RedisWebhookStore:
    """Webhook state in the Redis at ``url`` (keys in the module docstring). Thread-safe."""

    def __init__(self, url: str) -> None:
        self._redis = connect(url)
        self._enqueue = self._redis.register_script(_ENQUEUE)
        self._delete = self._redis.register_script(_DELETE_ENDPOINT)
        self._heads = self._redis.register_script(_HEADS)
        self._settle = self._redis.register_script(_SETTLE)
        self._replay = self._redis.register_script(_REPLAY)
        self._advance = self._redis.register_script(ADVANCE_LUA)
        self._create = self._redis.register_script(_CREATE_ENDPOINT)
        self._endpoint_ids = self._redis.register_script(_ENDPOINT_IDS)
        self._subscriptions: tuple[int, dict[str, list[Endpoint]]] = (-1, {})

    # -- endpoints -------------------------------------------------------------------------------

    def create_endpoint(self, clinic: str, url: str, events: list[str], now: float) -> tuple[Endpoint, str]:
        endpoint = Endpoint("we_" + secrets.token_hex(8), clinic, url, tuple(sorted(set(events))), now)
        secret = "whsec_" + secrets.token_urlsafe(32)
        keys = [PREFIX + "endpoint:" + endpoint.id, PREFIX + "clinic:" + clinic, ALL_ENDPOINTS, VERSION]
        args = [endpoint.id, clinic, url, secret, json.dumps(list(endpoint.events)), repr(now)]
        self._create(keys=keys, args=args)
        self._redis.publish(CHANNEL, "endpoints " + clinic)
        return endpoint, secret

    def endpoints(self, clinic: str) -> list[Endpoint]:
        ids: list[str] = self._redis.zrange(PREFIX + "clinic:" + clinic, 0, -1)
        pipe = self._redis.pipeline(transaction=False)
        for endpoint_id in ids:
            pipe.hmget(PREFIX + "endpoint:" + endpoint_id, ["url", "events", "created_at", "deleted"])
        out = []
        for endpoint_id, (url, events, created_at, deleted) in zip(ids, pipe.execute(), strict=True):
            if url is not None and deleted == "0":
                out.append(Endpoint(endpoint_id, clinic, url, tuple(json.loads(events)), float(created_at)))
        return out

    def endpoint(self, clinic: str, endpoint_id: str) -> Endpoint | None:
        return next((e for e in self.endpoints(clinic) if e.id == endpoint_id), None)

    def delete_endpoint(self, clinic: str, endpoint_id: str, now: float) -> bool:
        keys = [PREFIX + "endpoint:" + endpoint_id, PREFIX + "clinic:" + clinic, ALL_ENDPOINTS, VERSION]
        deleted = bool(self._delete(keys=keys, args=[PREFIX, clinic, endpoint_id, repr(now)]))
        if deleted:
            self._redis.publish(CHANNEL, "endpoints " + clinic)
        return deleted

    def subscriptions(self) -> dict[str, list[Endpoint]]:
        """Every live endpoint by clinic, oldest first, from memory: one GET of the version per
        call, and the endpoints are read again only when one was created or deleted since (on
        any node). Not thread-safe: one caller thread (the dispatcher's loop)."""
        version = int(self._redis.get(VERSION) or 0)
        if version != self._subscriptions[0]:
            raw_version, ids = self._endpoint_ids(keys=[VERSION, ALL_ENDPOINTS])
            pipe = self._redis.pipeline(transaction=False)
            for endpoint_id in ids:
                pipe.hmget(
                    PREFIX + "endpoint:" + endpoint_id, ["clinic", "url", "events", "created_at", "deleted"]
                )
            by_clinic: dict[str, list[Endpoint]] = {}
            for endpoint_id, (clinic, url, events, created_at, deleted) in zip(
                ids, pipe.execute(), strict=True
            ):
                if url is not None and deleted == "0":
                    endpoint = Endpoint(
                        endpoint_id, clinic, url, tuple(json.loads(events)), float(created_at)
                    )
                    by_clinic.setdefault(clinic, []).append(endpoint)
            self._subscriptions = (int(raw_version or 0), by_clinic)
        return self._subscriptions[1]

    def subscribers(self, clinic: str, event_type: str, at: float) -> list[str]:
        return [e.id for e in self.endpoints(clinic) if event_type in e.events and e.created_at <= at]

    # -- queueing (the journal consumer) ---------------------------------------------------------

    def cursors(self) -> dict[str, int]:
        return {str(r): int(p) for r, p in self._redis.hgetall(CURSORS).items()}

    def enqueue(self, region: str, position: int, rows: list[QueuedRow], now: float) -> None:
        args: list[str | int] = [PREFIX, region, position, repr(now)]
        for endpoint, event_id, kind, body in rows:
            args += [endpoint, event_id, kind, body.decode()]
        self._enqueue(keys=[CURSORS], args=args)

    def advance(self, region: str, position: int) -> None:
        self._advance(keys=[CURSORS], args=[region, position])

    # -- sending ---------------------------------------------------------------------------------

    def heads(self) -> list[Attempt]:
        rows = self._heads(keys=[PENDING_ENDPOINTS], args=[PREFIX, json.dumps(_FIELDS)])
        return [Attempt(_delivery(row), str(row[15]), str(row[16])) for row in rows]

    def delivered(self, delivery_id: int, now: float, status_code: int) -> None:
        args = [PREFIX, delivery_id, DELIVERED, repr(now), status_code, "", 0]
        self._settle(keys=[PREFIX + f"delivery:{delivery_id}"], args=args)

    def attempt_failed(
        self, delivery_id: int, now: float, error: str, status_code: int, next_attempt_at: float | None
    ) -> None:
        outcome = FAILED if next_attempt_at is None else "retry"
        args = [
            PREFIX,
            delivery_id,
            outcome,
            repr(now),
            status_code,
            error[:500],
            repr(next_attempt_at or 0.0),
        ]
        self._settle(keys=[PREFIX + f"delivery:{delivery_id}"], args=args)

    # -- the delivery log ------------------------------------------------------------------------

    def _load(self, ids: list[str]) -> list[Delivery]:
        pipe = self._redis.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hmget(PREFIX + f"delivery:{delivery_id}", list(_FIELDS))
        return [_delivery(row) for row in pipe.execute() if row[0] is not None]

    def deliveries(
        self, endpoint_id: str, *, limit: int = 100, status: str | None = None, before: int | None = None
    ) -> list[Delivery]:
        """Newest first."""
        out: list[Delivery] = []
        top = f"({before}" if before is not None else "+inf"
        while len(out) < limit:
            ids: list[str] = self._redis.zrevrangebyscore(
                PREFIX + "log:" + endpoint_id, top, "-inf", start=0, num=_PAGE if status else limit - len(out)
            )
            if not ids:
                break
            out += [d for d in self._load(ids) if status is None or d.status == status]
            top = f"({ids[-1]}"
        return out[:limit]

    def replay(self, endpoint_id: str, delivery_id: int, now: float) -> Delivery | None:
        new_id = self._replay(
            keys=[PREFIX + f"delivery:{delivery_id}"], args=[PREFIX, endpoint_id, repr(now)]
        )
        if new_id is None:
            return None
        found = self._load([str(new_id)])
        return found[0] if found else None

    def close(self) -> None:
        self._redis.close()
