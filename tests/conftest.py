"""Shared fixtures. The machinery lives in tests/support; keep this file small."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, real redis-server (AOF, appendfsync always) for one test."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
