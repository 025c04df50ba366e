"""The indexed router answers as Starlette's own router does: the same route for every path and
method, 405 for a known path with another method, 404 and the slash redirect as before."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from server.http.router import IndexedRouter


def _named(name: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{name} {request.path_params}")

    return endpoint


ROUTES = [
    Route("/api/items/{id}", _named("item"), methods=["GET"]),
    Route("/api/items/mine", _named("mine"), methods=["GET"]),  # shadowed by the one before for GET
    Route("/api/items/mine", _named("mine-post"), methods=["POST"]),
    Route("/api/items", _named("list"), methods=["GET"]),
    Route("/api/items", _named("create"), methods=["POST"]),
    Route("/api/other/", _named("slash"), methods=["GET"]),
    Mount("/static", routes=[Route("/x", _named("static-x"))]),
]


async def _answers(router_class: type | None) -> list[tuple[int, str]]:
    app = Starlette(routes=ROUTES)
    if router_class is not None:
        app.router = router_class(ROUTES)
    asked = [
        ("GET", "/api/items/mine"),
        ("POST", "/api/items/mine"),
        ("PUT", "/api/items/mine"),
        ("GET", "/api/items"),
        ("POST", "/api/items"),
        ("DELETE", "/api/items"),
        ("GET", "/api/items/7"),
        ("GET", "/api/other"),
        ("GET", "/static/x"),
        ("GET", "/nowhere"),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        replies = [await client.request(method, path) for method, path in asked]
    return [(r.status_code, r.text if r.status_code < 300 else "") for r in replies]


async def test_the_indexed_router_answers_every_request_as_starlettes_router_does() -> None:
    mine = await _answers(IndexedRouter)
    assert mine == await _answers(None)
    assert mine[0] == (200, "item {'id': 'mine'}")
    assert mine[1] == (200, "mine-post {}") and mine[2][0] == 405 and mine[5][0] == 405
    assert mine[3] == (200, "list {}") and mine[4] == (200, "create {}")
    assert mine[7][0] == 307 and mine[8] == (200, "static-x {}") and mine[9][0] == 404
