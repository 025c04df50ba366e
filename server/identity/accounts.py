"""Accounts: users with argon2id password hashes, their sessions, and clinic API keys.

:class:`Accounts` is the interface the routes use; it validates, hashes and caches, and two
stores keep the rows: :class:`AccountStore` in one SQLite file (the embedded default) and
:class:`~server.identity.redis_accounts.RedisAccountStore` in Redis (``tandtid serve --redis``,
so that every node signs the same people in). :func:`server.stores.open_accounts` picks.

Both are synchronous and thread-safe, so the routes may call them from ``asyncio.to_thread``
(and the CLI may use the same store while the server runs). Password hashing and verification run *outside* the lock (argon2 is slow
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

Who a request is (:meth:`Accounts.session`, :meth:`Accounts.clinic_for_key`) is answered from
memory, not a query per request: the store caches sessions (with the user's role and clinic)
and key hashes, updates the cache on its own writes, and drops it when someone else changed
them: the SQLite store when another connection or process has committed to the file (``PRAGMA
data_version``, looked at no more than once a second), the Redis store when another node says
so on a pub/sub channel (at once). A read that raced with a drop is not remembered (a
generation count), so a revoked session is never cached as live.

Errors (all :class:`~engine.errors.TandtidError`)::

    TandtidError
     ├── EmailTaken        the e-mail is already registered          -> 409
     ├── InvalidAccount    bad e-mail / short password / bad role-clinic pairing -> 422
     └── UnknownAccount    no such account at that clinic             -> 404

Messages never contain the e-mail, name or password (personal data stays out of logs).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import sqlite3
import threading
import time
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from engine.errors import TandtidError
from persistence import sqlite_file

MIN_PASSWORD = 8
# argon2id at OWASP's recommended minimum (Password Storage Cheat Sheet: 19 MiB, 2 passes, 1 lane):
# ~22 ms of one core per hash or verify here. argon2-cffi's default (RFC 9106's low-memory profile:
# 64 MiB, 3 passes, 4 lanes) took ~190 ms and four threads per call, so 200 users registering and
# signing in on this 2-core machine queued behind it (register p99 430-1,600 ms). A hash made with
# other parameters still verifies (they are in the encoded string) and is re-made with these on the
# next sign-in.
PASSWORD_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
MAX_PASSWORD = 1024  # argon2 would hash a megabyte happily; a login form need not
MAX_EMAIL = 254
MAX_NAME = 200
CLINIC_KEY_PREFIX = "tt_live_"
_MAX_KEY = 128  # longer bearer strings are not keys; do not even hash them
_SQL_CHUNK = 500  # stay well under SQLite's bound-variable limit
T = TypeVar("T")
_CACHE_MAX = 200_000  # sessions (and key hashes) kept in memory; the oldest are forgotten first


def _on_event_loop() -> bool:
    """True on a thread running an asyncio event loop (not in a worker thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_COHERENCE_S = 1.0  # how often the cache asks SQLite whether another connection wrote


class Role(StrEnum):
    """Who someone is. At a clinic: ``STAFF`` run the day (bookings, blocks, no-shows) and a
    ``CLINIC_ADMIN`` also sets the clinic up and manages its staff accounts and API key;
    ``ADMIN`` is the platform's operator (every clinic)."""

    PATIENT = "patient"
    STAFF = "staff"
    CLINIC_ADMIN = "clinic_admin"
    ADMIN = "admin"


CLINIC_ROLES = frozenset({Role.STAFF, Role.CLINIC_ADMIN})  # accounts that belong to one clinic


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


class UnknownAccount(TandtidError):
    """An account id that names no account of the clinic asked about (another clinic's is unknown too)."""

    code = "NOT_FOUND"
    status = 404


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


def key_hash(key: str) -> str:
    """What a store keeps of a clinic key (and looks it up by)."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_user(email: str, password: str, name: str, role: Role, clinic: str | None) -> tuple[str, str]:
    """The normalised e-mail and name of a registration the stores accept, else :class:`InvalidAccount`.

    Staff and clinic admins must name their clinic; patients must not have one (admins may or may not).
    """
    email = normalise_email(email)
    name = name.strip()
    _check_email(email)
    _check_password(password)
    if not name or len(name) > MAX_NAME:
        raise InvalidAccount(f"name must be 1..{MAX_NAME} characters")
    if _has_controls(name):
        raise InvalidAccount("name must not contain control characters")
    if role in CLINIC_ROLES and not clinic:
        raise InvalidAccount("staff and clinic admin accounts need a clinic")
    if role is Role.PATIENT and clinic is not None:
        raise InvalidAccount("patient accounts have no clinic")
    return email, name


class Accounts(ABC):
    """Users, sessions and clinic keys: what the routes, the notifier and the CLI use.

    Validation, argon2 and the caches live here; a store implements the ``_``-prefixed
    primitives below on its storage. Pass ``hasher`` only to tune argon2 cost (tests use a
    cheap one); the default is ``PASSWORD_HASHER``. Call :meth:`close` on shutdown.
    """

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PASSWORD_HASHER
        # argon2id takes ~19 MiB and a core per call: at most one per core at a time, so a burst
        # of logins queues here instead of swelling memory (the routes' thread pool is wider).
        self._hashing = threading.BoundedSemaphore(os.cpu_count() or 1)
        # Verified against when the e-mail is unknown, so both paths cost one argon2 verify.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        # sid -> Session, or None for a sid known not to be live; key hash -> clinic or None.
        self._sessions: dict[str, Session | None] = {}
        self._keys: dict[str, str | None] = {}
        self._cache_lock = threading.Lock()
        self._generation = 0  # bumped by every drop: a read begun before one is not remembered

    # -- the storage primitives a store implements -------------------------------------------------

    @abstractmethod
    def _insert_user(self, user: User, password_hash: str, created_at: float) -> bool:
        """Store a new user; False if the e-mail is taken (atomically: one of two racers wins)."""

    @abstractmethod
    def _credentials(self, email: str) -> tuple[User, str] | None:
        """The user with this normalised e-mail and their encoded hash."""

    @abstractmethod
    def _replace_hash(self, user_id: str, old: str, new: str) -> None:
        """Set the hash to ``new`` if it still is ``old``."""

    @abstractmethod
    def _set_password(self, user_id: str, password_hash: str) -> None:
        """Set the hash and delete every session of the user, in one step."""

    @abstractmethod
    def _insert_session(self, sid: str, user_id: str, now: float, expires_at: float) -> bool:
        """Store a session of an existing user (False, nothing stored, for an unknown user)."""

    @abstractmethod
    def _load_session(self, sid: str) -> Session | None:
        """The stored session with its user's role and clinic (expiry not checked)."""

    @abstractmethod
    def _delete_session(self, sid: str) -> None: ...

    @abstractmethod
    def _delete_sessions(self, user_id: str) -> int: ...

    @abstractmethod
    def _insert_key(self, digest: str, clinic: str, now: float) -> None: ...

    @abstractmethod
    def _load_key(self, digest: str) -> str | None: ...

    @abstractmethod
    def _delete_keys(self, clinic: str) -> int: ...

    @abstractmethod
    def _set_role(self, user: User, role: Role) -> bool:
        """Change ``user``'s role if the stored account still has ``user.role`` and ``user.clinic``."""

    @abstractmethod
    def _delete_user(self, user: User) -> bool:
        """Delete the account and every session of it, in one step (False if it was gone)."""

    @abstractmethod
    def _key_created(self, clinic: str) -> float | None:
        """When the clinic's newest live key was made (epoch seconds), or None."""

    @abstractmethod
    def _replace_keys(self, digest: str, clinic: str, now: float) -> None:
        """Delete every key of ``clinic`` and store ``digest`` as its one key, in one step."""

    @abstractmethod
    def get(self, user_id: str) -> User | None: ...

    @abstractmethod
    def get_many(self, user_ids: Iterable[str]) -> dict[str, User]:
        """The users by id, in one look-up (the notifier's batch); unknown ids are simply absent."""

    @abstractmethod
    def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Display names by user id; unknown ids are simply absent."""

    @abstractmethod
    def users(self, role: Role | None = None) -> list[User]:
        """All users (or those with ``role``), oldest first."""

    @abstractmethod
    def close(self) -> None: ...

    def _coherent(self) -> None:
        """Drop what others may have changed since (a store that polls for changes does it here)."""
        return

    def _coherence_due(self) -> bool:
        """Whether the next :meth:`_coherent` reads the store (a store that polls says when)."""
        return False

    def _announce(self, *, sid: str | None = None, sessions: bool = False, keys: bool = False) -> None:
        """Tell the other processes sharing the store to drop these (a store that can, does)."""
        return

    # -- the cache -----------------------------------------------------------------------------------

    def _drop(self, *, sid: str | None = None, sessions: bool = False, keys: bool = False) -> None:
        """Forget cached entries (one session, all sessions, the keys) after a change."""
        with self._cache_lock:
            self._generation += 1
            if sid is not None:
                self._sessions.pop(sid, None)
            if sessions:
                self._sessions.clear()
            if keys:
                self._keys.clear()

    def _changed(self, *, sid: str | None = None, sessions: bool = False, keys: bool = False) -> None:
        """After our own write: drop here, and tell the others."""
        self._drop(sid=sid, sessions=sessions, keys=keys)
        self._announce(sid=sid, sessions=sessions, keys=keys)

    def _remember(self, cache: dict[str, T], key: str, value: T, generation: int) -> None:
        with self._cache_lock:
            if generation != self._generation:
                return  # something was dropped while we read: our answer may be stale
            cache[key] = value
            while len(cache) > _CACHE_MAX:
                del cache[next(iter(cache))]

    def _cached(self, cache: dict[str, T], key: str) -> tuple[bool, T | None, int]:
        with self._cache_lock:
            if key in cache:
                return True, cache[key], self._generation
            return False, None, self._generation

    # -- users ------------------------------------------------------------------------------------------

    def create_user(
        self, email: str, password: str, name: str, role: Role = Role.PATIENT, clinic: str | None = None
    ) -> User:
        """Register a user; raises :class:`EmailTaken` or :class:`InvalidAccount`.

        Staff must name their clinic; patients must not have one (admins may or may not).
        """
        role = Role(role)
        email, name = check_user(email, password, name, role, clinic)
        with self._hashing:  # slow: outside any lock
            encoded = self._hasher.hash(password)
        user = User("u_" + secrets.token_urlsafe(12), email, name, role, clinic or None)
        if not self._insert_user(user, encoded, time.time()):
            raise EmailTaken("an account with this email already exists")
        return user

    def authenticate(self, email: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None (unknown e-mail costs the same argon2 verify)."""
        found = self._credentials(normalise_email(email))
        if len(password) > MAX_PASSWORD:
            password = password[:MAX_PASSWORD] + "\0"  # bounded work; can never match a stored hash
        encoded = found[1] if found is not None else self._dummy_hash
        try:
            with self._hashing:
                self._hasher.verify(encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if found is None:
            return None
        user = found[0]
        if self._hasher.check_needs_rehash(encoded):
            # Parameters were raised since this hash was made: upgrade it while we hold the password.
            with self._hashing:
                fresh = self._hasher.hash(password)
            self._replace_hash(user.id, encoded, fresh)
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
        self._set_password(user_id, encoded)
        self._changed(sessions=True)  # rare: simpler than finding this user's sids in the cache
        return user

    def clinic_users(self, clinic: str) -> list[User]:
        """The staff and clinic admin accounts of ``clinic``."""
        return [u for role in (Role.CLINIC_ADMIN, Role.STAFF) for u in self.users(role) if u.clinic == clinic]

    def _clinic_user(self, clinic: str, user_id: str) -> User:
        user = self.get(user_id)
        if user is None or user.clinic != clinic or user.role not in CLINIC_ROLES:
            raise UnknownAccount("no such account at this clinic")
        return user

    def set_clinic_role(self, clinic: str, user_id: str, role: Role) -> User:
        """Make an account of ``clinic`` staff or clinic admin; its live sessions (on every node)
        carry the new role at once. Raises :class:`UnknownAccount` (not an account of that
        clinic) or :class:`InvalidAccount` (not a clinic role)."""
        role = Role(role)
        if role not in CLINIC_ROLES:
            raise InvalidAccount("a clinic account is staff or clinic_admin")
        user = self._clinic_user(clinic, user_id)
        if user.role is not role:
            if not self._set_role(user, role):
                raise UnknownAccount("no such account at this clinic")  # changed or removed meanwhile
            self._changed(sessions=True)  # cached sessions carry the role; rare, so forget them all
        return User(user.id, user.email, user.name, role, user.clinic)

    def remove_clinic_user(self, clinic: str, user_id: str) -> None:
        """Delete an account of ``clinic`` and end its sessions: its tokens stop working now, on
        every node. Raises :class:`UnknownAccount`."""
        user = self._clinic_user(clinic, user_id)
        if not self._delete_user(user):
            raise UnknownAccount("no such account at this clinic")
        self._changed(sessions=True)

    # -- sessions ---------------------------------------------------------------------------------------

    def open_session(self, user: User, expires_at: float) -> str:
        """Record a new session of ``user`` until ``expires_at`` (epoch seconds); returns its id.

        A session of an unknown user names nothing (its token is refused)."""
        sid = secrets.token_urlsafe(16)
        generation = self._cached(self._sessions, sid)[2]
        added = self._insert_session(sid, user.id, time.time(), expires_at)
        found = Session(sid, user.id, user.role, user.clinic, expires_at) if added else None
        self._remember(self._sessions, sid, found, generation)
        return sid

    def session(self, sid: str) -> Session | None:
        """The live session ``sid`` (from memory when known), or None if it ended or never was."""
        self._coherent()
        known, found, generation = self._cached(self._sessions, sid)
        if not known:
            found = self._load_session(sid)
            self._remember(self._sessions, sid, found, generation)
        if found is None or found.expires_at <= time.time():
            return None
        return found

    def knows_session(self, sid: str) -> bool:
        """True when :meth:`session` answers ``sid`` from memory (no store read: not even the
        look whether others changed the store, when one is due)."""
        return not self._coherence_due() and self._cached(self._sessions, sid)[0]

    def end_session(self, sid: str) -> None:
        """Sign this session out: its token stops working now, on every node."""
        self._delete_session(sid)
        self._changed(sid=sid)

    def end_sessions(self, user_id: str) -> int:
        """Sign every session of ``user_id`` out; returns how many there were."""
        ended = self._delete_sessions(user_id)
        self._changed(sessions=True)
        return ended

    # -- clinic API keys --------------------------------------------------------------------------------

    def create_clinic_key(self, clinic: str) -> str:
        """A new key for ``clinic``. Show it to the operator now: only its SHA-256 is kept."""
        if not clinic:
            raise InvalidAccount("clinic is required")
        key = CLINIC_KEY_PREFIX + secrets.token_urlsafe(32)
        self._insert_key(key_hash(key), clinic, time.time())
        return key

    def knows_key(self, key: str) -> bool:
        """True when :meth:`clinic_for_key` answers ``key`` from memory (as :meth:`knows_session`)."""
        return not self._coherence_due() and self._cached(self._keys, key_hash(key))[0]

    def clinic_for_key(self, key: str) -> str | None:
        """The clinic a live key belongs to, else None."""
        if not key.startswith(CLINIC_KEY_PREFIX) or len(key) > _MAX_KEY:
            return None
        self._coherent()
        digest = key_hash(key)
        known, clinic, generation = self._cached(self._keys, digest)
        if not known:
            clinic = self._load_key(digest)
            self._remember(self._keys, digest, clinic, generation)
        return clinic

    def clinic_key_created(self, clinic: str) -> float | None:
        """When the newest live key of ``clinic`` was made (epoch seconds), or None if it has none."""
        return self._key_created(clinic)

    def rotate_clinic_key(self, clinic: str) -> str:
        """Revoke every key of ``clinic`` and make a new one in the same step (shown once, as
        :meth:`create_clinic_key`): the old keys stop working the moment the new one exists."""
        if not clinic:
            raise InvalidAccount("clinic is required")
        key = CLINIC_KEY_PREFIX + secrets.token_urlsafe(32)
        self._replace_keys(key_hash(key), clinic, time.time())
        self._changed(keys=True)
        return key

    def revoke_clinic_keys(self, clinic: str) -> int:
        """Delete every key of ``clinic``; returns how many there were."""
        revoked = self._delete_keys(clinic)
        self._changed(keys=True)
        return revoked


class AccountStore(Accounts):
    """Users, sessions and clinic keys in the SQLite file at ``path`` (created with its tables if
    missing): one connection guarded by a lock, WAL mode."""

    def __init__(self, path: Path, *, hasher: PasswordHasher | None = None) -> None:
        super().__init__(hasher)
        self._lock = threading.Lock()
        self._db = sqlite_file.connect(path, _SCHEMA, synchronous="NORMAL")
        self._data_version = self._version()
        self._checked_at = time.monotonic()
        # when a request was last sent to make the look in a worker thread (``_coherence_due``)
        self._look_sent_at = -_COHERENCE_S

    # -- plumbing -------------------------------------------------------------

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_file.transaction(self._db, self._lock)

    def _fetch(self, sql: str, args: Iterable[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._db.execute(sql, tuple(args)).fetchall())

    def _version(self) -> int:
        with self._lock:
            row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def _coherence_due(self) -> bool:
        """Asked on the event loop (``knows_*``): True for ONE request once the look is due, which
        then goes to a worker thread and makes it; the requests meanwhile answer from memory. (When
        every request took the hop while the look was due, 128 connections queued in the worker
        threads once a second: bench http's p99 went 209 -> 469 ms.)"""
        now = time.monotonic()
        if now - self._checked_at < _COHERENCE_S or now - self._look_sent_at < _COHERENCE_S:
            return False
        self._look_sent_at = now
        return True

    def _coherent(self) -> None:
        """Forget the caches if another connection has committed since we last looked. Not on an
        event loop's thread while a request sent to look (``_coherence_due``) is on its way."""
        now = time.monotonic()
        if now - self._checked_at < _COHERENCE_S:
            return
        if now - self._look_sent_at < _COHERENCE_S and _on_event_loop():
            return
        self._checked_at = now
        version = self._version()
        if version != self._data_version:
            self._data_version = version
            self._drop(sessions=True, keys=True)

    @staticmethod
    def _user(row: tuple[object, ...]) -> User:
        uid, email, name, role, clinic = row[:5]
        return User(str(uid), str(email), str(name), Role(str(role)), None if clinic is None else str(clinic))

    # -- users ----------------------------------------------------------------

    def _insert_user(self, user: User, password_hash: str, created_at: float) -> bool:
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO users (id, email, name, role, clinic, password_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user.id, user.email, user.name, user.role.value, user.clinic, password_hash, created_at),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def _credentials(self, email: str) -> tuple[User, str] | None:
        rows = self._fetch(
            "SELECT id, email, name, role, clinic, password_hash FROM users WHERE email = ?", (email,)
        )
        return (self._user(rows[0]), str(rows[0][5])) if rows else None

    def _replace_hash(self, user_id: str, old: str, new: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?", (new, user_id, old)
            )

    def _set_password(self, user_id: str, password_hash: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def _set_role(self, user: User, role: Role) -> bool:
        with self._tx() as db:
            return bool(
                db.execute(
                    "UPDATE users SET role = ? WHERE id = ? AND role = ? AND clinic IS ?",
                    (role.value, user.id, user.role.value, user.clinic),
                ).rowcount
            )

    def _delete_user(self, user: User) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user.id,))
            return bool(db.execute("DELETE FROM users WHERE id = ?", (user.id,)).rowcount)

    def clinic_users(self, clinic: str) -> list[User]:
        rows = self._fetch(
            "SELECT id, email, name, role, clinic FROM users WHERE clinic = ? AND role IN (?, ?)"
            " ORDER BY created_at, id",
            (clinic, Role.STAFF.value, Role.CLINIC_ADMIN.value),
        )
        return [self._user(r) for r in rows]

    def get(self, user_id: str) -> User | None:
        rows = self._fetch("SELECT id, email, name, role, clinic FROM users WHERE id = ?", (user_id,))
        return self._user(rows[0]) if rows else None

    def get_many(self, user_ids: Iterable[str]) -> dict[str, User]:
        rows = self._users_by_id("id, email, name, role, clinic", user_ids)
        return {str(row[0]): self._user(row) for row in rows}

    def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        return {str(uid): str(name) for uid, name in self._users_by_id("id, name", user_ids)}

    def _users_by_id(self, columns: str, user_ids: Iterable[str]) -> list[tuple[object, ...]]:
        """``columns`` of the users with these ids (each once), in chunks of ``_SQL_CHUNK`` ids."""
        ids = list(dict.fromkeys(user_ids))
        rows: list[tuple[object, ...]] = []
        for i in range(0, len(ids), _SQL_CHUNK):
            chunk = ids[i : i + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows += self._fetch(f"SELECT {columns} FROM users WHERE id IN ({marks})", chunk)
        return rows

    def users(self, role: Role | None = None) -> list[User]:
        cols = "SELECT id, email, name, role, clinic FROM users"
        if role is None:
            rows = self._fetch(cols + " ORDER BY created_at, id")
        else:
            rows = self._fetch(cols + " WHERE role = ? ORDER BY created_at, id", (Role(role).value,))
        return [self._user(r) for r in rows]

    # -- sessions ---------------------------------------------------------------

    def _insert_session(self, sid: str, user_id: str, now: float, expires_at: float) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))  # the expired, on the way
            added = db.execute(
                "INSERT INTO sessions (sid, user_id, created_at, expires_at)"
                " SELECT ?, id, ?, ? FROM users WHERE id = ?",
                (sid, now, expires_at, user_id),
            ).rowcount
        return bool(added)

    def _load_session(self, sid: str) -> Session | None:
        rows = self._fetch(
            "SELECT s.user_id, u.role, u.clinic, s.expires_at FROM sessions s"
            " JOIN users u ON u.id = s.user_id WHERE s.sid = ?",
            (sid,),
        )
        if not rows:
            return None
        uid, role, clinic, expires_at = rows[0]
        return Session(
            sid, str(uid), Role(str(role)), None if clinic is None else str(clinic), float(str(expires_at))
        )

    def _delete_session(self, sid: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE sid = ?", (sid,))

    def _delete_sessions(self, user_id: str) -> int:
        with self._tx() as db:
            return int(db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount)

    # -- clinic API keys --------------------------------------------------------

    def _insert_key(self, digest: str, clinic: str, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO clinic_keys (key_hash, clinic, created_at) VALUES (?, ?, ?)",
                (digest, clinic, now),
            )

    def _load_key(self, digest: str) -> str | None:
        rows = self._fetch("SELECT clinic FROM clinic_keys WHERE key_hash = ?", (digest,))
        return str(rows[0][0]) if rows else None

    def _delete_keys(self, clinic: str) -> int:
        with self._tx() as db:
            return int(db.execute("DELETE FROM clinic_keys WHERE clinic = ?", (clinic,)).rowcount)

    def _key_created(self, clinic: str) -> float | None:
        rows = self._fetch("SELECT MAX(created_at) FROM clinic_keys WHERE clinic = ?", (clinic,))
        return None if not rows or rows[0][0] is None else float(str(rows[0][0]))

    def _replace_keys(self, digest: str, clinic: str, now: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM clinic_keys WHERE clinic = ?", (clinic,))
            db.execute(
                "INSERT INTO clinic_keys (key_hash, clinic, created_at) VALUES (?, ?, ?)",
                (digest, clinic, now),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
