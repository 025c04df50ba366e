"""The SQLite file of an embedded store (accounts and sessions, calendar feed tokens, the
notifier's ledger, webhooks): every one is opened the same way and written in the same kind
of transaction. (With ``--redis`` these live in Redis instead: ``persistence.redis_client``.)

``connect`` makes the folder and opens the file for use from any thread (the store guards
its connection with its own lock), in autocommit mode (transactions are explicit), in WAL
mode (readers never wait for the writer), waiting up to 5 s for another process's writer,
and runs the store's schema (``CREATE ... IF NOT EXISTS``). ``transaction`` is
``BEGIN IMMEDIATE`` ... ``COMMIT`` under that lock. Blocking: call a store from a worker
thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal


def connect(
    path: Path, schema: str, *, synchronous: Literal["FULL", "NORMAL"] = "FULL"
) -> sqlite3.Connection:
    """The store's file at ``path``, its tables made. ``synchronous=FULL``: a commit is on disk
    when it returns; ``NORMAL`` (WAL): a commit may be lost in a power cut, never torn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA busy_timeout=5000")
    db.executescript(schema)
    return db


@contextmanager
def transaction(db: sqlite3.Connection, lock: threading.Lock) -> Iterator[sqlite3.Connection]:
    """One write transaction, holding ``lock`` throughout: committed when the block ends, rolled
    back (unless SQLite did so itself, as it does on e.g. a full disk) when it or the commit
    raises; the error goes on to the caller."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
