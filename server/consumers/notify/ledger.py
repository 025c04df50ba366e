"""The notifier's durable memory: per-region cursors and the keys of messages already sent.

One SQLite file (``<data_dir>/notify.sqlite3``), WAL mode, ``synchronous=FULL`` so a
committed row survives a power cut. The store is synchronous and thread-safe (one
connection behind a lock); the notifier calls it through ``asyncio.to_thread``.

The exactly-once rule: a message's key is recorded as sent in the same transaction that
(when it is the entry's last message) advances the region's cursor. A key that is in
``sent`` is never sent again, whatever the cursor says.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (region TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sent (
    key TEXT PRIMARY KEY,
    channel TEXT NOT NULL,        -- "smtp" | "outbox" | "skipped:<why>" | "rejected"
    sent_at REAL NOT NULL
);
"""


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def cursors(self) -> dict[str, int]:
        with self._lock:
            return {str(r): int(p) for r, p in self._db.execute("SELECT region, position FROM cursors")}

    def cursor(self, region: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT position FROM cursors WHERE region = ?", (region,)).fetchone()
        return int(row[0]) if row else 0

    def is_sent(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM sent WHERE key = ?", (key,)).fetchone() is not None

    def record(
        self, key: str, channel: str, now: float, *, region: str | None = None, position: int | None = None
    ) -> None:
        """Mark ``key`` sent and, when ``region``/``position`` are given, move that cursor —
        in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO sent (key, channel, sent_at) VALUES (?, ?, ?)", (key, channel, now)
                )
                if region is not None and position is not None:
                    self._advance(region, position)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite rolled back already on some errors (a full disk)
                    self._db.execute("ROLLBACK")
                raise

    def advance(self, region: str, position: int) -> None:
        with self._lock:
            self._advance(region, position)

    def _advance(self, region: str, position: int) -> None:
        # never backwards: a stale writer must not rewind another's progress
        self._db.execute(
            "INSERT INTO cursors (region, position) VALUES (?, ?) "
            "ON CONFLICT(region) DO UPDATE SET position = max(position, excluded.position)",
            (region, position),
        )

    def sent_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM sent").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
