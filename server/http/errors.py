"""The HTTP edge's one error shape, and the middleware every request passes through.

Every error leaves the server as::

    {"error": {"code": "SLOT_TAKEN", "message": "...", "request_id": "...", "field": "start"?}}

Exception tree (under ``engine.errors.TandtidError``)::

    ApiError            code + status + message (+ field); raised by routes, rendered as the shape
     └── BodyTooLarge   the request body passed the size limit (413)

``engine.errors.Refused`` maps through ``REFUSAL_STATUS`` (raised, by its handler; returned by
``Regions.decide``, by ``refusal_response``); ``server.regions.actor.Unavailable`` -> 503.
``EdgeMiddleware`` gives each request an id (``X-Request-ID``; a client's own only when it is a
hex trace id), caps the body size, adds the security headers (and ``Cache-Control: no-store`` on
``/api/`` answers that set no caching of their own: they are personal or live), counts the request in the metrics by route *template* and writes one access
log line: method, route template, status, milliseconds, request id. Never a body, a query
string or a raw path (paths carry booking ids; bodies carry names and e-mail addresses).
"""

from __future__ import annotations

import errno
import logging
import re
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.errors import RefusalCode, Refused, TandtidError
from server.http import ids
from server.metrics import HTTP_LATENCY, HTTP_REQUESTS
from server.regions.actor import Unavailable
from server.regions.routing import SUBMITTED, NotOwned

log = logging.getLogger("tandtid.http")
access_log = logging.getLogger("tandtid.access")

REQUEST_ID_KEY = "tandtid.request_id"
# A client's own X-Request-ID is kept (echoed, logged) only when it looks like a trace id:
# hex digits and dashes (UUIDs, W3C trace ids). Words could carry a name; those get our own id.
_SANE_REQUEST_ID = re.compile(r"^[0-9A-Fa-f-]{8,64}$")

REFUSAL_STATUS: dict[RefusalCode, int] = {
    RefusalCode.SLOT_TAKEN: 409,
    RefusalCode.HOLD_EXPIRED: 410,
    RefusalCode.NOT_FOUND: 404,
    RefusalCode.NOT_YOURS: 404,
    RefusalCode.IN_PAST: 422,
    RefusalCode.OUTSIDE_HOURS: 422,
    RefusalCode.INVALID: 422,
    RefusalCode.TOO_LATE: 409,
    RefusalCode.LIMIT_REACHED: 409,
    RefusalCode.SUSPENDED: 409,
    RefusalCode.HAS_BOOKINGS: 409,
}

# Every status the API can answer with an error body, for the OpenAPI document.
ERROR_STATUSES: dict[int, str] = {
    400: "bad request",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN or CSRF",
    404: "NOT_FOUND",
    405: "method not allowed",
    409: "SLOT_TAKEN, IDEMPOTENCY_MISMATCH, TOO_LATE, LIMIT_REACHED, HAS_BOOKINGS, SUSPENDED",
    410: "HOLD_EXPIRED",
    413: "TOO_LARGE",
    422: "INVALID, IN_PAST, OUTSIDE_HOURS",
    429: "RATE_LIMITED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class ApiError(TandtidError):
    """An answer other than success. Raise it from a route; the handler renders the shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        bookings: tuple[str, ...] = (),
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.bookings = bookings  # HAS_BOOKINGS: the booking ids in the way


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "TOO_LARGE", f"request body over {limit} bytes")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "INVALID", message, field=field)


def not_found(what: str = "not found") -> ApiError:
    return ApiError(404, "NOT_FOUND", what)


def request_id(scope_or_conn: Any) -> str:
    scope = scope_or_conn if isinstance(scope_or_conn, dict) else scope_or_conn.scope
    rid = scope.get(REQUEST_ID_KEY)
    return rid if isinstance(rid, str) else ""


def error_response(
    request: Request | Scope,
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    bookings: tuple[str, ...] = (),
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id(request)}
    if field is not None:
        body["field"] = field
    if bookings:
        body["bookings"] = list(bookings)
    return Response(
        orjson.dumps({"error": body}), status_code=status, headers=headers, media_type="application/json"
    )


def _refusal_answer(exc: Refused) -> tuple[int, str, str]:
    """(status, code, message). NOT_YOURS is reported as NOT_FOUND: whether an id exists for
    somebody else is never revealed."""
    code = RefusalCode.NOT_FOUND if exc.code is RefusalCode.NOT_YOURS else exc.code
    message = "not found" if code is RefusalCode.NOT_FOUND else exc.message
    return REFUSAL_STATUS.get(exc.code, 422), str(code), message


def refusal_error(exc: Refused) -> ApiError:
    status, code, message = _refusal_answer(exc)
    return ApiError(status, code, message, bookings=exc.bookings)


def refusal_response(request: Request, exc: Refused) -> Response:
    """The answer to a refusal a route got back as a value (``Regions.decide``): the same
    response the ``Refused`` handler renders, with no exception raised on the way."""
    status, code, message = _refusal_answer(exc)
    return error_response(request, status, code, message, bookings=exc.bookings)


def validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    """The first schema error, with the field it concerns (dotted path)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
    field = ".".join(p for p in (prefix, loc) if p) or "body"
    return ApiError(422, "INVALID", str(first.get("msg", "invalid")), field=field)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        request,
        exc.status,
        exc.code,
        exc.message,
        field=exc.field,
        headers=exc.headers,
        bookings=exc.bookings,
    )


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return await _api_error(request, refusal_error(exc))


