"""Contract tests for the account stores (server.identity.accounts, server.identity.redis_accounts):
every test runs against a real SQLite file and a real redis-server, with real argon2id hashing."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from argon2 import PasswordHasher

from server.identity.accounts import (
    CLINIC_KEY_PREFIX,
    Accounts,
    EmailTaken,
    InvalidAccount,
    Role,
    UnknownAccount,
    User,
)
from server.stores import open_accounts
from tests.support.redis_server import RedisServer
from tests.support.stores import StoreBackend
from tests.support.waiting import eventually_sync

PASSWORD = "correct horse battery"


def cheap_hasher() -> PasswordHasher:
    # Real argon2id, minimal cost: the algorithm under test, minus the deliberate slowness.
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class CountingHasher(PasswordHasher):
    """A real PasswordHasher that also counts verify calls (to show unknown e-mails cost a verify)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verifies = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 - base signature
        self.verifies += 1
        return super().verify(hash, password)


def opened(backend: StoreBackend, hasher: PasswordHasher | None = None) -> Accounts:
    return open_accounts(backend.data_dir, backend.redis_url, hasher=hasher)


@pytest.fixture
def store(backend: StoreBackend) -> Iterator[Accounts]:
    s = opened(backend, cheap_hasher())
    yield s
    s.close()


def test_create_get_and_normalise(store: Accounts) -> None:
    user = store.create_user("  Anna.Svensson@Example.SE ", PASSWORD, " Anna ")
    assert user.email == "anna.svensson@example.se"
    assert user.name == "Anna"
    assert user.role is Role.PATIENT and user.clinic is None
    assert user.id.startswith("u_") and len(user.id) == 2 + 16
    assert store.get(user.id) == user
    assert store.get("u_nobody") is None


def test_ids_are_random(store: Accounts) -> None:
    a = store.create_user("a@example.se", PASSWORD, "A")
    b = store.create_user("b@example.se", PASSWORD, "B")
    assert a.id != b.id


def test_no_plaintext_password_stored(store: Accounts, backend: StoreBackend) -> None:
    store.create_user("p@example.se", PASSWORD, "P")
    written = backend.written()
    assert b"p@example.se" in written  # what we look at really is what the store wrote
    assert PASSWORD.encode() not in written
    assert b"$argon2id$" in written
    store.close()
    after_checkpoint = backend.written()
    assert PASSWORD.encode() not in after_checkpoint
    assert b"$argon2id$" in after_checkpoint


def test_key_names_hold_no_personal_data(store: Accounts, backend: StoreBackend) -> None:
    user = store.create_user("Karin.Lind@Example.se", PASSWORD, "Karin Lind")
    store.open_session(user, expires_at=4_000_000_000)
    store.create_clinic_key("AB-c1")
    names = " ".join(backend.key_names()).lower()
    assert backend.kind == "sqlite" or user.id.lower() in names  # the keys really are the user's
    for personal in ("karin", "lind", "example.se"):
        assert personal not in names


def test_default_hasher_is_argon2id_at_owasps_minimum(backend: StoreBackend) -> None:
    """No ``hasher`` given: argon2id, 19 MiB, 2 passes, 1 lane (server.identity.accounts.PASSWORD_HASHER)."""
    s = opened(backend)
    try:
        u = s.create_user("d@example.se", PASSWORD, "D")
        assert s.authenticate("d@example.se", PASSWORD) == u
        stored = backend.written()
        assert b"$argon2id$v=19$m=19456,t=2,p=1$" in stored
        assert s.authenticate("d@example.se", PASSWORD + "x") is None
    finally:
        s.close()


def test_authenticate(store: Accounts) -> None:
    user = store.create_user("x@example.se", PASSWORD, "X")
    assert store.authenticate("X@Example.se ", PASSWORD) == user
    assert store.authenticate("x@example.se", PASSWORD + "!") is None
    assert store.authenticate("x@example.se", PASSWORD.upper()) is None
    assert store.authenticate("x@example.se", "") is None
    assert store.authenticate("x@example.se", "a" * 100_000) is None
    assert store.authenticate("nobody@example.se", PASSWORD) is None


def test_unknown_email_costs_a_verify_too(backend: StoreBackend) -> None:
    hasher = CountingHasher()
    s = opened(backend, hasher)
    try:
        s.create_user("known@example.se", PASSWORD, "K")
        assert s.authenticate("unknown@example.se", PASSWORD) is None
        assert hasher.verifies == 1
        assert s.authenticate("known@example.se", "wrong password") is None
        assert hasher.verifies == 2
    finally:
        s.close()


