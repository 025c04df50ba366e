"""Accounts: users with argon2id password hashes, and clinic API keys, in one SQLite file.

The store is synchronous and thread-safe: one connection guarded by a lock, WAL mode, so
the routes may call it from ``asyncio.to_thread`` (and the CLI may use the same file while
the server runs). Password hashing and verification run *outside* the lock (argon2 is slow
on purpose, ~150 ms with the default profile), so a login never stalls other lookups; at
most one argon2 call per CPU core runs at a time.

What is stored:

- ``users``: opaque id (``u_…``), normalised e-mail, display name, role, clinic, and the
  argon2id hash (the encoded string carries salt and parameters). Never the password.
- ``clinic_keys``: the SHA-256 of each key and its clinic. The key itself is shown once,
  by :meth:`AccountStore.create_clinic_key`; keys are 32 random bytes, so a fast hash is
  enough and lookup-by-hash is the constant-time comparison.
- ``sessions``: one row per signed-in session (random id, user, expiry). A session token
  names its row; signing out or changing the password deletes rows, so the token stops
  working at once instead of living out its expiry.

Who a request is (:meth:`AccountStore.session`, :meth:`AccountStore.clinic_for_key`) is answered
from memory, not a query per request: the store caches sessions (with the user's role and
clinic) and key hashes, updates the cache on its own writes, and drops it when another
connection or process has committed to the file (``PRAGMA data_version``, looked at no more
than once a second), so a change made elsewhere is seen within a second.

Errors (all :class:`~engine.errors.TandtidError`)::

    TandtidError
     ├── EmailTaken        the e-mail is already registered          -> 409
     └── InvalidAccount    bad e-mail / short password / bad role-clinic pairing -> 422

Messages never contain the e-mail, name or password (personal data stays out of logs).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from engine.errors import TandtidError

MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 would hash a megabyte happily; a login form need not
MAX_EMAIL = 254
MAX_NAME = 200
CLINIC_KEY_PREFIX = "tt_live_"
_MAX_KEY = 128  # longer bearer strings are not keys; do not even hash them
_SQL_CHUNK = 500  # stay well under SQLite's bound-variable limit
T = TypeVar("T")
_CACHE_MAX = 200_000  # sessions (and key hashes) kept in memory; the oldest are forgotten first
_COHERENCE_S = 1.0  # how often the cache asks SQLite whether another connection wrote


class Role(StrEnum):
    PATIENT = "patient"
    STAFF = "staff"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    name: str
    role: Role
    clinic: str | None


@dataclass(frozen=True, slots=True)
class Session:
    """A live signed-in session: who it is and what they may do (from the users row)."""

    sid: str
    user_id: str
    role: Role
    clinic: str | None
    expires_at: float


class EmailTaken(TandtidError):
    """Registration with an e-mail that already has an account."""

    code = "EMAIL_TAKEN"
    status = 409


class InvalidAccount(TandtidError):
    """Input the store refuses (the routes validate first; this is the last line)."""

    code = "INVALID"
    status = 422


_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    clinic        TEXT,
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS users_role ON users (role);
CREATE TABLE IF NOT EXISTS clinic_keys (
    key_hash   TEXT PRIMARY KEY,
    clinic     TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS clinic_keys_clinic ON clinic_keys (clinic);
CREATE TABLE IF NOT EXISTS sessions (
    sid        TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
"""


def normalise_email(email: str) -> str:
    return email.strip().lower()


