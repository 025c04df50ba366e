"""Register, sign in, sign out, who am I.

Argon2 hashing is slow on purpose, so ``create_user``/``authenticate`` run in a thread.
Both successful answers set the session + CSRF cookies and also return the token for API
clients (``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.http.errors import ApiError
from server.http.openapi import Endpoint
from server.http.routes.access import optional_principal, parse_body
from server.http.routes.replies import json_response, no_content
from server.http.schemas import LoginBody, RegisterBody
from server.identity.accounts import AccountStore, EmailTaken, InvalidAccount, User
from server.identity.auth import AuthError, SessionSigner, clear_session, set_session


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": str(user.role),
        "clinic": user.clinic,
    }


def _signed_in(request: Request, user: User, status: int) -> Response:
    signer: SessionSigner = request.app.state.signer
    token = signer.issue(user)
    response = json_response({"token": token, "user": user_view(user)}, status=status)
    set_session(response, token, secure=bool(request.app.state.settings.secure_cookies))
    return response


async def register(request: Request) -> Response:
    body = await parse_body(request, RegisterBody)
    accounts: AccountStore = request.app.state.accounts
    try:
        user = await asyncio.to_thread(accounts.create_user, body.email, body.password, body.name)
    except EmailTaken:
        raise ApiError(409, "EMAIL_TAKEN", "there is already an account with that e-mail address") from None
    except InvalidAccount as exc:
        raise ApiError(422, "INVALID", str(exc)) from None
    return _signed_in(request, user, 201)


async def login(request: Request) -> Response:
    body = await parse_body(request, LoginBody)
    accounts: AccountStore = request.app.state.accounts
    user = await asyncio.to_thread(accounts.authenticate, body.email, body.password)
    if user is None:
        raise ApiError(401, "UNAUTHENTICATED", "wrong e-mail address or password")
    return _signed_in(request, user, 200)


async def logout(request: Request) -> Response:
    response = no_content()
    clear_session(response)
    return response


async def me(request: Request) -> Response:
    principal = optional_principal(request)
    if principal is None or principal.user_id is None:
        raise AuthError("UNAUTHENTICATED", "not signed in")
    accounts: AccountStore = request.app.state.accounts
    user = accounts.get(principal.user_id)
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
        errors=(401,),
    ),
    Endpoint("POST", "/api/auth/logout", logout, "Sign out (clears the cookies)", "accounts", ok=204),
    Endpoint("GET", "/api/auth/me", me, "The signed-in user", "accounts", auth="optional"),
]
