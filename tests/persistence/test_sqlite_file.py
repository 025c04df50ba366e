"""persistence.sqlite_file (unit, a real SQLite file in a temp directory): how an embedded store
opens its file and writes in one transaction."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from persistence import sqlite_file

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"


def test_connect_makes_the_folder_the_tables_and_the_modes(tmp_path: Path) -> None:
    path = tmp_path / "new" / "store.sqlite3"
    db = sqlite_file.connect(path, SCHEMA, synchronous="NORMAL")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert db.execute("PRAGMA busy_timeout").fetchone() == (5000,)
        assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    finally:
        db.close()
    again = sqlite_file.connect(path, SCHEMA)  # the schema runs again: nothing is lost
    try:
        assert again.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL, the default
    finally:
        again.close()


def test_a_transaction_commits_or_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    db = sqlite_file.connect(path, SCHEMA)
    lock = threading.Lock()
    try:
        with sqlite_file.transaction(db, lock) as tx:
            assert lock.locked() and tx.in_transaction
            tx.execute("INSERT INTO t VALUES ('a', 1)")
        assert not lock.locked() and not db.in_transaction
        with pytest.raises(sqlite3.IntegrityError), sqlite_file.transaction(db, lock) as tx:
            tx.execute("INSERT INTO t VALUES ('b', 2)")
            tx.execute("INSERT INTO t VALUES ('a', 3)")  # the key is taken: the whole step fails
        assert not lock.locked() and not db.in_transaction
    finally:
        db.close()
    other = sqlite3.connect(path)  # what another process sees
    try:
        assert other.execute("SELECT k, v FROM t").fetchall() == [("a", 1)]
    finally:
        other.close()
