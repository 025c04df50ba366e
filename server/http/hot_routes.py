"""The routes every booking takes, answered right under the edge instead of through every layer.

``POST /api/bookings`` is most of what the server does under load, and its CPU was the limit of
``bench http --spread uniform``: one event loop, ~205 us per booking, of which the layers between
``EdgeMiddleware`` and the endpoint (forwarding, the per-IP rate limit, compression, loading the
identity, Starlette's exception middleware, its router, the route, ``request_response`` and the
exception wrapper inside it: eleven calls and four wrappers of ``send``) took ~15% (py-spy).

``HotRoutes`` sits next inside the edge. A request for one of its routes, method and path as
written, does what those layers would have done for it, in the same order, with the same objects:

- on a cluster node (``app.state.forwarder`` set) it takes the full stack, which may forward it;
- the per-IP rate limit, with the limiter ``RateLimitMiddleware`` uses (one budget per client);
- compression, by ``CompressMiddleware`` itself (a client that accepts gzip and a reply that is
  large enough);
- the session or clinic key read in a thread when this process has not cached it
  (``LoadIdentityOffLoop``'s ``load_missing``);
- ``scope["route"]``, so the edge's metrics and access log name the route;
- the app's exception handlers, looked up the way Starlette does (the class, then its bases).

Every other request goes through the full stack unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from server.http.compression import CompressMiddleware
from server.identity.auth import load_missing
from server.identity.ratelimit import RateLimiter, rate_limited

Handler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoutes:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[Route],
        limiter: RateLimiter,
        handlers: Mapping[Any, Handler],
        compress_min_bytes: int,
        compress_level: int,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.handlers: dict[Any, Handler] = dict(handlers)
        self._routes: dict[tuple[str, str], Route] = {}
        for route in routes:
            if route.param_convertors or not route.methods:
                raise ValueError(f"{route.path}: only routes without path parameters, with their methods")
            for method in route.methods - {"HEAD"}:
                self._routes[method, route.path] = route
        self._answer = CompressMiddleware(self._endpoint, min_bytes=compress_min_bytes, level=compress_level)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if route is None or scope["app"].state.forwarder is not None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.limiter.take("ip:" + (client[0] if client else "unknown"))
        if wait > 0:
            await rate_limited(scope, wait)(scope, receive, send)
            return
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        scope.setdefault("router", scope["app"].router)
        await self._answer(scope, receive, send)

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            await load_missing(request)
            response = await scope["endpoint"](request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # the edge's catch-all: one shape, one log line
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None
