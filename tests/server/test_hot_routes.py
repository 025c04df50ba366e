"""Unit tests: ``HotRoutes`` answers its routes right under the edge, doing what the layers it
skips would have done (tiny inline Starlette app, in-process). Every booking test of the suite
goes through it against the real server; these pin what the suite would not notice."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from server.http.app import TandtidApp
from server.http.errors import ApiError, EdgeMiddleware, exception_handlers
from server.http.hot_routes import HotRoutes
from server.identity.ratelimit import RateLimiter


class Gone(ApiError):
    """A subclass: its handler is its base class's."""


async def hot(request: Request) -> Response:
    body = await request.json()
    if body.get("fail") == "gone":
        raise Gone(410, "GONE", "it went")
    if body.get("fail") == "bug":
        raise RuntimeError("kaboom")
    size = int(body.get("size", 10))
    return JSONResponse({"route": request.scope["route"].path, "x": "y" * size}, status_code=201)


async def cold(request: Request) -> Response:
    return JSONResponse({"ok": True})


class Layers:
    """A layer between the hot routes and the router: which paths went through it."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


def make(burst: float = 1000, forwarder: object = None) -> tuple[TandtidApp, list[str]]:
    seen: list[str] = []
    routes = [Route("/hot", hot, methods=["POST"]), Route("/cold", cold, methods=["POST"])]
    handlers = exception_handlers()
    app = TandtidApp(
        routes=routes,
        middleware=[
            Middleware(EdgeMiddleware, max_body=100_000),
            Middleware(
                HotRoutes,
                routes=routes[:1],
                limiter=RateLimiter(0.001, burst),
                handlers=handlers,
                compress_min_bytes=1024,
                compress_level=1,
            ),
            Middleware(Layers, seen=seen),
        ],
        exception_handlers=handlers,
    )
    app.state.forwarder = forwarder
    return app, seen


def client(app: TandtidApp) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://hot.test")


def requests_counted(route: str, status: int) -> float:
    labels = {"route": route, "method": "POST", "status": str(status)}
    return REGISTRY.get_sample_value("tandtid_http_requests_total", labels) or 0.0


async def test_a_hot_route_skips_the_layers_and_keeps_what_the_edge_adds() -> None:
    app, seen = make()
    before = requests_counted("/hot", 201)
    async with client(app) as c:
        r = await c.post("/hot", json={}, headers={"X-Request-ID": "5f2b1c7e-0002"})
        other = await c.post("/cold", json={})
        wrong_method = await c.get("/hot")
    assert r.status_code == 201
    assert r.json()["route"] == "/hot"  # scope["route"]: the edge's metrics and log name the route
    assert r.headers["x-request-id"] == "5f2b1c7e-0002"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert requests_counted("/hot", 201) == before + 1
    assert other.status_code == 200
    assert wrong_method.status_code == 405  # Starlette's own answer, through the full stack
    assert seen == ["/cold", "/hot"]


async def test_on_a_cluster_node_a_hot_route_takes_the_full_stack() -> None:
    app, seen = make(forwarder=object())
    async with client(app) as c:
        r = await c.post("/hot", json={})
    assert r.status_code == 201
    assert seen == ["/hot"]


async def test_the_per_ip_rate_limit_holds_on_a_hot_route() -> None:
    app, _seen = make(burst=2)
    async with client(app) as c:
        statuses = [(await c.post("/hot", json={})).status_code for _ in range(2)]
        refused = await c.post("/hot", json={})
    assert statuses == [201, 201]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert int(refused.headers["retry-after"]) >= 1


async def test_a_large_reply_is_compressed_for_a_client_that_accepts_gzip() -> None:
    app, _seen = make()
    async with client(app) as c:
        plain = await c.post("/hot", json={"size": 5000}, headers={"Accept-Encoding": "identity"})
        zipped = await c.post("/hot", json={"size": 5000}, headers={"Accept-Encoding": "gzip"})
        small = await c.post("/hot", json={"size": 10}, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < 1000
    assert zipped.json() == plain.json()  # httpx decodes it
    assert "content-encoding" not in small.headers


async def test_errors_are_answered_by_the_apps_handlers_and_a_bug_by_the_edge() -> None:
    app, _seen = make()
    async with client(app) as c:
        gone = await c.post("/hot", json={"fail": "gone"})
        bug = await c.post("/hot", json={"fail": "bug"})
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "GONE"
    assert bug.status_code == 500
    assert bug.json()["error"]["code"] == "INTERNAL"
    assert bug.headers["x-request-id"]


def test_only_routes_without_path_parameters() -> None:
    async def endpoint(request: Request) -> Response:
        return Response()

    with pytest.raises(ValueError, match="path parameters"):
        HotRoutes(
            cold,  # type: ignore[arg-type]
            routes=[Route("/things/{id}", endpoint, methods=["POST"])],
            limiter=RateLimiter(1, 1),
            handlers={},
            compress_min_bytes=1024,
            compress_level=1,
        )