def test_duplicate_email_refused(store: Accounts) -> None:
    store.create_user("dup@example.se", PASSWORD, "One")
    with pytest.raises(EmailTaken) as info:
        store.create_user(" DUP@example.SE", "another password", "Two")
    assert "dup@" not in str(info.value).lower()  # personal data stays out of messages
    assert [u.name for u in store.users()] == ["One"]


def test_concurrent_registration_of_one_email(store: Accounts) -> None:
    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def register(i: int) -> None:
        start.wait()
        try:
            store.create_user("race@example.se", PASSWORD, f"R{i}")
            outcome = "ok"
        except EmailTaken:
            outcome = "taken"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["taken"] * 7
    assert len(store.users()) == 1


@pytest.mark.parametrize(
    ("email", "password", "name", "role", "clinic"),
    [
        ("short@example.se", "1234567", "S", Role.PATIENT, None),
        ("long@example.se", "x" * 1025, "L", Role.PATIENT, None),
        ("no-at-sign.example.se", PASSWORD, "N", Role.PATIENT, None),
        ("@example.se", PASSWORD, "N", Role.PATIENT, None),
        ("a@localhost", PASSWORD, "N", Role.PATIENT, None),
        ("a b@example.se", PASSWORD, "N", Role.PATIENT, None),
        ("blank@example.se", PASSWORD, "   ", Role.PATIENT, None),
        ("nul@example.se", PASSWORD, "Anna\x00", Role.PATIENT, None),
        ("crlf@example.se", PASSWORD, "Anna\r\nBcc: x@example.se", Role.PATIENT, None),
        ("bidi@example.se", PASSWORD, "Anna \u202eannA", Role.PATIENT, None),
        ("ctl@example.se\x1b", PASSWORD, "E", Role.PATIENT, None),
        ("staff@example.se", PASSWORD, "S", Role.STAFF, None),
        ("pat@example.se", PASSWORD, "P", Role.PATIENT, "AB-c1"),
    ],
)
def test_invalid_accounts_refused(
    store: Accounts, email: str, password: str, name: str, role: Role, clinic: str | None
) -> None:
    with pytest.raises(InvalidAccount):
        store.create_user(email, password, name, role, clinic)
    assert store.users() == []


def test_minimum_password_length_is_eight(store: Accounts) -> None:
    u = store.create_user("eight@example.se", "12345678", "E")
    assert store.authenticate("eight@example.se", "12345678") == u


def test_roles_and_listing(store: Accounts) -> None:
    p = store.create_user("p@example.se", PASSWORD, "Patient")
    s = store.create_user("s@example.se", PASSWORD, "Staff", Role.STAFF, "AB-c1")
    a = store.create_user("a@example.se", PASSWORD, "Admin", Role.ADMIN)
    assert s.role is Role.STAFF and s.clinic == "AB-c1"
    assert store.users() == [p, s, a]
    assert store.users(Role.STAFF) == [s]
    assert store.users(Role.ADMIN) == [a]
    assert store.get(s.id) == User(s.id, "s@example.se", "Staff", Role.STAFF, "AB-c1")