def _has_controls(text: str) -> bool:
    """Control or invisible format characters (NUL, ESC, CR/LF, U+202E ...): never in a name or address."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def _check_email(email: str) -> None:
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
        raise InvalidAccount("email is not a valid address")
    if len(email) > MAX_EMAIL or any(c.isspace() for c in email) or _has_controls(email):
        raise InvalidAccount("email is not a valid address")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidAccount(f"password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidAccount(f"password must be at most {MAX_PASSWORD} characters")


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class AccountStore:
    """Users and clinic keys in the SQLite file at ``path`` (created with its tables if missing).

    Pass ``hasher`` only to tune argon2 cost (tests use a cheap one); the default is
    argon2-cffi's recommended argon2id profile. Call :meth:`close` on shutdown.
    """

    def __init__(self, path: Path, *, hasher: PasswordHasher | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        # argon2id takes ~64 MiB and a core per call: at most one per core at a time, so a burst
        # of logins queues here instead of swelling memory (the routes' thread pool is wider).
        self._hashing = threading.BoundedSemaphore(os.cpu_count() or 1)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        # Verified against when the e-mail is unknown, so both paths cost one argon2 verify.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        # sid -> Session, or None for a sid known not to be live; key hash -> clinic or None.
        self._sessions: dict[str, Session | None] = {}
        self._keys: dict[str, str | None] = {}
        self._data_version = self._version()
        self._checked_at = time.monotonic()

    # -- plumbing -------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back by itself on e.g. a full disk
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _fetch(self, sql: str, args: Iterable[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._db.execute(sql, tuple(args)).fetchall())

    def _version(self) -> int:
        with self._lock:
            row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def _coherent(self) -> None:
        """Forget the caches if another connection has committed since we last looked."""
        now = time.monotonic()
        if now - self._checked_at < _COHERENCE_S:
            return
        self._checked_at = now
        version = self._version()
        if version != self._data_version:
            self._data_version = version
            self._sessions.clear()
            self._keys.clear()

    @staticmethod
    def _remember(cache: dict[str, T], key: str, value: T) -> None:
        cache[key] = value
        while len(cache) > _CACHE_MAX:
            del cache[next(iter(cache))]

    @staticmethod
    def _user(row: tuple[object, ...]) -> User:
        uid, email, name, role, clinic = row[:5]
        return User(str(uid), str(email), str(name), Role(str(role)), None if clinic is None else str(clinic))

    # -- users ----------------------------------------------------------------

    def create_user(
        self, email: str, password: str, name: str, role: Role = Role.PATIENT, clinic: str | None = None
    ) -> User:
        """Register a user; raises :class:`EmailTaken` or :class:`InvalidAccount`.

        Staff must name their clinic; patients must not have one (admins may or may not).
        """
        email = normalise_email(email)
        name = name.strip()
        role = Role(role)
        _check_email(email)
        _check_password(password)
        if not name or len(name) > MAX_NAME:
            raise InvalidAccount(f"name must be 1..{MAX_NAME} characters")
        if _has_controls(name):
            raise InvalidAccount("name must not contain control characters")
        if role is Role.STAFF and not clinic:
            raise InvalidAccount("staff accounts need a clinic")
        if role is Role.PATIENT and clinic is not None:
            raise InvalidAccount("patient accounts have no clinic")
        with self._hashing:  # slow: outside the lock
            encoded = self._hasher.hash(password)
        user = User("u_" + secrets.token_urlsafe(12), email, name, role, clinic or None)
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO users (id, email, name, role, clinic, password_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user.id, email, name, role.value, user.clinic, encoded, time.time()),
                )
        except sqlite3.IntegrityError as exc:
            raise EmailTaken("an account with this email already exists") from exc
        return user

    def authenticate(self, email: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None (unknown e-mail costs the same argon2 verify)."""
        rows = self._fetch(
            "SELECT id, email, name, role, clinic, password_hash FROM users WHERE email = ?",
            (normalise_email(email),),
        )
        if len(password) > MAX_PASSWORD:
            password = password[:MAX_PASSWORD] + "\0"  # bounded work; can never match a stored hash
        encoded = str(rows[0][5]) if rows else self._dummy_hash
        try:
            with self._hashing:
                self._hasher.verify(encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not rows:
            return None
        user = self._user(rows[0])
        if self._hasher.check_needs_rehash(encoded):
            # Parameters were raised since this hash was made: upgrade it while we hold the password.
            with self._hashing:
                fresh = self._hasher.hash(password)
            with self._tx() as db:
                db.execute(
                    "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
                    (fresh, user.id, encoded),
                )
        return user

    def change_password(self, user_id: str, current: str, new: str) -> User | None:
        """Set a new password if ``current`` is right (else None) and end every session of the user.

        Raises :class:`InvalidAccount` for a new password the store refuses. The caller starts a
        fresh session for the client that asked, if it wants one.
        """
        _check_password(new)
        user = self.get(user_id)
        if user is None or self.authenticate(user.email, current) is None:
            return None
        with self._hashing:
            encoded = self._hasher.hash(new)
        with self._tx() as db:
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (encoded, user_id))
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            self._sessions.clear()  # rare: simpler than finding this user's sids in the cache
        return user

    def get(self, user_id: str) -> User | None:
        rows = self._fetch("SELECT id, email, name, role, clinic FROM users WHERE id = ?", (user_id,))
        return self._user(rows[0]) if rows else None

    def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Display names by user id; unknown ids are simply absent."""
        ids = list(dict.fromkeys(user_ids))
        out: dict[str, str] = {}
        for i in range(0, len(ids), _SQL_CHUNK):
            chunk = ids[i : i + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for uid, name in self._fetch(f"SELECT id, name FROM users WHERE id IN ({marks})", chunk):
                out[str(uid)] = str(name)
        return out

    def users(self, role: Role | None = None) -> list[User]:
        """All users (or those with ``role``), oldest first."""
        cols = "SELECT id, email, name, role, clinic FROM users"
        if role is None:
            rows = self._fetch(cols + " ORDER BY created_at, id")
        else:
            rows = self._fetch(cols + " WHERE role = ? ORDER BY created_at, id", (Role(role).value,))
        return [self._user(r) for r in rows]

    # -- sessions ---------------------------------------------------------------

    def open_session(self, user: User, expires_at: float) -> str:
        """Record a new session of ``user`` until ``expires_at`` (epoch seconds); returns its id.

        Sessions past their expiry are deleted on the way (a signed token expires with them).
        """
        sid = secrets.token_urlsafe(16)
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            added = db.execute(
                "INSERT INTO sessions (sid, user_id, created_at, expires_at)"
                " SELECT ?, id, ?, ? FROM users WHERE id = ?",
                (sid, now, expires_at, user.id),
            ).rowcount
            # an unknown user gets a sid that names nothing (its token is refused)
            found = Session(sid, user.id, user.role, user.clinic, expires_at) if added else None
            self._remember(self._sessions, sid, found)
        return sid

    def session(self, sid: str) -> Session | None:
        """The live session ``sid`` (from memory when known), or None if it ended or never was."""
        self._coherent()
        if sid in self._sessions:
            found = self._sessions[sid]
        else:
            with self._lock:  # query and remember as one step: an end_session cannot slip between
                row = self._db.execute(
                    "SELECT s.user_id, u.role, u.clinic, s.expires_at FROM sessions s"
                    " JOIN users u ON u.id = s.user_id WHERE s.sid = ?",
                    (sid,),
                ).fetchone()
                found = None
                if row is not None:
                    uid, role, clinic, expires_at = row
                    found = Session(
                        sid,
                        str(uid),
                        Role(str(role)),
                        None if clinic is None else str(clinic),
                        float(expires_at),
                    )
                self._remember(self._sessions, sid, found)
        if found is None or found.expires_at <= time.time():
            return None
        return found

    def end_session(self, sid: str) -> None:
        """Sign this session out: its token stops working now."""
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE sid = ?", (sid,))
            self._remember(self._sessions, sid, None)

    def end_sessions(self, user_id: str) -> int:
        """Sign every session of ``user_id`` out; returns how many there were."""
        with self._tx() as db:
            ended = db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount
            self._sessions.clear()
        return int(ended)

    # -- clinic API keys --------------------------------------------------------

    def create_clinic_key(self, clinic: str) -> str:
        """A new key for ``clinic``. Show it to the operator now: only its SHA-256 is kept."""
        if not clinic:
            raise InvalidAccount("clinic is required")
        key = CLINIC_KEY_PREFIX + secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute(
                "INSERT INTO clinic_keys (key_hash, clinic, created_at) VALUES (?, ?, ?)",
                (_key_hash(key), clinic, time.time()),
            )
        return key

    def clinic_for_key(self, key: str) -> str | None:
        """The clinic a live key belongs to, else None."""
        if not key.startswith(CLINIC_KEY_PREFIX) or len(key) > _MAX_KEY:
            return None
        self._coherent()
        digest = _key_hash(key)
        if digest in self._keys:
            return self._keys[digest]
        with self._lock:
            row = self._db.execute("SELECT clinic FROM clinic_keys WHERE key_hash = ?", (digest,)).fetchone()
            clinic = None if row is None else str(row[0])
            self._remember(self._keys, digest, clinic)
        return clinic

    def revoke_clinic_keys(self, clinic: str) -> int:
        """Delete every key of ``clinic``; returns how many there were."""
        with self._tx() as db:
            revoked = int(db.execute("DELETE FROM clinic_keys WHERE clinic = ?", (clinic,)).rowcount)
            self._keys.clear()
        return revoked

    def close(self) -> None:
        with self._lock:
            self._db.close()
