"""Private iCal feed tokens: one per patient and one per clinic, revocable, stored as hashes.

A feed URL (``/ical/patient/<token>.ics``, ``/ical/clinic/<token>.ics``) is its own
credential, so only the SHA-256 of a token is kept (a token is 32 random bytes: a fast hash
is enough, and lookup-by-hash is the constant-time comparison). Creating a token replaces the
owner's previous one; revoking removes it. :class:`FeedTokens` keeps them in the account
store's SQLite file (``<data_dir>/accounts.sqlite3``) through its own connection (WAL: both may
write); :class:`RedisFeedTokens` in Redis (``--redis``: every node answers every feed), keys::

    tandtid:{feeds}:token:<sha256>         "<kind> <owner>" (owner: an opaque user id or a clinic id)
    tandtid:{feeds}:owner:<kind>:<owner>   the SHA-256 of the owner's live token
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from persistence import sqlite_file
from server.redis_state import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ical_tokens (
    token_hash TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS ical_tokens_owner ON ical_tokens (kind, owner);
"""
_MAX_TOKEN = 128


class FeedKind(StrEnum):
    PATIENT = "patient"  # owner: the patient's opaque user id
    CLINIC = "clinic"  # owner: the clinic id


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class FeedTokenStore(Protocol):
    """What the feed routes use; both stores are thread-safe. Call :meth:`close` on shutdown."""

    def create(self, kind: FeedKind, owner: str) -> str:
        """A new token for ``owner`` (its previous one stops working). Shown once: keep the URL."""
        ...

    def revoke(self, kind: FeedKind, owner: str) -> bool:
        """Remove the owner's token; False if there was none."""
        ...

    def owner(self, kind: FeedKind, token: str) -> str | None:
        """Who a token belongs to, if it is a live token of ``kind``."""
        ...

    def close(self) -> None: ...


class FeedTokens:
    """In SQLite. Thread-safe (one connection, one lock); call :meth:`close` on shutdown."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite_file.connect(path, _SCHEMA)

    def create(self, kind: FeedKind, owner: str) -> str:
        """A new token for ``owner`` (its previous one stops working). Shown once: keep the URL."""
        token = secrets.token_urlsafe(32)
        with sqlite_file.transaction(self._db, self._lock) as db:
            db.execute("DELETE FROM ical_tokens WHERE kind = ? AND owner = ?", (kind.value, owner))
            db.execute(
                "INSERT INTO ical_tokens (token_hash, kind, owner, created_at) VALUES (?, ?, ?, ?)",
                (_hash(token), kind.value, owner, time.time()),
            )
        return token

    def revoke(self, kind: FeedKind, owner: str) -> bool:
        """Remove the owner's token; False if there was none."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM ical_tokens WHERE kind = ? AND owner = ?", (kind.value, owner)
            )
            return cur.rowcount > 0

    def owner(self, kind: FeedKind, token: str) -> str | None:
        """Who a token belongs to, if it is a live token of ``kind``."""
        if not 0 < len(token) <= _MAX_TOKEN:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT owner FROM ical_tokens WHERE token_hash = ? AND kind = ?", (_hash(token), kind.value)
            ).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


_FEEDS = "tandtid:{feeds}:"
_CREATE = """
local old = redis.call('GET', KEYS[1])
if old then redis.call('DEL', ARGV[1] .. old) end
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[2])
return 0
"""
_REVOKE = """
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
redis.call('DEL', ARGV[1] .. old, KEYS[1])
return 1
"""


class RedisFeedTokens:
    """In the Redis at ``url`` (keys in the module docstring); each change is one Lua script."""

    def __init__(self, url: str) -> None:
        self._redis = connect(url)
        self._create = self._redis.register_script(_CREATE)
        self._revoke = self._redis.register_script(_REVOKE)

    def create(self, kind: FeedKind, owner: str) -> str:
        token = secrets.token_urlsafe(32)
        owner_key = f"{_FEEDS}owner:{kind.value}:{owner}"
        self._create(keys=[owner_key], args=[_FEEDS + "token:", _hash(token), f"{kind.value} {owner}"])
        return token

    def revoke(self, kind: FeedKind, owner: str) -> bool:
        return bool(self._revoke(keys=[f"{_FEEDS}owner:{kind.value}:{owner}"], args=[_FEEDS + "token:"]))

    def owner(self, kind: FeedKind, token: str) -> str | None:
        if not 0 < len(token) <= _MAX_TOKEN:
            return None
        found = self._redis.get(_FEEDS + "token:" + _hash(token))
        if found is None:
            return None
        stored_kind, _, owner = str(found).partition(" ")
        return owner if stored_kind == kind.value else None

    def close(self) -> None:
        self._redis.close()