def test_a_clinics_accounts_their_roles_and_removal(store: Accounts) -> None:
    boss = store.create_user("b@example.se", PASSWORD, "Boss", Role.CLINIC_ADMIN, "AB-c1")
    staff = store.create_user("s@example.se", PASSWORD, "Staff", Role.STAFF, "AB-c1")
    elsewhere = store.create_user("e@example.se", PASSWORD, "Else", Role.STAFF, "AB-c2")
    store.create_user("p@example.se", PASSWORD, "Patient")
    with pytest.raises(InvalidAccount):
        store.create_user("x@example.se", PASSWORD, "X", Role.CLINIC_ADMIN)  # a clinic admin needs a clinic
    assert store.clinic_users("AB-c1") == [boss, staff]
    sid = store.open_session(staff, expires_at=time.time() + 60)
    live = store.session(sid)
    assert live is not None and live.role is Role.STAFF
    promoted = store.set_clinic_role("AB-c1", staff.id, Role.CLINIC_ADMIN)
    assert promoted.role is Role.CLINIC_ADMIN and store.get(staff.id) == promoted
    live = store.session(sid)
    assert live is not None and live.role is Role.CLINIC_ADMIN  # the cached session too
    assert store.users(Role.CLINIC_ADMIN) == [boss, promoted] and store.users(Role.STAFF) == [elsewhere]
    with pytest.raises(UnknownAccount):
        store.set_clinic_role("AB-c1", elsewhere.id, Role.STAFF)  # not this clinic's
    with pytest.raises(InvalidAccount):
        store.set_clinic_role("AB-c1", staff.id, Role.ADMIN)
    store.remove_clinic_user("AB-c1", staff.id)
    assert store.session(sid) is None and store.get(staff.id) is None
    assert store.authenticate("s@example.se", PASSWORD) is None
    with pytest.raises(UnknownAccount):
        store.remove_clinic_user("AB-c1", elsewhere.id)
    assert store.clinic_users("AB-c1") == [boss] and store.get(elsewhere.id) == elsewhere
    # the address is free again
    again = store.create_user("s@example.se", PASSWORD, "Staff", Role.STAFF, "AB-c1")
    assert store.clinic_users("AB-c1") == [boss, again]


def test_rotating_a_clinic_key_ends_the_old_ones(store: Accounts) -> None:
    assert store.clinic_key_created("AB-c1") is None
    old = store.create_clinic_key("AB-c1")
    other = store.create_clinic_key("AB-c2")
    assert store.clinic_for_key(old) == "AB-c1"  # cached: rotating must drop it
    new = store.rotate_clinic_key("AB-c1")
    assert store.clinic_for_key(old) is None and store.clinic_for_key(new) == "AB-c1"
    assert store.clinic_for_key(other) == "AB-c2" and store.clinic_key_created("AB-c1")
    store.revoke_clinic_keys("AB-c1")
    assert store.clinic_key_created("AB-c1") is None and store.clinic_for_key(new) is None


def test_names(store: Accounts) -> None:
    a = store.create_user("a@example.se", PASSWORD, "Anna")
    b = store.create_user("b@example.se", PASSWORD, "Bo")
    unknown = [f"u_missing{i}" for i in range(1200)]  # more than one SQL chunk
    assert store.names([a.id, b.id, a.id, *unknown]) == {a.id: "Anna", b.id: "Bo"}
    assert store.names([]) == {}


def test_get_many(store: Accounts) -> None:
    a = store.create_user("a@example.se", PASSWORD, "Anna")
    b = store.create_user("b@example.se", PASSWORD, "Bo")
    unknown = [f"u_missing{i}" for i in range(1200)]  # more than one SQL chunk
    assert store.get_many(iter([b.id, *unknown, a.id, b.id])) == {a.id: a, b.id: b}
    assert store.get_many([]) == {}


def test_survives_reopen(backend: StoreBackend) -> None:
    s = opened(backend, cheap_hasher())
    u = s.create_user("keep@example.se", PASSWORD, "K")
    key = s.create_clinic_key("M-c9")
    s.close()
    again = opened(backend, cheap_hasher())
    try:
        assert again.authenticate("keep@example.se", PASSWORD) == u
        assert again.clinic_for_key(key) == "M-c9"
    finally:
        again.close()


