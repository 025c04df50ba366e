"""Fixtures and assertions for the HTTP tests; the in-thread server itself is ``tests.support.live_server``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live_server import LiveServer
from tests.support.redis_server import RedisServer
from tests.support.stores import STORE_KINDS, StoreBackend


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error_shape(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    error = body["error"]
    assert set(error) >= {"code", "message", "request_id"}, body
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, body
    return error


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("live")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """One real redis-server for a test module's store tests (each test starts from FLUSHALL)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=STORE_KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    """Where a store under test keeps its state: SQLite files in ``tmp_path``, or a real Redis."""
    if request.param == "sqlite":
        yield StoreBackend("sqlite", tmp_path / "data")
        return
    server: RedisServer = request.getfixturevalue("module_redis")
    found = StoreBackend("redis", tmp_path / "data", server.url)
    found.flush()
    yield found


@pytest.fixture(scope="module", params=STORE_KINDS)
def live_each_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The live server with its stores (and journal) in SQLite files, then all in a real Redis
    (``--redis``): a module that wants its tests run on both takes this as its ``live``."""
    redis_url = request.getfixturevalue("module_redis").url if request.param == "redis" else None
    server = LiveServer(tmp_path_factory.mktemp("live"), redis_url=redis_url).start()
    try:
        yield server
    finally:
        server.stop()
