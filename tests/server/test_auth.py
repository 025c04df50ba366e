"""Tests of server.identity.auth: real PyJWT tokens, real Starlette Request/WebSocket objects built
from ASGI scopes, and a tiny inline app driven through Starlette's in-process client; the account
store under them is each of the real ones (a SQLite file, a real redis-server)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from jwt.warnings import InsecureKeyLengthWarning
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from server.identity.accounts import Accounts, AccountStore, Role, User
from server.identity.auth import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    AuthError,
    LoadIdentityOffLoop,
    Principal,
    SessionSigner,
    clear_session,
    csrf_ok,
    csrf_token_for,
    principal_from,
    require,
    set_session,
    start_session,
)
from server.stores import open_accounts
from tests.support.stores import StoreBackend
from tests.support.waiting import eventually, eventually_sync

SECRET = b"s" * 32
PASSWORD = "correct horse battery"
SID = "session-1"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(sign(head.encode()))


def claims_for(user: User, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": user.id,
        "sid": SID,
        "role": user.role.value,
        "clinic": user.clinic,
        "iat": now,
        "exp": now + 3600,
        "typ": "session",
    }
    base.update(over)
    return base


@pytest.fixture
def accounts(backend: StoreBackend) -> Iterator[Accounts]:
    s = open_accounts(
        backend.data_dir, backend.redis_url, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    yield s
    s.close()


@pytest.fixture
def signer() -> SessionSigner:
    return SessionSigner(SECRET, ttl_s=3600)


@pytest.fixture
def app(accounts: Accounts, signer: SessionSigner) -> Starlette:
    a = Starlette()
    a.state.accounts = accounts
    a.state.signer = signer
    return a


@pytest.fixture
def patient(accounts: Accounts) -> User:
    return accounts.create_user("patient@example.se", PASSWORD, "P")


def conn(
    app: Starlette,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    kind: str = "http",
) -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    scope: dict[str, Any] = {
        "type": kind,
        "app": app,
        "path": "/",
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "scheme": "http",
        "server": ("testserver", 80),
    }
    if kind == "http":
        scope["method"] = method
        return Request(scope)

    async def receive() -> dict[str, Any]:
        raise AssertionError("not used")

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("not used")

    return WebSocket(scope, receive, send)


# -- SessionSigner -------------------------------------------------------------------------


def test_roundtrip(signer: SessionSigner, patient: User) -> None:
    token = signer.issue(patient, SID, now=1_900_000_000)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    fresh = signer.issue(patient, SID)
    claims = signer.verify(fresh)
    assert claims is not None
    assert claims["sub"] == patient.id and claims["role"] == "patient" and claims["clinic"] is None
    assert claims["typ"] == "session"
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 3600


def test_no_personal_data_in_token(signer: SessionSigner, patient: User) -> None:
    payload = jwt.decode(signer.issue(patient, SID), options={"verify_signature": False})
    assert "patient@example.se" not in json.dumps(payload)
    assert set(payload) == {"sub", "sid", "role", "clinic", "iat", "exp", "typ"}


def test_expired(signer: SessionSigner, patient: User) -> None:
    assert signer.verify(signer.issue(patient, SID, now=time.time() - 3600 - 60)) is None
    assert signer.verify(signer.issue(patient, SID, now=time.time() - 60)) is not None


def test_tampered_signature(signer: SessionSigner, patient: User) -> None:
    token = signer.issue(patient, SID)
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] ^= 1
    assert signer.verify(f"{head}.{payload}.{b64(bytes(raw))}") is None


def test_tampered_payload(signer: SessionSigner, patient: User) -> None:
    head, _, sig = signer.issue(patient, SID).split(".")
    forged = b64(json.dumps(claims_for(patient, role="admin")).encode())
    assert signer.verify(f"{head}.{forged}.{sig}") is None


def test_alg_none_refused(signer: SessionSigner, patient: User) -> None:
    unsigned = handmade({"alg": "none", "typ": "JWT"}, claims_for(patient), lambda _: b"")
    assert signer.verify(unsigned) is None
    assert signer.verify(unsigned.rstrip(".") + ".") is None
    via_pyjwt = jwt.encode(claims_for(patient), None, algorithm="none")
    assert signer.verify(via_pyjwt) is None


def test_other_secret_refused(signer: SessionSigner, patient: User) -> None:
    other = SessionSigner(b"o" * 32, ttl_s=3600)
    assert signer.verify(other.issue(patient, SID)) is None
    # ...and the raw secret used directly (not the derived key) is refused too
    assert signer.verify(jwt.encode(claims_for(patient), SECRET, algorithm="HS256")) is None


def test_same_secret_same_key(patient: User) -> None:
    # Restarts keep everybody signed in: two signers from one secret agree.
    assert SessionSigner(SECRET).verify(SessionSigner(SECRET).issue(patient, SID)) is not None


def test_hs512_with_the_right_key_refused(signer: SessionSigner, patient: User) -> None:
    key = signer._key  # the strongest attacker: knows the key, picks another algorithm
    assert signer.verify(jwt.encode(claims_for(patient), key, algorithm="HS256")) is not None
    for alg in ("HS384", "HS512"):
        with warnings.catch_warnings():  # PyJWT warns that 32 bytes is short for SHA-384/512
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            token = jwt.encode(claims_for(patient), key, algorithm=alg)
        assert jwt.get_unverified_header(token)["alg"] == alg
        assert signer.verify(token) is None


def test_rs256_header_refused(signer: SessionSigner, patient: User) -> None:
    key = signer._key

    def hmac_sha256(msg: bytes) -> bytes:
        return hmac.new(key, msg, hashlib.sha256).digest()

    assert (
        signer.verify(handmade({"alg": "HS256", "typ": "JWT"}, claims_for(patient), hmac_sha256)) is not None
    )
    for alg in ("RS256", "ES256", "PS256", "EdDSA"):
        assert signer.verify(handmade({"alg": alg, "typ": "JWT"}, claims_for(patient), hmac_sha256)) is None


def test_wrong_typ_or_missing_claims_refused(signer: SessionSigner, patient: User) -> None:
    key = signer._key
    assert signer.verify(jwt.encode(claims_for(patient, typ="reset"), key, algorithm="HS256")) is None
    for missing in ("sub", "exp", "iat", "typ"):
        c = claims_for(patient)
        del c[missing]
        assert signer.verify(jwt.encode(c, key, algorithm="HS256")) is None, missing
    assert signer.verify(jwt.encode(claims_for(patient, sub=123), key, algorithm="HS256")) is None


@pytest.mark.parametrize("garbage", ["", "x", "a.b.c", "..", "Bearer x", "é.é.é", "a" * 10_000])
def test_garbage_refused(signer: SessionSigner, garbage: str) -> None:
    assert signer.verify(garbage) is None


def test_weak_secret_refused() -> None:
    with pytest.raises(ValueError):
        SessionSigner(b"short")
    with pytest.raises(ValueError):
        SessionSigner(SECRET, ttl_s=0)


# -- principal_from ------------------------------------------------------------------------


def test_no_credentials(app: Starlette) -> None:
    assert principal_from(conn(app)) is None


def test_bearer_session(app: Starlette, signer: SessionSigner, patient: User, accounts: Accounts) -> None:
    p = principal_from(
        conn(app, headers={"Authorization": "Bearer " + start_session(accounts, signer, patient)})
    )
    assert p == Principal(patient.id, Role.PATIENT, None, "bearer")
    p = principal_from(
        conn(app, headers={"Authorization": "bearer  " + start_session(accounts, signer, patient)})
    )
    assert p is not None and p.via == "bearer"


def test_bearer_clinic_key(app: Starlette, accounts: Accounts) -> None:
    key = accounts.create_clinic_key("AB-c1")
    p = principal_from(conn(app, headers={"Authorization": f"Bearer {key}"}))
    assert p == Principal(None, "clinic", "AB-c1", "clinic_key")
    accounts.revoke_clinic_keys("AB-c1")
    assert principal_from(conn(app, headers={"Authorization": f"Bearer {key}"})) is None


def test_cookie_session(app: Starlette, signer: SessionSigner, accounts: Accounts) -> None:
    staff = accounts.create_user("staff@example.se", PASSWORD, "S", Role.STAFF, "O-c7")
    p = principal_from(conn(app, cookies={SESSION_COOKIE: start_session(accounts, signer, staff)}))
    assert p == Principal(staff.id, Role.STAFF, "O-c7", "cookie")


def test_bad_bearer_does_not_fall_back_to_cookie(
    app: Starlette, signer: SessionSigner, patient: User, accounts: Accounts
) -> None:
    good_cookie = {SESSION_COOKIE: start_session(accounts, signer, patient)}
    for header in ("Bearer nonsense", "Bearer tt_live_nonsense", "Basic dXNlcjpwYXNz", "Bearer", "Bearer  "):
        assert principal_from(conn(app, headers={"Authorization": header}, cookies=good_cookie)) is None, (
            header
        )


def test_forged_or_expired_cookie(app: Starlette, signer: SessionSigner, patient: User) -> None:
    other = SessionSigner(b"o" * 32)
    assert principal_from(conn(app, cookies={SESSION_COOKIE: other.issue(patient, SID)})) is None
    stale = signer.issue(patient, SID, now=time.time() - 7200)
    assert principal_from(conn(app, cookies={SESSION_COOKIE: stale})) is None


def test_user_must_still_exist(
    app: Starlette, signer: SessionSigner, tmp_path: Path, accounts: Accounts
) -> None:
    elsewhere = AccountStore(
        tmp_path / "other.sqlite3", hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    try:
        ghost = elsewhere.create_user("ghost@example.se", PASSWORD, "G")
    finally:
        elsewhere.close()
    assert (
        principal_from(
            conn(app, headers={"Authorization": "Bearer " + start_session(accounts, signer, ghost)})
        )
        is None
    )
    assert principal_from(conn(app, cookies={SESSION_COOKIE: start_session(accounts, signer, ghost)})) is None


def test_role_comes_from_the_store_not_the_token(
    app: Starlette, signer: SessionSigner, patient: User, accounts: Accounts
) -> None:
    # Even a validly signed token claiming admin yields the stored role.
    sid = jwt.decode(start_session(accounts, signer, patient), options={"verify_signature": False})["sid"]
    claimed_admin = jwt.encode(claims_for(patient, role="admin", sid=sid), signer._key, algorithm="HS256")
    p = principal_from(conn(app, headers={"Authorization": "Bearer " + claimed_admin}))
    assert p is not None and p.role is Role.PATIENT


def test_websocket_cookie(app: Starlette, signer: SessionSigner, patient: User, accounts: Accounts) -> None:
    ws = conn(app, cookies={SESSION_COOKIE: start_session(accounts, signer, patient)}, kind="websocket")
    assert isinstance(ws, WebSocket)
    assert principal_from(ws) == Principal(patient.id, Role.PATIENT, None, "cookie")


# -- CSRF ----------------------------------------------------------------------------------


def cookie_principal(user: User) -> Principal:
    return Principal(user.id, user.role, user.clinic, "cookie")


def test_csrf_safe_methods_pass(app: Starlette, patient: User) -> None:
    for method in ("GET", "HEAD", "OPTIONS"):
        assert csrf_ok(conn(app, method=method), cookie_principal(patient))  # type: ignore[arg-type]


def test_csrf_not_needed_for_bearer_or_key(app: Starlette, patient: User) -> None:
    req = conn(app, method="POST")
    assert csrf_ok(req, Principal(patient.id, Role.PATIENT, None, "bearer"))  # type: ignore[arg-type]
    assert csrf_ok(req, Principal(None, "clinic", "AB-c1", "clinic_key"))  # type: ignore[arg-type]


def test_csrf_cookie_writes(app: Starlette, signer: SessionSigner, patient: User, accounts: Accounts) -> None:
    token = start_session(accounts, signer, patient)
    csrf = csrf_token_for(token)
    me = cookie_principal(patient)
    jar = {SESSION_COOKIE: token, CSRF_COOKIE: csrf}

    def ok(method: str, headers: dict[str, str], cookies: dict[str, str]) -> bool:
        return csrf_ok(conn(app, method=method, headers=headers, cookies=cookies), me)  # type: ignore[arg-type]

    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert ok(method, {CSRF_HEADER: csrf}, jar)
        assert not ok(method, {}, jar)
    assert not ok("POST", {CSRF_HEADER: csrf + "x"}, jar)
    assert not ok("POST", {CSRF_HEADER: ""}, {SESSION_COOKIE: token, CSRF_COOKIE: ""})
    assert not ok("POST", {CSRF_HEADER: csrf}, {SESSION_COOKIE: token})
    # A planted csrf cookie (e.g. from a sibling subdomain) that the attacker also sends as header:
    planted = "attacker-chosen-value"
    assert not ok("POST", {CSRF_HEADER: planted}, {SESSION_COOKIE: token, CSRF_COOKIE: planted})
    # The csrf value of another session does not fit this one.
    other = csrf_token_for(start_session(accounts, signer, patient))
    assert not ok("POST", {CSRF_HEADER: other}, {SESSION_COOKIE: token, CSRF_COOKIE: other})


# -- cookies -------------------------------------------------------------------------------


def set_cookies(response: Response) -> dict[str, str]:
    out = {}
    for name, value in response.raw_headers:
        if name == b"set-cookie":
            line = value.decode()
            out[line.split("=", 1)[0]] = line
    return out


def test_set_session_cookie_attributes(signer: SessionSigner, patient: User) -> None:
    token = signer.issue(patient, SID)
    resp = Response()
    set_session(resp, token, secure=True)
    cookies = set_cookies(resp)
    session, csrf = cookies[SESSION_COOKIE].lower(), cookies[CSRF_COOKIE].lower()
    assert "httponly" in session and "samesite=lax" in session and "secure" in session and "path=/" in session
    assert "httponly" not in csrf and "samesite=lax" in csrf and "secure" in csrf
    parsed = SimpleCookie(cookies[SESSION_COOKIE])
    assert parsed[SESSION_COOKIE].value == token
    assert 3590 <= int(parsed[SESSION_COOKIE]["max-age"]) <= 3600
    assert SimpleCookie(cookies[CSRF_COOKIE])[CSRF_COOKIE].value == csrf_token_for(token)

    plain = Response()
    set_session(plain, token, secure=False, max_age=60)
    line = set_cookies(plain)[SESSION_COOKIE].lower()
    assert "secure" not in line and "max-age=60" in line


def test_clear_session() -> None:
    resp = Response()
    clear_session(resp)
    cookies = set_cookies(resp)
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        assert "max-age=0" in cookies[name].lower()


# -- require -------------------------------------------------------------------------------


def test_require() -> None:
    staff = Principal("u_s", Role.STAFF, "AB-c1", "cookie")
    admin = Principal("u_a", Role.ADMIN, None, "bearer")
    key = Principal(None, "clinic", "AB-c1", "clinic_key")
    patient = Principal("u_p", Role.PATIENT, None, "cookie")

    with pytest.raises(AuthError) as info:
        require(None)
    assert (info.value.code, info.value.status) == ("UNAUTHENTICATED", 401)
    assert require(patient) is patient
    assert require(staff, Role.STAFF, "clinic", Role.ADMIN, clinic="AB-c1") is staff
    assert require(key, Role.STAFF, "clinic", Role.ADMIN, clinic="AB-c1") is key
    assert require(admin, Role.STAFF, "clinic", Role.ADMIN, clinic="O-c2") is admin
    for who, clinic in ((staff, "O-c2"), (key, "O-c2"), (patient, None)):
        with pytest.raises(AuthError) as info:
            require(who, Role.STAFF, "clinic", Role.ADMIN, clinic=clinic)
        assert (info.value.code, info.value.status) == ("FORBIDDEN", 403)
    with pytest.raises(AuthError):
        require(patient, Role.ADMIN)


# -- the whole flow through a tiny inline app -----------------------------------------------


async def test_login_then_cookie_write_needs_csrf(
    accounts: Accounts, signer: SessionSigner, patient: User
) -> None:
    async def login(request: Request) -> Response:
        body = await request.json()
        user = request.app.state.accounts.authenticate(body["email"], body["password"])
        if user is None:
            return JSONResponse({"error": {"code": "UNAUTHENTICATED"}}, status_code=401)
        token = start_session(request.app.state.accounts, request.app.state.signer, user)
        resp = JSONResponse({"token": token})
        set_session(resp, token, secure=False)
        return resp

    async def write(request: Request) -> Response:
        try:
            who = require(principal_from(request))
        except AuthError as e:
            return JSONResponse({"error": {"code": e.code}}, status_code=e.status)
        if not csrf_ok(request, who):
            return JSONResponse({"error": {"code": "CSRF"}}, status_code=403)
        return JSONResponse({"user": who.user_id, "via": who.via})

    async def logout(request: Request) -> Response:
        claims = request.app.state.signer.verify(request.cookies.get(SESSION_COOKIE, ""))
        if claims is not None:
            request.app.state.accounts.end_session(claims["sid"])
        resp = JSONResponse({})
        clear_session(resp)
        return resp

    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/write", write, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
        ]
    )
    app.state.accounts = accounts
    app.state.signer = signer
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.post("/write")).status_code == 401
        wrong = {"email": "patient@example.se", "password": "wrong pw!"}
        assert (await client.post("/login", json=wrong)).status_code == 401
        r = await client.post("/login", json={"email": "patient@example.se", "password": PASSWORD})
        assert r.status_code == 200
        token = r.json()["token"]
        assert (await client.post("/write")).json() == {"error": {"code": "CSRF"}}
        csrf = client.cookies[CSRF_COOKIE]
        r = await client.post("/write", headers={CSRF_HEADER: csrf})
        assert r.json() == {"user": patient.id, "via": "cookie"}
        await client.post("/logout", headers={CSRF_HEADER: csrf})
        assert SESSION_COOKIE not in client.cookies
        assert (await client.post("/write", headers={CSRF_HEADER: csrf})).status_code == 401
        # signing out ended the session itself: its token is refused however it is sent
        bearer = await client.post("/write", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 401


# -- sessions that end ---------------------------------------------------------------------


def test_a_session_ends_server_side(
    app: Starlette, signer: SessionSigner, accounts: Accounts, patient: User
) -> None:
    token = start_session(accounts, signer, patient)
    other = start_session(accounts, signer, patient)
    header = {"Authorization": "Bearer " + token}
    assert principal_from(conn(app, headers=header)) is not None
    claims = signer.verify(token)
    assert claims is not None
    accounts.end_session(claims["sid"])
    assert principal_from(conn(app, headers=header)) is None
    assert principal_from(conn(app, cookies={SESSION_COOKIE: token})) is None
    assert principal_from(conn(app, headers={"Authorization": "Bearer " + other})) is not None
    assert accounts.end_sessions(patient.id) == 1
    assert principal_from(conn(app, headers={"Authorization": "Bearer " + other})) is None


def test_a_token_without_a_recorded_session_is_refused(
    app: Starlette, signer: SessionSigner, patient: User
) -> None:
    assert (
        principal_from(conn(app, headers={"Authorization": "Bearer " + signer.issue(patient, SID)})) is None
    )


def test_sessions_ended_by_another_process_are_seen(
    app: Starlette, signer: SessionSigner, accounts: Accounts, patient: User, backend: StoreBackend
) -> None:
    token = start_session(accounts, signer, patient)
    header = {"Authorization": "Bearer " + token}
    assert principal_from(conn(app, headers=header)) is not None  # now cached
    elsewhere = open_accounts(
        backend.data_dir, backend.redis_url, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    try:
        assert elsewhere.end_sessions(patient.id) == 1
    finally:
        elsewhere.close()
    if isinstance(accounts, AccountStore):
        accounts._checked_at -= 2  # the cache asks SQLite at most once a second; pretend a second passed
    # (the Redis store hears the other's notice on its channel)
    eventually_sync(lambda: principal_from(conn(app, headers=header)) is None, what="the session refused")


def test_a_verified_token_is_remembered_but_still_expires(signer: SessionSigner, patient: User) -> None:
    token = signer.issue(patient, SID)
    claims = signer.verify(token)
    assert claims is not None
    assert signer.verify(token) is claims  # verified once: the signature is not checked per request
    assert signer.verify(token, now=claims["exp"] + 1) is None  # a remembered token expires all the same
    assert signer.verify(token[:-2] + ("AA" if not token.endswith("AA") else "BB")) is None


# -- LoadIdentityOffLoop: the store read in a worker thread ------------------------------------


class StoreReads:
    """Counts the account store's reads behind a principal (sessions, keys, and the SQLite store's
    look whether another process wrote) and how many ran on an event loop; each is passed on to
    the real store."""

    def __init__(self, accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.on_loop = 0
        for name in ("_load_session", "_load_key", "_version"):
            real = getattr(accounts, name, None)
            if real is not None:
                monkeypatch.setattr(accounts, name, self._counted(real))

    def _counted(self, real: Any) -> Any:
        def read(*args: Any) -> Any:
            self.count += 1
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                self.on_loop += 1
            return real(*args)

        return read


def who_app(accounts: Accounts, signer: SessionSigner) -> Starlette:
    """A route that answers who is calling, behind the product's LoadIdentityOffLoop."""

    async def who(request: Request) -> Response:
        principal = principal_from(request)
        if principal is None:
            return JSONResponse(None, status_code=401)
        return JSONResponse(
            {"user": principal.user_id, "role": str(principal.role), "clinic": principal.clinic}
        )

    a = Starlette(routes=[Route("/who", who)], middleware=[Middleware(LoadIdentityOffLoop)])
    a.state.accounts = accounts
    a.state.signer = signer
    return a


