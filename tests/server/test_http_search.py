"""Integration tests: clinic search over a live uvicorn (real Regions, FileJournal). Each region
answers at most ``limit`` rows, searched in the answer's order and stopping there; the answer
with a small limit must be the head of the answer with a large one, for every sort."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.live_server import LiveServer


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sort": "name"},
        {"service": "checkup", "from": "2026-12-07", "days": 3},
        {"sort": "earliest", "from": "2026-12-07"},
        {"near": "59.3,18.0"},
        {"near": "55.6,13.0", "service": "filling", "from": "2026-12-07"},
        {"has_free": "true", "sort": "name", "from": "2026-12-07"},
        {"sort": "distance"},  # without near: by name
    ],
)
async def test_a_small_limit_is_the_head_of_the_full_answer(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    full = (await client.get("/api/clinics", params={**params, "limit": 500})).json()
    assert len(full) >= 3
    for limit in (1, 2, 3):
        head = (await client.get("/api/clinics", params={**params, "limit": limit})).json()
        assert head == full[:limit]
    if params.get("sort") in ("name", "distance") and "near" not in params:
        assert [r["name"] for r in full] == sorted(r["name"] for r in full)
