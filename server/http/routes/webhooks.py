"""Clinic webhooks (``/api/clinic/v1/webhooks…``): register HTTPS endpoints, read the delivery
log, replay a delivery. A clinic key or a staff session reaches only its own clinic's
endpoints; another clinic's endpoint is answered as unknown (404).

The store is ``app.state.webhook_store`` (set by the process wiring; opened lazily from
``<data_dir>/webhooks.sqlite3`` otherwise). ``app.state.webhook_dispatcher``, when present,
is woken after a replay so it goes out at once.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from server.consumers.webhooks.dispatcher import EVENT_TYPES, allow_http, allow_private, url_problem
from server.consumers.webhooks.store import STATUSES, Webhooks
from server.http.errors import invalid, not_found
from server.http.openapi import Endpoint
from server.http.routes.access import now_s, parse_body, parse_query, path_id, require_clinic
from server.http.routes.replies import json_response, no_content, shown_once
from server.http.schemas import Body, Query
from server.stores import open_webhooks

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
_OPEN_LOCK = threading.Lock()


class WebhookBody(Body):
    url: Annotated[str, Field(min_length=8, max_length=2000)]
    events: Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))] = list(EVENT_TYPES)


class DeliveriesQuery(Query):
    limit: Annotated[int, Field(ge=1, le=500)] = 100
    status: Literal[STATUSES] | None = None  # type: ignore[valid-type]
    before: Annotated[int, Field(ge=1)] | None = None


def webhook_store(request: Request) -> Webhooks:
    state = request.app.state
    store: Webhooks | None = getattr(state, "webhook_store", None)
    if store is None:
        with _OPEN_LOCK:
            store = getattr(state, "webhook_store", None)
            if store is None:
                settings = state.settings
                store = state.webhook_store = open_webhooks(settings.data_dir, settings.redis_url)
    return store


async def create_endpoint(request: Request) -> Response:
    _, clinic = require_clinic(request)
    body = await parse_body(request, WebhookBody)
    problem = url_problem(body.url, allow_http=allow_http(), allow_private=allow_private())
    if problem is not None:
        raise invalid("url", problem)
    store = webhook_store(request)
    endpoint, secret = await asyncio.to_thread(
        store.create_endpoint, clinic, body.url, list(body.events), float(now_s(request))
    )
    return shown_once(endpoint.view(), secret)  # the clinic verifies signatures with it


async def list_endpoints(request: Request) -> Response:
    _, clinic = require_clinic(request)
    endpoints = await asyncio.to_thread(webhook_store(request).endpoints, clinic)
    return json_response({"endpoints": [e.view() for e in endpoints]})


async def delete_endpoint(request: Request) -> Response:
    _, clinic = require_clinic(request)
    endpoint_id = path_id(request)
    deleted = await asyncio.to_thread(
        webhook_store(request).delete_endpoint, clinic, endpoint_id, float(now_s(request))
    )
    if not deleted:
        raise not_found("no such webhook endpoint")
    return no_content()


async def _own_endpoint(request: Request) -> tuple[Webhooks, str]:
    _, clinic = require_clinic(request)
    endpoint_id = path_id(request)
    store = webhook_store(request)
    if await asyncio.to_thread(store.endpoint, clinic, endpoint_id) is None:
        raise not_found("no such webhook endpoint")
    return store, endpoint_id


async def deliveries(request: Request) -> Response:
    store, endpoint_id = await _own_endpoint(request)
    q = parse_query(request, DeliveriesQuery)
    rows = await asyncio.to_thread(
        lambda: store.deliveries(endpoint_id, limit=q.limit, status=q.status, before=q.before)
    )
    return json_response({"endpoint": endpoint_id, "deliveries": [d.view() for d in rows]})


async def replay(request: Request) -> Response:
    store, endpoint_id = await _own_endpoint(request)
    raw = str(request.path_params["delivery"])
    if not raw.isdigit() or len(raw) > 18:
        raise not_found("no such delivery")
    copy = await asyncio.to_thread(store.replay, endpoint_id, int(raw), float(now_s(request)))
    if copy is None:
        raise not_found("no such delivery")
    dispatcher: Any = getattr(request.app.state, "webhook_dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()
    return json_response({"delivery": copy.view()}, status=202)


_ENDPOINT = {"type": "object", "required": ["id", "url", "events"]}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/clinic/v1/webhooks",
        create_endpoint,
        "Register an HTTPS endpoint (the signing secret is in this reply only)",
        "clinic",
        body=WebhookBody,
        ok=201,
        ok_schema=_ENDPOINT,
        auth="clinic",
    ),
    Endpoint(
        "GET",
        "/api/clinic/v1/webhooks",
        list_endpoints,
        "The clinic's webhook endpoints",
        "clinic",
        auth="clinic",
    ),
    Endpoint(
        "DELETE",
        "/api/clinic/v1/webhooks/{id}",
        delete_endpoint,
        "Remove an endpoint (pending deliveries are cancelled)",
        "clinic",
        ok=204,
        errors=(404,),
        auth="clinic",
    ),
    Endpoint(
        "GET",
        "/api/clinic/v1/webhooks/{id}/deliveries",
        deliveries,
        "An endpoint's delivery log, newest first",
        "clinic",
        query=DeliveriesQuery,
        errors=(404,),
        auth="clinic",
    ),
    Endpoint(
        "POST",
        "/api/clinic/v1/webhooks/{id}/deliveries/{delivery}/replay",
        replay,
        "Send a delivery again (queued after the endpoint's pending deliveries)",
        "clinic",
        ok=202,
        errors=(404,),
        auth="clinic",
    ),
]
