"""Private iCal feed tokens: one per patient and one per clinic, revocable, stored as hashes.

A feed URL (``/ical/patient/<token>.ics``, ``/ical/clinic/<token>.ics``) is its own
credential, so only the SHA-256 of a token is kept (a token is 32 random bytes: a fast hash
is enough, and lookup-by-hash is the constant-time comparison). Creating a token replaces the
owner's previous one; revoking removes it. The table lives in the account store's SQLite file
(``<data_dir>/accounts.sqlite3``) through its own connection (WAL: both may write).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from enum import StrEnum
from pathlib import Path

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


class FeedTokens:
    """Thread-safe (one connection, one lock); call :meth:`close` on shutdown."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def create(self, kind: FeedKind, owner: str) -> str:
        """A new token for ``owner`` (its previous one stops working). Shown once: keep the URL."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM ical_tokens WHERE kind = ? AND owner = ?", (kind.value, owner))
                self._db.execute(
                    "INSERT INTO ical_tokens (token_hash, kind, owner, created_at) VALUES (?, ?, ?, ?)",
                    (_hash(token), kind.value, owner, time.time()),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
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
