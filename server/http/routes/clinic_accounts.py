"""A clinic's people and its API key, managed by the clinic's own admin (``/api/clinic/v1/accounts…``,
``/api/clinic/v1/key``), and the platform admin's way to give a new clinic its first accounts
(``/api/admin/clinics/{id}/accounts``).

Only a signed-in clinic admin reaches these (a clinic key cannot mint accounts or rotate itself;
staff get 403). A clinic admin sees and changes the accounts of its own clinic only: another
clinic's account is answered as unknown (404). A clinic admin cannot demote or remove themselves,
so a clinic is never left without one by its own hand. Removing an account ends its sessions at
once. A password the server makes and a new key are in the reply only.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.http.errors import ApiError, invalid, not_found
from server.http.openapi import Endpoint
from server.http.routes.access import (
    clinic_in_path,
    parse_body,
    path_id,
    require_admin,
    require_clinic_admin,
)
from server.http.routes.replies import NO_STORE, json_response, no_content, shown_once
from server.http.schemas import ClinicAccountBody, ClinicRoleBody
from server.identity.accounts import Accounts, EmailTaken, InvalidAccount, Role, UnknownAccount, User


def _accounts(request: Request) -> Accounts:
    store: Accounts = request.app.state.accounts
    return store


def account_view(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name, "role": str(user.role)}


async def _create(request: Request, clinic: str) -> Response:
    body = await parse_body(request, ClinicAccountBody)
    made = body.password is None
    password = secrets.token_urlsafe(12) if body.password is None else body.password
    try:
        user = await asyncio.to_thread(
            _accounts(request).create_user, body.email, password, body.name, Role(body.role), clinic
        )
    except EmailTaken:
        raise ApiError(409, "EMAIL_TAKEN", "there is already an account with that e-mail address") from None
    except InvalidAccount as exc:
        raise ApiError(422, "INVALID", str(exc)) from None
    reply = {"account": account_view(user)}
    if made:  # hand it over; they change it after signing in
        return shown_once(reply, password, field="password")
    return json_response(reply, status=201, headers=NO_STORE)


async def list_accounts(request: Request) -> Response:
    _, clinic = require_clinic_admin(request, key=False)
    users = await asyncio.to_thread(_accounts(request).clinic_users, clinic)
    return json_response({"accounts": [account_view(u) for u in users]}, headers=NO_STORE)


async def create_account(request: Request) -> Response:
    _, clinic = require_clinic_admin(request, key=False)
    return await _create(request, clinic)


def _not_self(principal_user: str | None, account: str, doing: str) -> None:
    if principal_user == account:
        raise invalid("id", f"you cannot {doing} your own account: another clinic admin can")


async def set_role(request: Request) -> Response:
    principal, clinic = require_clinic_admin(request, key=False)
    account = path_id(request)
    body = await parse_body(request, ClinicRoleBody)
    _not_self(principal.user_id, account, "change the role of")
    try:
        user = await asyncio.to_thread(_accounts(request).set_clinic_role, clinic, account, Role(body.role))
    except UnknownAccount:
        raise not_found("no such account at your clinic") from None
    return json_response({"account": account_view(user)}, headers=NO_STORE)


async def remove_account(request: Request) -> Response:
    principal, clinic = require_clinic_admin(request, key=False)
    account = path_id(request)
    _not_self(principal.user_id, account, "remove")
    try:
        await asyncio.to_thread(_accounts(request).remove_clinic_user, clinic, account)
    except UnknownAccount:
        raise not_found("no such account at your clinic") from None
    return no_content()


def _key_view(created: float | None) -> dict[str, Any]:
    when = datetime.fromtimestamp(created, UTC).isoformat(timespec="seconds") if created else None
    return {"active": created is not None, "created_at": when}


async def key_state(request: Request) -> Response:
    _, clinic = require_clinic_admin(request, key=False)
    created = await asyncio.to_thread(_accounts(request).clinic_key_created, clinic)
    return json_response({"key": _key_view(created)}, headers=NO_STORE)


async def rotate_key(request: Request) -> Response:
    _, clinic = require_clinic_admin(request, key=False)
    key = await asyncio.to_thread(_accounts(request).rotate_clinic_key, clinic)
    created = await asyncio.to_thread(_accounts(request).clinic_key_created, clinic)
    return shown_once({"key": _key_view(created)}, key)


async def revoke_key(request: Request) -> Response:
    _, clinic = require_clinic_admin(request, key=False)
    await asyncio.to_thread(_accounts(request).revoke_clinic_keys, clinic)
    return no_content()


async def admin_create_account(request: Request) -> Response:
    """The platform admin gives a clinic an account (its first clinic admin, typically)."""
    require_admin(request)
    return await _create(request, await clinic_in_path(request))


_ACCOUNT = {"type": "object", "required": ["account"], "properties": {"account": {"type": "object"}}}
_KEY = {"type": "object", "required": ["key"], "properties": {"key": {"type": "object"}}}

ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/clinic/v1/accounts",
        list_accounts,
        "The clinic's staff and clinic admin accounts (clinic admin)",
        "clinic",
        ok_schema={"type": "object", "required": ["accounts"]},
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/accounts",
        create_account,
        "Add a staff or clinic admin account; without a password one is made and shown in this reply only",
        "clinic",
        body=ClinicAccountBody,
        ok=201,
        ok_schema=_ACCOUNT,
        errors=(409,),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/accounts/{id}/role",
        set_role,
        "Make an account staff or clinic admin (its sessions carry the new role at once)",
        "clinic",
        body=ClinicRoleBody,
        ok_schema=_ACCOUNT,
        errors=(404,),
        auth="clinic",
    ),
    Endpoint(
        "DELETE",
        "/api/clinic/v1/accounts/{id}",
        remove_account,
        "Remove an account of the clinic; its sessions end at once",
        "clinic",
        ok=204,
        errors=(404,),
        auth="clinic",
    ),
    Endpoint(
        "GET",
        "/api/clinic/v1/key",
        key_state,
        "Whether the clinic has an API key, and since when (clinic admin)",
        "clinic",
        ok_schema=_KEY,
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/key",
        rotate_key,
        "A new API key (shown in this reply only); every older key stops working",
        "clinic",
        ok=201,
        ok_schema=_KEY,
        auth="clinic",
    ),
    Endpoint(
        "DELETE",
        "/api/clinic/v1/key",
        revoke_key,
        "Revoke the clinic's API keys",
        "clinic",
        ok=204,
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/admin/clinics/{id}/accounts",
        admin_create_account,
        "Give a clinic an account (its first clinic admin); without a password one is made, shown once",
        "admin",
        body=ClinicAccountBody,
        ok=201,
        ok_schema=_ACCOUNT,
        errors=(404, 409),
        auth="admin",
    ),
]
