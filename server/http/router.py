"""Starlette's router with one dict look-up for a path that is some route's path as written.

Starlette tries every route in order until one matches: ``POST /api/bookings`` is the 20th of
~80, and the regular expressions of the 19 before it were 7% of the event loop under booking
load. For each path that a route names without parameters, the routes that can match it (in
their order: regular expressions tried once, when the router is made) are listed once; a
request for such a path tries only those, with Starlette's own rules (the first full match,
else the first partial one: 405). Every other request, and websockets and lifespan, go through
Starlette's router unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send


class IndexedRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], **kwargs: object) -> None:
        super().__init__(list(routes), **kwargs)  # type: ignore[arg-type]
        http = [r for r in self.routes if isinstance(r, Route | Mount)]
        static = {r.path for r in http if isinstance(r, Route) and not r.param_convertors}
        self._by_path = {path: [r for r in http if r.path_regex.match(path)] for path in static}

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        candidates = self._by_path.get(get_route_path(scope)) if scope["type"] == "http" else None
        if not candidates:
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        chosen: tuple[BaseRoute, Scope] | None = None
        for route in candidates:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                chosen = route, child_scope
                break
            if match is Match.PARTIAL and chosen is None:
                chosen = route, child_scope  # the path's route for another method: 405, unless one follows
        if chosen is None:  # cannot happen (every candidate's path matches): Starlette decides
            await super().app(scope, receive, send)
            return
        scope["route"] = chosen[0]
        scope.update(chosen[1])
        await chosen[0].handle(scope, receive, send)
