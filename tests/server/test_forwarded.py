"""Integration tests (a live uvicorn built like ``tandtid serve``): behind a proxy.

Every peer of a server behind nginx is nginx, so a per-address cap counted by peer would
count the proxy. With ``forwarded_allow_ips`` naming the proxy, the address in its
X-Forwarded-For is the client's; without it (the default) the header is ignored: a client
that talks to the server directly cannot choose its own address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.live_server import LiveServer


@pytest.fixture
def behind_proxy(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path, ws_max_connections_per_ip=1, forwarded_allow_ips=["127.0.0.1"]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def direct(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path, ws_max_connections_per_ip=1).start()
    try:
        yield server
    finally:
        server.stop()


def ws_url(live: LiveServer) -> str:
    return live.url.replace("http", "ws") + "/ws"


def forwarded(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_behind_a_named_proxy_the_cap_counts_each_client(behind_proxy: LiveServer) -> None:
    url = ws_url(behind_proxy)
    async with (
        connect(url, additional_headers=forwarded("198.51.100.7")),
        connect(url, additional_headers=forwarded("203.0.113.9")),  # another client gets in
    ):
        with pytest.raises(InvalidStatus) as refused:  # the same client again: over its cap
            async with connect(url, additional_headers=forwarded("198.51.100.7")):
                pass
        assert refused.value.response.status_code == 429


async def test_without_a_named_proxy_the_forwarded_header_is_ignored(direct: LiveServer) -> None:
    url = ws_url(direct)
    async with connect(url, additional_headers=forwarded("198.51.100.7")):
        with pytest.raises(InvalidStatus) as refused:  # a made-up address does not get around the cap
            async with connect(url, additional_headers=forwarded("203.0.113.9")):
                pass
        assert refused.value.response.status_code == 429
