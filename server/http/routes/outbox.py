"""The local outbox for administrators (``/api/admin/outbox…``): the e-mails the notifier wrote
to ``<data_dir>/outbox`` (with ``--redis``: to Redis, every node's) because no SMTP server is
configured (``make run``). The messages hold patients' names and addresses, so this is
admin-only and never logged.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from server.consumers.notify.outbox import Outbox
from server.http.errors import not_found
from server.http.openapi import Endpoint
from server.http.routes.access import parse_query, require_admin
from server.http.routes.replies import NO_STORE, json_response
from server.http.schemas import Query


class OutboxQuery(Query):
    limit: Annotated[int, Field(ge=1, le=500)] = 100


def _outbox(request: Request) -> Outbox:
    outbox: Outbox = request.app.state.outbox  # server.stores.open_outbox, opened with the app
    return outbox


async def list_outbox(request: Request) -> Response:
    require_admin(request)
    q = parse_query(request, OutboxQuery)
    outbox = _outbox(request)

    def read() -> tuple[int, list[dict[str, Any]]]:
        names = outbox.names()
        return len(names), [s for s in (outbox.summary(n) for n in names[: q.limit]) if s is not None]

    total, messages = await asyncio.to_thread(read)
    return json_response({"total": total, "messages": messages}, headers=NO_STORE)


async def read_message(request: Request) -> Response:
    require_admin(request)
    name = str(request.path_params["name"])
    view = await asyncio.to_thread(_outbox(request).view, name)
    if view is None:
        raise not_found("no such message")
    return json_response(view, headers=NO_STORE)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/admin/outbox",
        list_outbox,
        "E-mails in the local outbox, newest first",
        "admin",
        query=OutboxQuery,
        auth="admin",
    ),
    Endpoint(
        "GET",
        "/api/admin/outbox/{name}",
        read_message,
        "One e-mail of the local outbox",
        "admin",
        errors=(404,),
        auth="admin",
    ),
]