async def _not_owned(request: Request, exc: Exception) -> Response:
    """Another node owns the region: marked for ``server.http.forwarding`` (which sends the
    request there instead of this answer), else 503 as the region moves."""
    assert isinstance(exc, NotOwned)
    if not SUBMITTED.get():  # a command already made here is never made again over there
        request.scope["tandtid.forward"] = exc.region
    return error_response(
        request,
        503,
        "UNAVAILABLE",
        "the region is served by another node right now; try again in a moment",
        headers={"Retry-After": "1"},
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    from server.regions.actor import NotWritable, Overloaded

    if isinstance(exc, Overloaded):
        return error_response(
            request,
            503,
            "OVERLOADED",
            "the region is busy; nothing happened, try again shortly",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, NotWritable):
        return error_response(
            request,
            503,
            "UNAVAILABLE",
            "the server cannot write to its journal (disk full?); nothing happened, try again later",
            headers={"Retry-After": "10"},
        )
    return error_response(
        request,
        503,
        "UNAVAILABLE",
        "the region cannot record changes right now; nothing happened, try again shortly",
        headers={"Retry-After": "2"},
    )


def storage_refused(exc: BaseException) -> bool:
    """True when storage refused a write for now (disk full, database busy, Redis unreachable):
    503, not 500."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) in _SQLITE_TRANSIENT
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


_SQLITE_TRANSIENT = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR}


async def _storage_error(request: Request, exc: Exception) -> Response:
    if not storage_refused(exc):
        raise exc  # a real bug: the edge's catch-all logs it and answers 500
    log.error("storage refused: %s (request %s)", type(exc).__name__, request_id(request))
    return await _unavailable(request, exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(
        exc.status_code, "HTTP_ERROR"
    )
    return error_response(request, exc.status_code, code, str(exc.detail), headers=exc.headers)


def exception_handlers() -> dict[Any, Any]:
    return {
        NotOwned: _not_owned,
        ApiError: _api_error,
        Refused: _refused,
        Unavailable: _unavailable,
        HTTPException: _http_exception,
        sqlite3.OperationalError: _storage_error,
        OSError: _storage_error,
        RedisError: _storage_error,  # the shared state in Redis (--redis) unreachable
    }


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "unmatched"


SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data: blob: https:; connect-src 'self' ws: wss:; font-src 'self'; "
        b"object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
# An /api/ answer is data, never a page: nothing in it may load or run, nothing may frame it
# (OWASP's REST Security Cheat Sheet). Shorter to send and to check than a page's policy.
API_SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    *SECURITY_HEADERS[1:],
]


class EdgeMiddleware:
    """Request id, body cap, security headers, metrics and the access log, for every HTTP request.

    Pure ASGI (no BaseHTTPMiddleware) so streaming and WebSockets pass untouched; WebSockets only
    get a request id.
    """

    def __init__(self, app: ASGIApp, *, max_body: int = 64 * 1024) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # One pass over the head: the client's request id and the body's declared length (the
        # first of each counts).
        rid = ""
        declared: int | None = None
        seen_id = seen_length = False
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id" and not seen_id:
                seen_id = True
                candidate = value.decode("latin-1")
                if _SANE_REQUEST_ID.match(candidate):
                    rid = candidate
            elif name == b"content-length" and not seen_length:
                seen_length = True
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        rid = rid or ids.request_id()
        scope[REQUEST_ID_KEY] = rid
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        api = scope.get("path", "").startswith("/api/")
        status = 500
        response_started = False
        limit = self.max_body
        seen = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers.append((b"x-request-id", rid.encode()))
                headers.extend(
                    h for h in (API_SECURITY_HEADERS if api else SECURITY_HEADERS) if h[0] not in present
                )
                if api and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        async def receive_capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            if declared is not None and declared > limit:
                await error_response(scope, 413, "TOO_LARGE", f"request body over {limit} bytes")(
                    scope, receive, send_wrapper
                )
            else:
                # A declared length within the limit is the most the server hands over (it frames
                # the body by it): only a body without one (chunked) needs counting.
                await self.app(scope, receive if declared is not None else receive_capped, send_wrapper)
        except Exception as exc:  # the catch-all: one shape, one log line with the request id
            log.error(
                "unhandled %s in %s %s (request %s)",
                type(exc).__name__,
                scope.get("method", ""),
                _route_template(scope),
                rid,
                exc_info=exc,
            )
            if not response_started:
                await error_response(scope, 500, "INTERNAL", "something went wrong on our side")(
                    scope, receive, send_wrapper
                )
        finally:
            elapsed = time.perf_counter() - started
            template = _route_template(scope)
            method = scope.get("method", "")
            _observe(template, method, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s %d %.1fms rid=%s", method, template, status, elapsed * 1000, rid)


# (route, method, status) -> the request counter's and the latency histogram's children: their
# ``labels()`` look-up (a lock, a tuple of strings) per request cost more than the counting.
_observers: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _observe(template: str, method: str, status: int, elapsed: float) -> None:
    key = (template, method, status)
    children = _observers.get(key)
    if children is None:
        children = (
            HTTP_REQUESTS.labels(route=template, method=method, status=str(status)),
            HTTP_LATENCY.labels(route=template),
        )
        _observers[key] = children
    children[0].inc()
    children[1].observe(elapsed)
