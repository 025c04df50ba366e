"""Shared state on Redis (``tandtid serve --redis URL``): the client, the key rules, and the
notices that keep each node's in-memory caches coherent.

Key rules for every store that keeps shared state here:

- Names start ``tandtid:{<concept>}:``: the braces are a Redis Cluster hash tag, so one
  concept's keys share a slot and its Lua scripts may touch several of them.
- Names never hold personal data: opaque ids (``u_…``, random session ids, clinic and
  region codes), SHA-256 digests of secrets, and for e-mail lookups an HMAC under a random
  key kept in Redis (:class:`Lookup`), never an e-mail, name or phone number.

A node caches what it reads often (sessions, clinic keys, webhook endpoints). A write that
changes such an entry is announced on the concept's channel (:meth:`Notices.announce`);
every node's :class:`Notices` thread hears it and drops the entry. A node that may have
missed notices (its subscription broke) drops everything, so a cache is never trusted past
a gap.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from persistence import redis_client

log = logging.getLogger("tandtid.redis_state")

# A client made with decode_responses=True answers str, which redis-py's hints cannot say
# (they answer ``bytes | str`` for every call): the stores hold it as this.
Client = Any

_RETRY_S = 0.5  # between attempts to listen again after the subscription broke
_POLL_S = 0.2  # how long one wait for a notice blocks (bounds how long close() waits)


# A consumer's cursor in a hash region -> position: never moves backwards (a stale writer must
# not rewind another's progress). CURSOR_LUA defines advance() for scripts that move one;
# ADVANCE_LUA is the whole script (KEYS[1] the hash; ARGV region, position).
CURSOR_LUA = """
local function advance(cursors, region, position)
  local at = tonumber(redis.call('HGET', cursors, region) or '-1')
  if tonumber(position) > at then redis.call('HSET', cursors, region, position) end
end
"""
ADVANCE_LUA = CURSOR_LUA + "advance(KEYS[1], ARGV[1], ARGV[2])\nreturn 0\n"


def connect(url: str) -> Client:
    """A thread-safe client (a connection pool) answering ``str``: ``redis.Redis``, or
    ``redis.RedisCluster`` when ``url`` names a Redis Cluster node (persistence.redis_client)."""
    return redis_client.connect(url, decode_responses=True, health_check_interval=30)


class Lookup:
    """Digests of values (e-mails) that may name keys: HMAC-SHA256 under the concept's random
    lookup key ``tandtid:{<concept>}:lookup-key``, made once by whichever node asks first
    (``SET NX``) and read once per instance."""

    def __init__(self, client: Client, concept: str) -> None:
        self._client = client
        self._name = f"tandtid:{{{concept}}}:lookup-key"
        self._key: bytes | None = None

    def digest(self, value: str) -> str:
        if self._key is None:
            self._client.set(self._name, secrets.token_hex(32), nx=True)
            self._key = str(self._client.get(self._name)).encode()
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()


def shared_secret(url: str) -> bytes:
    """The session signing key all nodes share (``tandtid:{secrets}:session-key``), made by the
    first node to ask (``SET NX``); ``TANDTID_SECRET_KEY`` overrides it."""
    client = connect(url)
    try:
        name = "tandtid:{secrets}:session-key"
        client.set(name, secrets.token_urlsafe(48), nx=True)
        return str(client.get(name)).encode()
    finally:
        client.close()


class Notices:
    """Listens on ``channel`` on a daemon thread: ``on_notice(text)`` for each notice published
    there (by any node, this one included), ``on_gap()`` when notices may have been missed
    (the subscription broke and was made again). Subscribed when the constructor returns.
    Call :meth:`close` on shutdown."""

    def __init__(
        self, client: Client, channel: str, on_notice: Callable[[str], None], on_gap: Callable[[], None]
    ) -> None:
        self._client = client
        self.channel = channel
        self._on_notice = on_notice
        self._on_gap = on_gap
        self._closed = threading.Event()
        self._pubsub = client.pubsub()
        self._pubsub.subscribe(channel)
        self._confirmed()
        self._thread = threading.Thread(target=self._listen, name=f"notices-{channel}", daemon=True)
        self._thread.start()

    def announce(self, notice: str) -> None:
        self._client.publish(self.channel, notice)

    def _confirmed(self) -> None:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=_POLL_S)
            if message is not None and message["type"] == "subscribe":
                return
        raise RedisError(f"no confirmation of the subscription to {self.channel}")

    def _listen(self) -> None:
        while not self._closed.is_set():
            try:
                message = self._pubsub.get_message(timeout=_POLL_S)
            except (RedisError, OSError, ValueError):
                if self._closed.is_set():
                    return
                log.warning("lost the subscription to %s; dropping cached entries", self.channel)
                self._on_gap()
                time.sleep(_RETRY_S)  # a worker thread: nothing else waits on it
                continue
            if message is None:
                continue
            if message["type"] == "message":
                self._on_notice(str(message["data"]))
            elif message["type"] == "subscribe":  # subscribed again after a reconnect
                self._on_gap()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(_POLL_S * 4)
        self._pubsub.close()