def test_hash_upgraded_when_parameters_rise(backend: StoreBackend) -> None:
    weak = opened(backend, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    u = weak.create_user("up@example.se", PASSWORD, "U")
    weak.close()
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    s = opened(backend, stronger)
    try:
        assert s.authenticate("up@example.se", PASSWORD) == u
        assert b"$argon2id$v=19$m=16,t=2,p=1$" in backend.written()
        assert s.authenticate("up@example.se", PASSWORD) == u
    finally:
        s.close()


def test_clinic_key_shown_once_and_only_hash_stored(store: Accounts, backend: StoreBackend) -> None:
    key = store.create_clinic_key("AB-c1")
    assert key.startswith(CLINIC_KEY_PREFIX)
    assert len(key) == len(CLINIC_KEY_PREFIX) + 43  # 32 bytes, urlsafe base64, unpadded
    written = backend.written()
    assert key.encode() not in written
    assert key[len(CLINIC_KEY_PREFIX) :].encode() not in written
    assert hashlib.sha256(key.encode()).hexdigest().encode() in written
    assert store.clinic_for_key(key) == "AB-c1"
    assert store.create_clinic_key("AB-c1") != key


def test_clinic_key_lookup_refuses_near_misses(store: Accounts) -> None:
    key = store.create_clinic_key("AB-c1")
    assert store.clinic_for_key(key[:-1]) is None
    assert store.clinic_for_key(key + "x") is None
    assert store.clinic_for_key(key[len(CLINIC_KEY_PREFIX) :]) is None
    assert store.clinic_for_key(hashlib.sha256(key.encode()).hexdigest()) is None
    assert store.clinic_for_key(CLINIC_KEY_PREFIX + "a" * 10_000) is None
    assert store.clinic_for_key("") is None


def test_revoke_clinic_keys(store: Accounts) -> None:
    k1 = store.create_clinic_key("AB-c1")
    k2 = store.create_clinic_key("AB-c1")
    other = store.create_clinic_key("O-c2")
    assert store.revoke_clinic_keys("AB-c1") == 2
    assert store.clinic_for_key(k1) is None
    assert store.clinic_for_key(k2) is None
    assert store.clinic_for_key(other) == "O-c2"
    assert store.revoke_clinic_keys("AB-c1") == 0
    fresh = store.create_clinic_key("AB-c1")
    assert store.clinic_for_key(fresh) == "AB-c1"


def test_clinic_key_needs_a_clinic(store: Accounts) -> None:
    with pytest.raises(InvalidAccount):
        store.create_clinic_key("")


def test_sessions_end_everywhere(backend: StoreBackend) -> None:
    """Two stores on one backend (two processes, or two nodes): what one ends, the other refuses,
    though it had the session (and the key) in memory."""
    here, there = opened(backend, cheap_hasher()), opened(backend, cheap_hasher())
    try:
        user = here.create_user("two@example.se", PASSWORD, "Two")
        one, two = here.open_session(user, 4_000_000_000), here.open_session(user, 4_000_000_000)
        key = here.create_clinic_key("AB-c1")
        assert there.session(one) is not None and there.session(two) is not None
        assert there.clinic_for_key(key) == "AB-c1"
        here.end_session(one)
        eventually_sync(lambda: there.session(one) is None, what="the ended session refused there")
        assert there.session(two) is not None
        assert here.change_password(user.id, PASSWORD, "a new password") == user
        eventually_sync(lambda: there.session(two) is None, what="every session ended by the password")
        three = there.open_session(user, 4_000_000_000)
        assert here.session(three) is not None
        assert there.end_sessions(user.id) == 1
        eventually_sync(lambda: here.session(three) is None, what="end_sessions seen here")
        assert here.revoke_clinic_keys("AB-c1") == 1
        eventually_sync(lambda: there.clinic_for_key(key) is None, what="the revoked key refused there")
    finally:
        here.close()
        there.close()


def test_sessions_of_unknown_users_and_expiry(store: Accounts) -> None:
    user = store.create_user("exp@example.se", PASSWORD, "E")
    ghost = User("u_ghost", "ghost@example.se", "G", Role.PATIENT, None)
    assert store.session(store.open_session(ghost, 4_000_000_000)) is None
    assert store.session(store.open_session(user, 1_000)) is None  # expired long ago
    live = store.open_session(user, 4_000_000_000)
    found = store.session(live)
    assert found is not None and (found.user_id, found.role, found.clinic) == (user.id, Role.PATIENT, None)
    assert store.session("no-such-sid") is None


def test_a_node_that_missed_notices_forgets_what_it_cached(redis_server: RedisServer) -> None:
    """Redis restarted (SIGKILL, AOF reload): the subscription breaks, and a store drops everything
    it cached when it subscribes again, so a sign-out it could not hear is still seen."""
    here = open_accounts(Path("unused"), redis_server.url, hasher=cheap_hasher())
    there = open_accounts(Path("unused"), redis_server.url, hasher=cheap_hasher())
    try:
        user = here.create_user("gap@example.se", PASSWORD, "Gap")
        sid = here.open_session(user, 4_000_000_000)
        assert there.session(sid) is not None  # cached there
        redis_server.kill()
        redis_server.start()
        # ended behind the notices' back (as if the notice was published while `there` was away)
        client = redis.Redis.from_url(redis_server.url)
        client.delete(f"tandtid:{{accounts}}:session:{sid}")
        client.close()
        eventually_sync(lambda: there.session(sid) is None, what="the cache dropped after the gap")
    finally:
        here.close()
        there.close()
