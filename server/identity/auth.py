"""Who is calling: session JWTs, the session + CSRF cookies, clinic API keys, role checks.

Three ways in, tried in this order by :func:`principal_from`:

1. ``Authorization: Bearer <session JWT>``  -> the user, ``via="bearer"`` (API clients; no CSRF)
2. ``Authorization: Bearer tt_live_…``      -> the clinic, ``via="clinic_key"`` (no CSRF)
3. cookie ``tandtid_session``               -> the user, ``via="cookie"`` (writes need CSRF)

A request that sends an ``Authorization`` header which is neither is *not* let fall back to
the cookie: an explicit, bad credential is a 401, never a silent switch of identity.

A session token names a server-side session (claim ``sid``): signing out or changing the
password ends it, and the token stops working at once. Role and clinic come from that
session's record in the account store (kept in memory there, see
:meth:`~server.identity.accounts.Accounts.session`), never from the token's claims; the
token only proves who signed in, when, and which session it is.

CSRF is double-submit, bound to the session: the readable ``tandtid_csrf`` cookie is a
one-way digest of the session token, so a cookie planted by a sibling subdomain cannot match.

Errors::

    TandtidError
     └── AuthError   code UNAUTHENTICATED (401) | FORBIDDEN (403) | CSRF (403)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.errors import TandtidError
from server.identity.accounts import CLINIC_KEY_PREFIX, Accounts, Role, User

SESSION_COOKIE = "tandtid_session"
CSRF_COOKIE = "tandtid_csrf"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_TYPE = "session"
MIN_SECRET = 16
_ALGORITHM = "HS256"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_MAX_TOKEN = 4096
_VERIFIED_MAX = 100_000  # verified tokens remembered (a few hundred bytes each)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str | None
    role: Role | Literal["clinic"]
    clinic: str | None
    via: Literal["cookie", "bearer", "clinic_key"]


class AuthError(TandtidError):
    """Not signed in (401), not allowed (403), or a cookie write without its CSRF token (403)."""

    def __init__(self, code: Literal["UNAUTHENTICATED", "FORBIDDEN", "CSRF"], message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = 401 if code == "UNAUTHENTICATED" else 403


class SessionSigner:
    """Issues and verifies session JWTs (HS256 only; ``alg`` from the token is never trusted).

    The signing key is derived from ``secret`` for this one purpose, so the same secret can
    key other things without a token of one kind passing as another.
    """

    def __init__(self, secret: bytes, ttl_s: int = 7 * 24 * 3600) -> None:
        if len(secret) < MIN_SECRET:
            raise ValueError(f"session secret must be at least {MIN_SECRET} bytes")
        if ttl_s <= 0:
            raise ValueError("session ttl must be positive")
        self._key = hmac.new(secret, b"tandtid/session-jwt/v1", hashlib.sha256).digest()
        self.ttl_s = ttl_s
        self._verified: dict[str, dict[str, Any]] = {}  # token -> its claims, oldest first

    def issue(self, user: User, sid: str, now: float | None = None) -> str:
        """A token for session ``sid`` of ``user`` (see :func:`start_session`, which records one)."""
        iat = int(time.time() if now is None else now)
        claims = {
            "sub": user.id,
            "sid": sid,
            "role": user.role.value,
            "clinic": user.clinic,
            "iat": iat,
            "exp": iat + self.ttl_s,
            "typ": TOKEN_TYPE,
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verify(self, token: str, now: float | None = None) -> dict[str, Any] | None:
        """The claims of a valid, unexpired session token; None for anything else.

        A token is verified once (PyJWT's decode costs ten times the HMAC) and then remembered by
        its exact string, which the signature covered; a remembered token still expires.
        """
        now = time.time() if now is None else now
        known = self._verified.get(token)
        if known is not None:
            return known if known["exp"] > now else None
        if not token or len(token) > _MAX_TOKEN:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"require": ["sub", "sid", "iat", "exp", "typ"]},
            )
        except jwt.InvalidTokenError:
            return None
        if claims.get("typ") != TOKEN_TYPE or not isinstance(claims.get("exp"), int):
            return None
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("sid"), str):
            return None
        self._verified[token] = claims
        while len(self._verified) > _VERIFIED_MAX:
            del self._verified[next(iter(self._verified))]
        return claims if claims["exp"] > now else None


def start_session(accounts: Accounts, signer: SessionSigner, user: User) -> str:
    """Record a new session of ``user`` and return its signed token (set it with :func:`set_session`)."""
    now = time.time()
    sid = accounts.open_session(user, expires_at=int(now) + signer.ttl_s)
    return signer.issue(user, sid, now=now)


def csrf_token_for(session_token: str) -> str:
    """The CSRF value that goes with a session token (one-way: it does not reveal the session)."""
    digest = hashlib.sha256(b"tandtid/csrf/v1:" + session_token.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def set_session(response: Response, token: str, *, secure: bool, max_age: int | None = None) -> None:
    """Set the HttpOnly session cookie and its readable CSRF cookie on ``response``.

    ``max_age`` defaults to the token's remaining lifetime.
    """
    if max_age is None:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        max_age = max(0, int(exp - time.time())) if isinstance(exp, int | float) else None
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, path="/", secure=secure, httponly=True, samesite="lax"
    )
    response.set_cookie(
        CSRF_COOKIE,
        csrf_token_for(token),
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=False,
        samesite="lax",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    response.delete_cookie(CSRF_COOKIE, path="/", httponly=False, samesite="lax")


def _user_principal(
    accounts: Accounts, claims: dict[str, Any] | None, via: Literal["cookie", "bearer"]
) -> Principal | None:
    if claims is None:
        return None
    session = accounts.session(claims["sid"])
    if session is None or session.user_id != claims["sub"]:
        return None
    return Principal(session.user_id, session.role, session.clinic, via)


def session_claims(conn: HTTPConnection) -> dict[str, Any] | None:
    """The verified claims of the session token this request carries (bearer, else cookie), or None.

    Says nothing about whether the session is still live; :func:`principal_from` does.
    """
    signer: SessionSigner = conn.app.state.signer
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, credential = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return signer.verify(credential.strip())
    return signer.verify(conn.cookies.get(SESSION_COOKIE, ""))


def principal_from(conn: HTTPConnection) -> Principal | None:
    """Who sent this request or WebSocket handshake, or None (the caller answers 401).

    Needs ``conn.app.state.signer`` and ``conn.app.state.accounts``.
    """
    signer: SessionSigner = conn.app.state.signer
    accounts: Accounts = conn.app.state.accounts
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return None
        if credential.startswith(CLINIC_KEY_PREFIX):
            clinic = accounts.clinic_for_key(credential)
            return Principal(None, "clinic", clinic, "clinic_key") if clinic else None
        return _user_principal(accounts, signer.verify(credential), "bearer")
    cookie = conn.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    return _user_principal(accounts, signer.verify(cookie), "cookie")


@dataclass(frozen=True, slots=True)
class SignedInPatient:
    user_id: str  # opaque
    session: str  # the session id: when it ends (sign-out, password change), so do its sockets


def patient_of(conn: HTTPConnection) -> SignedInPatient | None:
    """The signed-in patient of a handshake (anonymous, staff, admins, clinic keys: None).
    The live hub uses it to send patients their own booking events while the session lives."""
    principal = principal_from(conn)
    claims = session_claims(conn)
    if principal is not None and principal.role == Role.PATIENT and principal.user_id and claims:
        return SignedInPatient(principal.user_id, str(claims["sid"]))
    return None


def csrf_ok(request: Request, principal: Principal) -> bool:
    """True unless this is a cookie-authenticated write without the matching CSRF header."""
    if request.method.upper() in _SAFE_METHODS or principal.via != "cookie":
        return True
    sent = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    session = request.cookies.get(SESSION_COOKIE, "")
    if not sent or not cookie or not session:
        return False
    return hmac.compare_digest(sent.encode(), cookie.encode()) and hmac.compare_digest(
        cookie.encode(), csrf_token_for(session).encode()
    )


def require(
    principal: Principal | None, *roles: Role | Literal["clinic"], clinic: str | None = None
) -> Principal:
    """``principal`` if it has one of ``roles`` (any role if none given) and may act for ``clinic``.

    Staff and clinic keys reach only their own clinic; admins reach every clinic.
    Raises :class:`AuthError` (UNAUTHENTICATED or FORBIDDEN) otherwise.
    """
    if principal is None:
        raise AuthError("UNAUTHENTICATED", "sign in or send a valid token or clinic key")
    if roles and principal.role not in roles:
        raise AuthError("FORBIDDEN", "this needs role " + " or ".join(str(r) for r in roles))
    if clinic is not None and principal.role != Role.ADMIN and principal.clinic != clinic:
        raise AuthError("FORBIDDEN", "not allowed for this clinic")
    return principal


class LoadIdentityOffLoop:
    """Reads a request's session (or clinic key) this process has not cached yet from the store
    in a worker thread, before the route asks for it. The routes ask on the event loop
    (:func:`principal_from` is synchronous and answers from the accounts' cache), where a miss
    held the loop for the store's reads: with Redis two round trips that wait behind the journal's
    fsyncs, ~3 ms each under ``bench http --nodes 2``, for every session a node sees first (issue
    11: 3-5% of each node's loop there, py-spy). Only a miss costs a hop; a token that does not
    verify, or a store that fails here, is left to the route to refuse or report as before."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            await load_missing(HTTPConnection(scope))
        await self.app(scope, receive, send)


async def load_missing(conn: HTTPConnection) -> None:
    """Read the session (or clinic key) ``conn`` carries in a worker thread if this process has not
    cached it; nothing before the app's lifespan has opened the accounts and the signer."""
    state = conn.app.state
    accounts: Accounts | None = getattr(state, "accounts", None)
    if accounts is None or getattr(state, "signer", None) is None:
        return
    header = conn.headers.get("authorization")
    if header is not None:
        credential = header.strip().partition(" ")[2].strip()
        if credential.startswith(CLINIC_KEY_PREFIX):
            if not accounts.knows_key(credential):
                await _quietly(accounts.clinic_for_key, credential)
            return
    claims = session_claims(conn)
    if claims is not None and not accounts.knows_session(claims["sid"]):
        await _quietly(accounts.session, claims["sid"])


async def _quietly(read: Any, arg: str) -> None:
    try:
        await asyncio.to_thread(read, arg)
    except Exception:  # the route reads again and reports it the usual way
        return
