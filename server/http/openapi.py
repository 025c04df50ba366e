"""The route table and the OpenAPI 3.1 document generated from it.

Every HTTP endpoint is declared once as an ``Endpoint`` (method, path, handler, the pydantic
models of its body and query, its success status and the error statuses it can answer).
``server.http.app`` builds Starlette routes from the same list, so ``/openapi.json`` documents
exactly the routes that exist and the schemas they enforce.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from server.http.errors import ERROR_STATUSES

Handler = Callable[[Request], Awaitable[Response]]
Auth = Literal["none", "user", "clinic", "admin", "optional"]

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "field": {"type": "string"},
                "bookings": {"type": "array", "items": {"type": "string"}},
            },
        }
    },
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # Starlette path, e.g. "/api/bookings/{id}"
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    body_required: bool = True  # False: an empty body means the model's defaults
    query: type[BaseModel] | None = None
    ok: int = 200
    ok_media: str = "application/json"
    ok_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    errors: tuple[int, ...] = ()
    auth: Auth = "none"
    headers: tuple[tuple[str, str], ...] = ()  # (name, description) of optional request headers
    rate_limited: bool = True
    in_schema: bool = True

    def openapi_path(self) -> str:
        return _PARAM.sub(lambda m: "{" + m.group(1) + "}", self.path)

    def path_params(self) -> list[str]:
        return _PARAM.findall(self.path)


def _model_schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(by_alias=True)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        prop.pop("title", None)
        params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return params


def _status_set(endpoint: Endpoint) -> list[int]:
    statuses = set(endpoint.errors) | {400, 413, 422, 429, 500, 503}
    if endpoint.body is None:
        statuses.discard(413)
    if not endpoint.rate_limited:
        statuses.discard(429)
    if endpoint.auth in ("user", "clinic", "admin"):
        statuses |= {401, 403}
    if endpoint.auth == "optional":
        statuses |= {401}
    if endpoint.path_params():
        statuses.add(404)
    statuses.add(503)  # every endpoint may meet a region that is recovering
    return sorted(statuses)


def build_document(
    endpoints: Iterable[Endpoint], *, title: str = "tandtid", version: str = "0.1.0"
) -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        if not ep.in_schema:
            continue
        op: dict[str, Any] = {
            "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
            "summary": ep.summary,
            "tags": [ep.tag],
        }
        params: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,80}$"},
            }
            for name in ep.path_params()
        ]
        if ep.query is not None:
            params.extend(_query_parameters(ep.query))
        params.extend(
            {
                "name": name,
                "in": "header",
                "required": False,
                "description": desc,
                "schema": {"type": "string", "maxLength": 200},
            }
            for name, desc in ep.headers
        )
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {
                "required": ep.body_required,
                "content": {"application/json": {"schema": _model_schema(ep.body, components)}},
            }
        responses: dict[str, Any] = {}
        if ep.ok == 204:
            responses["204"] = {"description": "done"}
        else:
            responses[str(ep.ok)] = {"description": "ok", "content": {ep.ok_media: {"schema": ep.ok_schema}}}
        for status in _status_set(ep):
            responses[str(status)] = {
                "description": ERROR_STATUSES.get(status, "error"),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        op["responses"] = responses
        if ep.auth in ("user", "admin", "clinic"):
            op["security"] = [{"bearer": []}, {"cookie": []}]
        paths.setdefault(ep.openapi_path(), {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Real-time dental appointment booking for Sweden. See docs/API.md.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a session token from /api/auth/login, or a clinic API key",
                },
                "cookie": {"type": "apiKey", "in": "cookie", "name": "tandtid_session"},
            },
        },
    }
