"""Successful replies: orjson-encoded JSON (fast, and it refuses NaN rather than emitting it)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


def no_content() -> Response:
    return Response(status_code=204)
