"""The Starlette application: routes from the endpoint table, the live hub, middleware.

``create_app`` wires things; it does not start the regions (the caller — the CLI or a test
— starts and stops ``Regions``). Its lifespan opens the account store
(``<data_dir>/accounts.sqlite3``, unless one is passed in), the session signer, the hub and
the event-loop lag monitor (``server.loop_lag``), and puts ``regions``, ``health``, ``accounts``,
``signer``, ``settings``, ``hub``, ``clock``,
``openapi`` and the principal rate limiter on ``app.state``.

Middleware, outermost first (``TandtidApp``: no Starlette catch-all outside it): ``EdgeMiddleware``
(request id, body cap, security headers, metrics, access log, catch-all 500), ``HotRoutes`` (the requests of every
booking, ``HOT_ROUTES``, answered from there: ``server.http.hot_routes``), ``ForwardingMiddleware`` (a cluster node sends requests for
another node's regions there: ``server.http.forwarding``; the owner's reply is relayed as it is),
then ``RateLimitMiddleware`` (per client IP), then ``CompressMiddleware`` (``server.http.compression``): a
reply of ``COMPRESS_MIN_BYTES`` or more (the map's ~1.2 MB clinic list, availability) is gzip-compressed when
the client accepts it; smaller ones, replies already encoded (``/static`` compresses its own) and
``text/event-stream`` pass as they are, and WebSockets never go through it (HTTP scopes only).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from server.health import Health
from server.http.compression import CompressMiddleware
from server.http.errors import EdgeMiddleware, error_response, exception_handlers
from server.http.forwarding import ForwardingMiddleware
from server.http.hot_routes import HotRoutes
from server.http.openapi import Endpoint, build_document
from server.http.router import IndexedRouter
from server.http.routes import (
    admin,
    auth_routes,
    clinic_accounts,
    clinic_api,
    clinic_setup,
    ical,
    ops,
    outbox,
    pages,
    patients,
    public,
    waitlist,
    webhooks,
)
from server.http.routes.pages import STATIC_DIR, not_found_page
from server.http.static_assets import static_app
from server.identity.accounts import Accounts
from server.identity.auth import AuthError, LoadIdentityOffLoop, SessionSigner, patient_of
from server.identity.ratelimit import RateLimiter, RateLimitMiddleware, RedisRateLimiter
from server.live.hub import Hub
from server.loop_lag import LoopLag
from server.regions.horizon import RollingHorizon
from server.regions.routing import Regions
from server.settings import Settings
from server.stores import open_accounts, open_feed_tokens, open_in_flight, open_outbox

log = logging.getLogger("tandtid.app")

# Below this a reply is sent as it is: the gzip header and a round trip of CPU buy nothing.
COMPRESS_MIN_BYTES = 1024
# zlib's level 1 (nginx's default gzip_comp_level): a 56 KB availability-sized JSON reply in
# 276 us of the event loop against 681 us at level 6, for 11.3 KB instead of 10.2 KB.
COMPRESS_LEVEL = 1

# Answered right under the edge (``server.http.hot_routes``): the requests of every booking.
HOT_ROUTES = [("/api/bookings", {"POST"}), ("/api/holds", {"POST"})]

ENDPOINTS: list[Endpoint] = [
    *ops.ENDPOINTS,
    *public.ENDPOINTS,
    *auth_routes.ENDPOINTS,
    *patients.ENDPOINTS,
    *waitlist.ENDPOINTS,
    *ical.ENDPOINTS,
    *clinic_api.ENDPOINTS,
    *clinic_setup.ENDPOINTS,
    *clinic_accounts.ENDPOINTS,
    *webhooks.ENDPOINTS,
    *admin.ENDPOINTS,
    *outbox.ENDPOINTS,
    *pages.ENDPOINTS,
]


class TandtidApp(Starlette):
    """Starlette, without its own catch-all outermost: ``EdgeMiddleware``, next inside it, already
    catches every exception and answers in the one error shape, so Starlette's
    ``ServerErrorMiddleware`` never sees one and only costs every request a layer (its call and its
    wrapper of both sends). Kept where the stack is not the one expected."""

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if isinstance(stack, ServerErrorMiddleware) and isinstance(stack.app, EdgeMiddleware):
            return stack.app
        return stack


async def _auth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    return error_response(request, exc.status, exc.code, exc.message)


def _page_or_error(error: Callable[[Request, Exception], Awaitable[Response]]) -> Any:
    """An unknown path: the HTML 404 page for a browser navigating there, else the JSON error."""

    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 404:
            page = not_found_page(request)
            if page is not None:
                return page
        return await error(request, exc)

    return handle


async def _ws_endpoint(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    await hub.endpoint(websocket)


def create_app(settings: Settings, *, regions: Regions, accounts: Accounts | None = None) -> Starlette:
    routes: list[BaseRoute] = [Route(ep.path, ep.handler, methods=[ep.method]) for ep in ENDPOINTS]
    routes.append(WebSocketRoute("/ws", _ws_endpoint))
    if STATIC_DIR.is_dir():
        routes.append(Mount("/static", app=static_app(STATIC_DIR), name="static"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own_accounts = accounts is None
        store = accounts if accounts is not None else open_accounts(settings.data_dir, settings.redis_url)
        app.state.accounts = store
        app.state.signer = SessionSigner(settings.secret_key, settings.session_ttl_s)
        app.state.feed_tokens = open_feed_tokens(settings.data_dir, settings.redis_url)
        app.state.in_flight = open_in_flight(settings.redis_url)
        app.state.outbox = open_outbox(settings.data_dir, settings.redis_url)
        hub = Hub(
            regions, settings, identify=patient_of, session_live=lambda sid: store.session(sid) is not None
        )
        app.state.hub = hub
        hub.start()
        lag = LoopLag(stall_ms=settings.stall_ms)
        lag.start()
        horizon = RollingHorizon(regions, app.state.clock, settings.horizon_days)
        app.state.horizon = horizon
        horizon.start()
        try:
            yield
        finally:
            await horizon.stop()
            await lag.stop()
            await hub.stop()
            app.state.feed_tokens.close()
            await app.state.in_flight.close()
            app.state.outbox.close()
            login_limiter = getattr(app.state, "login_limiter", None)  # made on the first sign-in
            if isinstance(login_limiter, RedisRateLimiter):
                login_limiter.close()
            if own_accounts:
                store.close()

    handlers = exception_handlers()
    handlers[AuthError] = _auth_error
    handlers[HTTPException] = _page_or_error(handlers[HTTPException])
    per_ip = RateLimiter(settings.rate_per_s, settings.rate_burst)
    hot = [r for r in routes if isinstance(r, Route) and (r.path, r.methods) in HOT_ROUTES]
    assert len(hot) == len(HOT_ROUTES), "a hot route is not in the endpoint table"
    app = TandtidApp(
        routes=routes,
        middleware=[
            Middleware(EdgeMiddleware, max_body=settings.max_body_bytes),
            Middleware(
                HotRoutes,
                routes=hot,
                limiter=per_ip,
                handlers=handlers,
                compress_min_bytes=COMPRESS_MIN_BYTES,
                compress_level=COMPRESS_LEVEL,
            ),
            Middleware(ForwardingMiddleware),  # a cluster node: another node's regions go there
            Middleware(RateLimitMiddleware, limiter=per_ip),
            Middleware(CompressMiddleware, min_bytes=COMPRESS_MIN_BYTES, level=COMPRESS_LEVEL),
            Middleware(LoadIdentityOffLoop),  # a session or key not cached yet: read in a thread
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.router = IndexedRouter(routes, lifespan=lifespan)  # before the first request builds the stack
    app.state.settings = settings
    app.state.regions = regions
    app.state.health = Health()  # parts down while the rest serves (the journal consumers); /ready
    app.state.clock = next(iter(regions.actors.values())).clock if regions.actors else time.time
    app.state.principal_limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
    app.state.openapi = build_document(ENDPOINTS)
    # A cluster node's Forwarder, set by ``server.serve``. Present (None) on a single node so the
    # forwarding middleware's look-up per request finds it: a missing attribute of ``State`` costs
    # two exceptions.
    app.state.forwarder = None
    return app
