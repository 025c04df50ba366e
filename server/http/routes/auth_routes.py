"""Register, sign in, sign out, change password, who am I.

Argon2 hashing is slow on purpose, so ``create_user``/``authenticate`` run in a thread.
Successful answers set the session + CSRF cookies and also return the token for API
clients (``Authorization: Bearer``). Signing out ends the session server-side; changing the
password ends every session of the account and starts a fresh one for the caller.

Failed sign-ins are throttled per account (a bucket keyed by a digest of the e-mail address,
never the address itself): after ``LOGIN_FAILURES`` wrong passwords the account answers 429
— whatever the password — until the bucket refills, one attempt per ``LOGIN_REFILL_S``. With
``--redis`` the buckets are in Redis, shared by every node (guesses spread over nodes add up).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.http.errors import ApiError
from server.http.openapi import Endpoint
from server.http.routes.access import optional_principal, parse_body, require_user
from server.http.routes.replies import json_response, no_content
from server.http.schemas import LoginBody, PasswordBody, RegisterBody
from server.identity.accounts import Accounts, EmailTaken, InvalidAccount, User, normalise_email
from server.identity.auth import (
    AuthError,
    SessionSigner,
    clear_session,
    session_claims,
    set_session,
    start_session,
)
from server.identity.ratelimit import RateLimiter, RedisRateLimiter
from server.runtime import threads_served_often

LOGIN_FAILURES = 10
LOGIN_REFILL_S = 60.0


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": str(user.role),
        "clinic": user.clinic,
    }


async def _signed_in(request: Request, user: User, status: int) -> Response:
    signer: SessionSigner = request.app.state.signer
    # the session's row is written to the account store: off the event loop
    token = await asyncio.to_thread(start_session, request.app.state.accounts, signer, user)
    return _session_reply(request, user, token, status)


async def _find_and_sign_in(request: Request, find: Callable[[], User | None]) -> tuple[User, str] | None:
    """``find()`` the account (a sign-up's or sign-in's password hash) and start its session in ONE
    worker-thread call: the request waits for one hop, not two."""
    accounts: Accounts = request.app.state.accounts
    signer: SessionSigner = request.app.state.signer

    def work() -> tuple[User, str] | None:
        user = find()
        return None if user is None else (user, start_session(accounts, signer, user))

    with threads_served_often():  # ~20 calls in the thread let the GIL go and wait to take it back
        return await asyncio.to_thread(work)


def _session_reply(request: Request, user: User, token: str, status: int) -> Response:
    response = json_response({"token": token, "user": user_view(user)}, status=status)
    set_session(response, token, secure=bool(request.app.state.settings.secure_cookies))
    return response


async def register(request: Request) -> Response:
    body = await parse_body(request, RegisterBody)
    accounts: Accounts = request.app.state.accounts
    try:
        signed = await _find_and_sign_in(
            request, functools.partial(accounts.create_user, body.email, body.password, body.name)
        )
    except EmailTaken:
        raise ApiError(409, "EMAIL_TAKEN", "there is already an account with that e-mail address") from None
    except InvalidAccount as exc:
        raise ApiError(422, "INVALID", str(exc)) from None
    assert signed is not None  # create_user returns the account or raises
    return _session_reply(request, *signed, 201)


def login_limiter(request: Request) -> RateLimiter | RedisRateLimiter:
    """The per-account bucket of failed sign-ins (made on first use, kept on ``app.state``; in
    Redis with ``--redis``, closed with the app)."""
    state = request.app.state
    limiter: RateLimiter | RedisRateLimiter | None = getattr(state, "login_limiter", None)
    if limiter is None:
        url = state.settings.redis_url
        limiter = RedisRateLimiter(url, 1 / LOGIN_REFILL_S, LOGIN_FAILURES) if url else None
        limiter = limiter or RateLimiter(1 / LOGIN_REFILL_S, LOGIN_FAILURES)
        state.login_limiter = limiter
    return limiter


def _account_key(email: str) -> str:
    return "login:" + hashlib.sha256(normalise_email(email).encode()).hexdigest()[:32]


async def login(request: Request) -> Response:
    body = await parse_body(request, LoginBody)
    accounts: Accounts = request.app.state.accounts
    limiter, key = login_limiter(request), _account_key(body.email)
    wait = limiter.wait(key)
    if wait > 0:
        raise ApiError(
            429,
            "RATE_LIMITED",
            "too many failed sign-ins for this account; try again later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    signed = await _find_and_sign_in(
        request, functools.partial(accounts.authenticate, body.email, body.password)
    )
    if signed is None:
        limiter.take(key)
        raise ApiError(401, "UNAUTHENTICATED", "wrong e-mail address or password")
    return _session_reply(request, *signed, 200)


async def logout(request: Request) -> Response:
    """End the session this request carries (if any) and clear the cookies; always 204."""
    claims = session_claims(request)
    if claims is not None:
        await asyncio.to_thread(request.app.state.accounts.end_session, claims["sid"])
        request.app.state.hub.sign_out(session=claims["sid"])  # its live sockets end now too
    response = no_content()
    clear_session(response)
    return response


async def change_password(request: Request) -> Response:
    user_id = require_user(request)
    body = await parse_body(request, PasswordBody)
    accounts: Accounts = request.app.state.accounts
    try:
        user = await asyncio.to_thread(
            accounts.change_password, user_id, body.current_password, body.new_password
        )
    except InvalidAccount as exc:
        raise ApiError(422, "INVALID", str(exc), field="new_password") from None
    if user is None:
        raise ApiError(401, "UNAUTHENTICATED", "the current password is wrong")
    request.app.state.hub.sign_out(patient=user_id)  # every session ended: so do their sockets
    return await _signed_in(request, user, 200)


async def me(request: Request) -> Response:
    principal = optional_principal(request)
    if principal is None or principal.user_id is None:
        raise AuthError("UNAUTHENTICATED", "not signed in")
    accounts: Accounts = request.app.state.accounts
    user = await asyncio.to_thread(accounts.get, principal.user_id)
    if user is None:
        raise AuthError("UNAUTHENTICATED", "not signed in")
    return json_response({"user": user_view(user)})


_SIGNED_IN = {
    "type": "object",
    "required": ["token", "user"],
    "properties": {"token": {"type": "string"}, "user": {"type": "object"}},
}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/auth/register",
        register,
        "Create a patient account and sign in",
        "accounts",
        body=RegisterBody,
        ok=201,
        ok_schema=_SIGNED_IN,
        errors=(409,),
    ),
    Endpoint(
        "POST",
        "/api/auth/login",
        login,
        "Sign in",
        "accounts",
        body=LoginBody,
        ok_schema=_SIGNED_IN,
        errors=(401, 429),
    ),
    Endpoint(
        "POST",
        "/api/auth/logout",
        logout,
        "Sign out (ends the session, clears the cookies)",
        "accounts",
        ok=204,
    ),
    Endpoint(
        "POST",
        "/api/auth/password",
        change_password,
        "Change the password (ends every session of the account, starts a new one)",
        "accounts",
        body=PasswordBody,
        ok_schema=_SIGNED_IN,
        errors=(401,),
        auth="user",
    ),
    Endpoint("GET", "/api/auth/me", me, "The signed-in user", "accounts", auth="optional"),
]
