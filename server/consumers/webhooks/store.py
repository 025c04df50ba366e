"""Webhook endpoints, their deliveries and the dispatcher's journal cursors: :class:`Webhooks`
is what the dispatcher and the routes use; :class:`WebhookStore` keeps it in one SQLite file
(``<data_dir>/webhooks.sqlite3``; WAL, ``synchronous=FULL``), and
:class:`~server.consumers.webhooks.redis_store.RedisWebhookStore` in Redis (``--redis``). Both
are thread-safe; call them through ``in_consumer_thread`` from the consumers (``asyncio.to_thread`` from routes).

A delivery is one event for one endpoint. Deliveries of an endpoint go out strictly in the
order of their row ids, which is journal order (one clinic lives in one region): only the
oldest ``pending`` delivery of an endpoint is ever attempted, so a failing one holds back
the later ones until it succeeds or is given up (24 h). Queuing an entry's deliveries and
moving the region's cursor past it happen in one transaction: none lost, none queued twice.
A replay queues a copy at the end (same event id and body, so receivers can dedupe).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from persistence import sqlite_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, clinic TEXT NOT NULL, url TEXT NOT NULL, secret TEXT NOT NULL,
    events TEXT NOT NULL, created_at REAL NOT NULL, deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS endpoints_clinic ON endpoints (clinic, deleted);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL,
    region TEXT NOT NULL, position INTEGER NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL,                 -- pending | delivered | failed | cancelled
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    last_status INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finished_at REAL NOT NULL DEFAULT 0,
    replay_of INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (status, endpoint, id);
CREATE INDEX IF NOT EXISTS deliveries_endpoint ON deliveries (endpoint, id);
CREATE TABLE IF NOT EXISTS cursors (region TEXT PRIMARY KEY, position INTEGER NOT NULL);
-- one row, bumped in the transaction that creates or deletes an endpoint (by any process):
-- the dispatcher keeps the endpoints in memory and reads them again only when it moved
CREATE TABLE IF NOT EXISTS endpoints_version (n INTEGER NOT NULL);
INSERT INTO endpoints_version (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM endpoints_version);
"""
_BUMP = "UPDATE endpoints_version SET n = n + 1"

PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"
STATUSES = (PENDING, DELIVERED, FAILED, CANCELLED)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    clinic: str
    url: str
    events: tuple[str, ...]
    created_at: float

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": list(self.events), "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    endpoint: str
    event_id: str
    type: str
    region: str
    position: int
    body: bytes
    status: str
    attempts: int
    next_attempt_at: float
    last_error: str
    last_status: int
    created_at: float
    finished_at: float
    replay_of: int | None

    def view(self) -> dict[str, Any]:
        """The delivery log row the clinic's staff see (no body: they can ask for a replay)."""
        return {
            "id": self.id,
            "event_id": self.event_id,
            "type": self.type,
            "region": self.region,
            "sequence": self.position,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at if self.status == PENDING else None,
            "last_error": self.last_error,
            "last_status": self.last_status or None,
            "created_at": self.created_at,
            "finished_at": self.finished_at or None,
            "replay_of": self.replay_of,
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    """The head delivery of an endpoint, with what is needed to post it."""

    delivery: Delivery
    url: str
    secret: str


_DELIVERY_COLUMNS = (
    "id, endpoint, event_id, type, region, position, body, status, attempts, next_attempt_at, "
    "last_error, last_status, created_at, finished_at, replay_of"
)
QueuedRow = tuple[str, str, str, bytes]  # (endpoint id, event id, type, body)


def _delivery(row: tuple[Any, ...]) -> Delivery:
    return Delivery(
        int(row[0]),
        row[1],
        row[2],
        row[3],
        row[4],
        int(row[5]),
        bytes(row[6]),
        row[7],
        int(row[8]),
        float(row[9]),
        row[10],
        int(row[11]),
        float(row[12]),
        float(row[13]),
        None if row[14] is None else int(row[14]),
    )


class Webhooks(Protocol):
    def create_endpoint(self, clinic: str, url: str, events: list[str], now: float) -> tuple[Endpoint, str]:
        """A new endpoint and its signing secret (returned once; shown to the clinic once)."""
        ...

    def endpoints(self, clinic: str) -> list[Endpoint]:
        """The clinic's live endpoints, oldest first."""
        ...

    def endpoint(self, clinic: str, endpoint_id: str) -> Endpoint | None: ...

    def delete_endpoint(self, clinic: str, endpoint_id: str, now: float) -> bool:
        """Stop the endpoint; its pending deliveries are cancelled (the log stays readable)."""
        ...

    def subscriptions(self) -> dict[str, list[Endpoint]]:
        """Every live endpoint by clinic, oldest first, kept in memory and read again only when
        an endpoint was created or deleted since (by any process or node); for the dispatcher's
        loop (one caller thread). Look up with ``subscribers_in``."""
        ...

    def subscribers(self, clinic: str, event_type: str, at: float) -> list[str]:
        """Ids of the clinic's live endpoints that chose ``event_type`` and existed at ``at``."""
        ...

    def cursors(self) -> dict[str, int]: ...

    def enqueue(self, region: str, position: int, rows: list[QueuedRow], now: float) -> None:
        """Queue the deliveries of one journal entry and move the region's cursor past it, in one step."""
        ...

    def advance(self, region: str, position: int) -> None:
        """Move the region's cursor (never backwards)."""
        ...

    def heads(self) -> list[Attempt]:
        """The oldest pending delivery of every endpoint that has one."""
        ...

    def delivered(self, delivery_id: int, now: float, status_code: int) -> None: ...

    def attempt_failed(
        self, delivery_id: int, now: float, error: str, status_code: int, next_attempt_at: float | None
    ) -> None:
        """Record a failed attempt; ``next_attempt_at`` None means give up (status failed)."""
        ...

    def deliveries(
        self, endpoint_id: str, *, limit: int = 100, status: str | None = None, before: int | None = None
    ) -> list[Delivery]:
        """The endpoint's delivery log, newest first."""
        ...

    def replay(self, endpoint_id: str, delivery_id: int, now: float) -> Delivery | None:
        """Queue a copy of a delivery at the end of its endpoint's queue; None if there is none."""
        ...

    def close(self) -> None: ...


class WebhookStore:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite_file.connect(path, _SCHEMA)
        # The dispatcher's reads of the endpoints (event loop only): its own connection, so a
        # writer's transaction in a worker thread never holds it up (WAL: readers never wait).
        self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._subscriptions: tuple[int, dict[str, list[Endpoint]]] = (-1, {})

    def _tx(self, fn: Any) -> Any:
        with sqlite_file.transaction(self._db, self._lock) as db:
            return fn(db)

    # -- endpoints -------------------------------------------------------------------------------

    def create_endpoint(self, clinic: str, url: str, events: list[str], now: float) -> tuple[Endpoint, str]:
        """A new endpoint and its signing secret (returned once; shown to the clinic once)."""
        endpoint = Endpoint("we_" + secrets.token_hex(8), clinic, url, tuple(sorted(set(events))), now)
        secret = "whsec_" + secrets.token_urlsafe(32)

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO endpoints (id, clinic, url, secret, events, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (endpoint.id, clinic, url, secret, json.dumps(list(endpoint.events)), now),
            )
            db.execute(_BUMP)

        self._tx(run)
        return endpoint, secret

    def endpoints(self, clinic: str) -> list[Endpoint]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, clinic, url, events, created_at FROM endpoints WHERE clinic = ? AND deleted = 0 "
                "ORDER BY created_at, id",
                (clinic,),
            ).fetchall()
        return [Endpoint(r[0], r[1], r[2], tuple(json.loads(r[3])), float(r[4])) for r in rows]

    def endpoint(self, clinic: str, endpoint_id: str) -> Endpoint | None:
        return next((e for e in self.endpoints(clinic) if e.id == endpoint_id), None)

    def delete_endpoint(self, clinic: str, endpoint_id: str, now: float) -> bool:
        """Stop the endpoint; its pending deliveries are cancelled (the log stays readable)."""

        def run(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE endpoints SET deleted = 1 WHERE id = ? AND clinic = ? AND deleted = 0",
                (endpoint_id, clinic),
            )
            if cur.rowcount == 0:
                return False
            db.execute(_BUMP)
            db.execute(
                "UPDATE deliveries SET status = ?, finished_at = ?, last_error = 'endpoint deleted' "
                "WHERE endpoint = ? AND status = ?",
                (CANCELLED, now, endpoint_id, PENDING),
            )
            return True

        return bool(self._tx(run))

    def subscribers(self, clinic: str, event_type: str, at: float) -> list[str]:
        return [e.id for e in self.endpoints(clinic) if event_type in e.events and e.created_at <= at]

    def subscriptions(self) -> dict[str, list[Endpoint]]:
        """Every live endpoint by clinic, from memory: one read of the endpoints' version row
        (the dispatcher calls it on the event loop, once per journal entry), and the endpoints
        are read again only when an endpoint was created or deleted since (by any process).
        Not thread-safe: one caller thread (the dispatcher's loop)."""
        version = int(self._reader.execute("SELECT n FROM endpoints_version").fetchone()[0])
        if version != self._subscriptions[0]:
            self._reader.execute("BEGIN")  # the version and the rows from one read snapshot
            try:
                version = int(self._reader.execute("SELECT n FROM endpoints_version").fetchone()[0])
                rows = self._reader.execute(
                    "SELECT id, clinic, url, events, created_at FROM endpoints WHERE deleted = 0 "
                    "ORDER BY created_at, id"
                ).fetchall()
            finally:
                self._reader.execute("COMMIT")
            by_clinic: dict[str, list[Endpoint]] = {}
            for r in rows:
                endpoint = Endpoint(r[0], r[1], r[2], tuple(json.loads(r[3])), float(r[4]))
                by_clinic.setdefault(endpoint.clinic, []).append(endpoint)
            self._subscriptions = (version, by_clinic)
        return self._subscriptions[1]

    # -- queueing (the journal consumer) ---------------------------------------------------------

    def cursors(self) -> dict[str, int]:
        with self._lock:
            return {str(r): int(p) for r, p in self._db.execute("SELECT region, position FROM cursors")}

    def enqueue(self, region: str, position: int, rows: list[QueuedRow], now: float) -> None:
        """Queue the deliveries of one journal entry and move the region's cursor past it."""

        def run(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO deliveries (endpoint, event_id, type, region, position, body, status, "
                "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (ep, event_id, kind, region, position, body, PENDING, now, now)
                    for ep, event_id, kind, body in rows
                ],
            )
            self._advance(db, region, position)

        self._tx(run)

    def advance(self, region: str, position: int) -> None:
        self._tx(lambda db: self._advance(db, region, position))

    @staticmethod
    def _advance(db: sqlite3.Connection, region: str, position: int) -> None:
        db.execute(
            "INSERT INTO cursors (region, position) VALUES (?, ?) ON CONFLICT(region) "
            "DO UPDATE SET position = max(position, excluded.position)",
            (region, position),
        )

    # -- sending ---------------------------------------------------------------------------------

    def heads(self) -> list[Attempt]:
        """The oldest pending delivery of every endpoint that has one."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join('d.' + c.strip() for c in _DELIVERY_COLUMNS.split(','))}, e.url, e.secret "
                "FROM deliveries d JOIN endpoints e ON e.id = d.endpoint "
                "WHERE d.id IN (SELECT min(id) FROM deliveries WHERE status = ? GROUP BY endpoint)",
                (PENDING,),
            ).fetchall()
        return [Attempt(_delivery(r[:15]), r[15], r[16]) for r in rows]

    def delivered(self, delivery_id: int, now: float, status_code: int) -> None:
        self._tx(
            lambda db: db.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_status = ?, last_error = '', "
                "finished_at = ? WHERE id = ? AND status = ?",
                (DELIVERED, status_code, now, delivery_id, PENDING),
            )
        )

    def attempt_failed(
        self, delivery_id: int, now: float, error: str, status_code: int, next_attempt_at: float | None
    ) -> None:
        """Record a failed attempt; ``next_attempt_at`` None means give up (status failed)."""
        if next_attempt_at is None:
            self._tx(
                lambda db: db.execute(
                    "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_error = ?, last_status = ?, "
                    "finished_at = ? WHERE id = ? AND status = ?",
                    (FAILED, error[:500], status_code, now, delivery_id, PENDING),
                )
            )
        else:
            self._tx(
                lambda db: db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, last_status = ?, "
                    "next_attempt_at = ? WHERE id = ? AND status = ?",
                    (error[:500], status_code, next_attempt_at, delivery_id, PENDING),
                )
            )

    # -- the delivery log ------------------------------------------------------------------------

    def deliveries(
        self, endpoint_id: str, *, limit: int = 100, status: str | None = None, before: int | None = None
    ) -> list[Delivery]:
        """Newest first."""
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE endpoint = ?"
        args: list[Any] = [endpoint_id]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if before is not None:
            sql += " AND id < ?"
            args.append(before)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [_delivery(r) for r in self._db.execute(sql, args).fetchall()]

    def replay(self, endpoint_id: str, delivery_id: int, now: float) -> Delivery | None:
        """Queue a copy of a delivery at the end of its endpoint's queue, due as soon as it is the
        head; None if there is none."""

        def run(db: sqlite3.Connection) -> Delivery | None:
            row = db.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ? AND endpoint = ?",
                (delivery_id, endpoint_id),
            ).fetchone()
            if row is None:
                return None
            old = _delivery(row)
            cur = db.execute(
                "INSERT INTO deliveries (endpoint, event_id, type, region, position, body, status, "
                "next_attempt_at, created_at, replay_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    old.endpoint,
                    old.event_id,
                    old.type,
                    old.region,
                    old.position,
                    old.body,
                    PENDING,
                    0.0,
                    now,
                    old.replay_of or old.id,
                ),
            )
            new = db.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (cur.lastrowid,)
            ).fetchone()
            return _delivery(new)

        result: Delivery | None = self._tx(run)
        return result

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._reader.close()


def subscribers_in(
    subscriptions: dict[str, list[Endpoint]], clinic: str, event_type: str, at: float
) -> list[str]:
    """Ids of the clinic's live endpoints (in ``WebhookStore.subscriptions()``) that chose
    ``event_type`` and existed at ``at`` (an endpoint gets the events decided from its
    registration on, not the clinic's history)."""
    return [e.id for e in subscriptions.get(clinic, ()) if event_type in e.events and e.created_at <= at]
