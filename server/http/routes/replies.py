"""Successful replies: orjson-encoded JSON (fast, and it refuses NaN rather than emitting it).

A reply that carries a secret the server keeps only as a hash (a new clinic key, a password it
made, a webhook's signing secret) is ``shown_once``: 201, the secret beside the created thing's
view, and ``Cache-Control: no-store`` on the reply itself, whatever the edge adds, because this
reply is the only place the secret is ever seen.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

NO_STORE = {"Cache-Control": "no-store"}  # private answers: no cache on the way may keep them


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


def shown_once(view: dict[str, Any], secret: str, field: str = "secret") -> Response:
    """201 with ``view`` and the secret under ``field``; the caller must keep only its hash."""
    return json_response({**view, field: secret}, status=201, headers=NO_STORE)


def no_content() -> Response:
    return Response(status_code=204)
