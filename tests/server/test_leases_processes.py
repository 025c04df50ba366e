"""Two real ``tandtid serve --redis URL --node NAME`` processes: the owner of region AB is
SIGSTOPped past its lease, the other node takes AB and serves it; the old owner is SIGCONTed
and steps down (AB leaves its /ready's regions_owned, its replica follows the new owner; AB's
commands there are forwarded to the new owner).
Prints the measured unavailability of AB."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis

from engine.model import REGIONS
from persistence.redis_journal import region_key
from server.regions.lease import parse_lease
from tests.support.redis_server import RedisServer
from tests.support.served import ServedProcess
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REGION_CODES = tuple(r.code for r in REGIONS)
TTL_MS = 2_000
TAKEOVER_BOUND_S = 10.0  # the failover bound: how long the test waits, never what it asserts


def test_a_frozen_owner_loses_its_regions_and_steps_down_when_it_wakes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {"TANDTID_LEASE_TTL_MS": str(TTL_MS), "TANDTID_RATE_PER_S": "0", "TANDTID_FORWARD_TIMEOUT_S": "1"}

    def node(name: str, *extra: str) -> ServedProcess:
        served = ServedProcess(tmp_path / name, env=env)
        served.args = ("--redis", redis_server.url, "--node", name, "--advertise", served.url, *extra)
        return served

    store = redis.Redis.from_url(redis_server.url)
    a = node("node-a", "--seed")
    b = node("node-b")
    try:
        a.start()
        b.start()

        def owners() -> dict[str, str]:
            leases = {code: parse_lease(store.get(region_key(code, "lease"))) for code in REGION_CODES}
            return {code: lease.node for code, lease in leases.items() if lease is not None}

        eventually_sync(
            lambda: sorted(list(owners().values()).count(n) for n in ("node-a", "node-b")) == [10, 11],
            what="the two nodes to split the regions",
        )
        owner, other = (a, b) if owners()["AB"] == "node-a" else (b, a)
        old = parse_lease(store.get(region_key("AB", "lease")))
        assert old is not None
        assert httpx.get(f"{owner.url}/api/regions/AB/summary").status_code == 200
        # The other node reads AB from its replica.
        assert httpx.get(f"{other.url}/api/regions/AB/summary").status_code == 200

        def writes_ab(served: ServedProcess) -> bool:
            return "AB" in httpx.get(f"{served.url}/ready", timeout=5).json()["regions_owned"]

        eventually_sync(lambda: writes_ab(owner) and not writes_ab(other), what="the owner to write AB")

        assert owner.process is not None
        os.kill(owner.process.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            eventually_sync(
                lambda: writes_ab(other),
                timeout=TAKEOVER_BOUND_S,
                interval=0.05,
                what="the other node to write AB",
            )
            print(
                f"\nAB not writable for {time.monotonic() - frozen_at:.2f} s after SIGSTOP (lease TTL {TTL_MS} ms)"
            )
            new = parse_lease(store.get(region_key("AB", "lease")))
            assert (
                new is not None
                and new.node == ("node-b" if owner is a else "node-a")
                and new.epoch > old.epoch
            )
        finally:
            os.kill(owner.process.pid, signal.SIGCONT)

        def stepped_down() -> bool:
            ready = httpx.get(f"{owner.url}/ready", timeout=5).json()
            return "AB" not in ready["regions_owned"] and ready["status"] == "ready"  # a replica again

        eventually_sync(stepped_down, what="the woken node to step down from AB")
        assert httpx.get(f"{owner.url}/api/regions/AB/summary", timeout=5).status_code == 200  # its replica
        # It steps down on its first round after waking: by the renewal refused, or, when the
        # freeze caught that round waiting for Redis (its read timed out on waking), by the
        # local deadline.
        assert re.search(
            r"(lease of region AB expired or was taken over|could not renew the lease of region AB in time)"
            r"; stepping down",
            owner.output(),
        )
    finally:
        a.stop()
        b.stop()
        store.close()