async def test_a_role_changed_or_a_session_ended_elsewhere_is_read_off_the_loop(
    signer: SessionSigner, accounts: Accounts, backend: StoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (the admin CLI, another node) changes the account: the next request sees it,
    and every store read behind that (for SQLite also its once-a-second look at whether another
    process wrote) happens in a worker thread, not on the event loop."""
    staff = accounts.create_user("staff@example.se", PASSWORD, "S", Role.STAFF, "AB-c1")
    header = {"Authorization": "Bearer " + start_session(accounts, signer, staff)}
    transport = httpx.ASGITransport(app=who_app(accounts, signer))
    async with httpx.AsyncClient(transport=transport, base_url="http://tandtid") as client:

        async def who() -> Any:
            r = await client.get("/who", headers=header)
            return r.json() if r.status_code == 200 else r.status_code

        assert (await who())["role"] == "staff"
        reads = StoreReads(accounts, monkeypatch)
        elsewhere = open_accounts(
            backend.data_dir,
            backend.redis_url,
            hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
        )
        try:
            elsewhere.set_clinic_role("AB-c1", staff.id, Role.CLINIC_ADMIN)
            if isinstance(accounts, AccountStore):
                accounts._checked_at -= 2  # the once-a-second look is due (the Redis store hears a notice)

            async def promoted() -> bool:
                answer = await who()
                return answer != 401 and answer["role"] == "clinic_admin"

            await eventually(promoted, what="the new role")
            assert elsewhere.end_sessions(staff.id) == 1
            if isinstance(accounts, AccountStore):
                accounts._checked_at -= 2

            async def refused() -> bool:
                return (await who()) == 401

            await eventually(refused, what="the ended session refused")
        finally:
            elsewhere.close()
    assert reads.count >= 2 and reads.on_loop == 0, (reads.count, reads.on_loop)
