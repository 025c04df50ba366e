"""The notifier's durable memory: per-region cursors and the keys of messages already sent.

:class:`Ledger` is one SQLite file (``<data_dir>/notify.sqlite3``), WAL mode,
``synchronous=FULL`` so a committed row survives a power cut; :class:`RedisLedger` keeps the
same in Redis (``--redis``: whichever node runs a region's notifier finds its memory), keys::

    tandtid:{notify}:cursors   hash: region -> position
    tandtid:{notify}:sent      hash: message key (``AB:12:0:booked``, no personal data) -> channel

Both are synchronous and thread-safe; the notifier calls them through ``in_consumer_thread``.

The at-most-once-after-recording rule: a message's key is recorded as sent in the same
transaction that (when it is the entry's last message) advances the region's cursor. A key
that is in ``sent`` is never sent again, whatever the cursor says. Delivery as a whole is at
least once: a crash between the SMTP server's acceptance and this record sends the message
again after the restart, with the same Message-ID (``messages.message_id``: derived from the
key), so the receiving side can drop the duplicate.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from persistence import sqlite_file
from server.redis_state import ADVANCE_LUA, CURSOR_LUA, connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (region TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sent (
    key TEXT PRIMARY KEY,
    channel TEXT NOT NULL,        -- "smtp" | "outbox" | "skipped:<why>" | "rejected"
    sent_at REAL NOT NULL
);
"""


class LedgerStore(Protocol):
    def cursors(self) -> dict[str, int]: ...

    def cursor(self, region: str) -> int: ...

    def unsent(self, keys: list[str]) -> list[str]:
        """The keys of ``keys`` not recorded as sent, in their order (one look-up)."""
        ...

    def record_many(
        self,
        sent: list[tuple[str, str]],
        now: float,
        *,
        region: str | None = None,
        position: int | None = None,
    ) -> None:
        """Mark every (key, channel) of ``sent`` sent and, when ``region``/``position`` are
        given, move that cursor (never backwards) -- in one step."""
        ...

    def advance(self, region: str, position: int) -> None:
        """Move the region's cursor to ``position`` unless it is further already."""
        ...

    def sent_count(self) -> int: ...

    def close(self) -> None: ...


class Ledger:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite_file.connect(path, _SCHEMA)

    def cursors(self) -> dict[str, int]:
        with self._lock:
            return {str(r): int(p) for r, p in self._db.execute("SELECT region, position FROM cursors")}

    def cursor(self, region: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT position FROM cursors WHERE region = ?", (region,)).fetchone()
        return int(row[0]) if row else 0

    def unsent(self, keys: list[str]) -> list[str]:
        """The keys of ``keys`` not recorded as sent, in their order (one query)."""
        if not keys:
            return []
        with self._lock:
            sent = {
                str(row[0])
                for row in self._db.execute(
                    f"SELECT key FROM sent WHERE key IN ({','.join('?' * len(keys))})", keys
                )
            }
        return [key for key in keys if key not in sent]

    def record_many(
        self,
        sent: list[tuple[str, str]],
        now: float,
        *,
        region: str | None = None,
        position: int | None = None,
    ) -> None:
        """Mark every (key, channel) of ``sent`` sent and, when ``region``/``position`` are
        given, move that cursor — in one transaction (one fsync)."""
        with sqlite_file.transaction(self._db, self._lock) as db:
            db.executemany(
                "INSERT OR IGNORE INTO sent (key, channel, sent_at) VALUES (?, ?, ?)",
                [(key, channel, now) for key, channel in sent],
            )
            if region is not None and position is not None:
                self._advance(region, position)

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


_NOTIFY = "tandtid:{notify}:"
CURSORS = _NOTIFY + "cursors"
SENT = _NOTIFY + "sent"
# KEYS: cursors hash, sent hash; ARGV: region ('' for none), position, then key, channel pairs.
_RECORD = (
    CURSOR_LUA
    + """
for i = 3, #ARGV, 2 do redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) end
if ARGV[1] ~= '' then advance(KEYS[1], ARGV[1], ARGV[2]) end
return 0
"""
)


class RedisLedger:
    """The ledger in the Redis at ``url`` (keys in the module docstring)."""

    def __init__(self, url: str) -> None:
        self._redis = connect(url)
        self._record = self._redis.register_script(_RECORD)
        self._advance = self._redis.register_script(ADVANCE_LUA)

    def cursors(self) -> dict[str, int]:
        return {str(r): int(p) for r, p in self._redis.hgetall(CURSORS).items()}

    def cursor(self, region: str) -> int:
        return int(self._redis.hget(CURSORS, region) or 0)

    def unsent(self, keys: list[str]) -> list[str]:
        if not keys:
            return []
        found = self._redis.hmget(SENT, keys)
        return [key for key, channel in zip(keys, found, strict=True) if channel is None]

    def record_many(
        self,
        sent: list[tuple[str, str]],
        now: float,
        *,
        region: str | None = None,
        position: int | None = None,
    ) -> None:
        args: list[str | int] = ["", 0]
        if region is not None and position is not None:
            args = [region, position]
        for key, channel in sent:
            args += [key, channel]
        self._record(keys=[CURSORS, SENT], args=args)

    def advance(self, region: str, position: int) -> None:
        self._advance(keys=[CURSORS], args=[region, position])

    def sent_count(self) -> int:
        return int(self._redis.hlen(SENT))

    def close(self) -> None:
        self._redis.close()
