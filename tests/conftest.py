"""Shared fixtures. The machinery lives in tests/support; keep this file small."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_cluster import RedisCluster3
from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, real redis-server (AOF, appendfsync always) for one test."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster3]:
    """A real three-master Redis Cluster, one per session (empty it with ``flush()`` per test)."""
    cluster = RedisCluster3().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sweden_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All of Sweden with 30% of the open times booked, seeded once per session by
    ``tandtid seed --scale sweden --booked 0.3`` (a snapshot per region; ~40 s on 2 cores). On
    with ``TANDTID_TEST_SWEDEN=1`` (what ``make test`` and so CI set), or set to a directory seeded
    before, which is then used as it is; a bare ``pytest`` skips it to stay quick. Serve a copy
    (``shutil.copytree``) when a test writes."""
    wanted = os.environ.get("TANDTID_TEST_SWEDEN", "")
    if not wanted:
        pytest.skip(
            "the Sweden-size fixture is off: TANDTID_TEST_SWEDEN=1 (as make test sets) or a seeded data dir"
        )
    if wanted != "1":
        return Path(wanted)
    data = tmp_path_factory.mktemp("sweden") / "data"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "seed",
            "--data",
            str(data),
            "--scale",
            "sweden",
            "--booked",
            "0.3",
        ],
        check=True,
        timeout=1800,
    )
    return data
