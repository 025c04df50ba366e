"""Two real ``tandtid serve --redis URL --node NAME`` processes: the owner of region AB is
SIGSTOPped past its lease, the other node takes AB and serves it; the old owner is SIGCONTed
and steps down (AB leaves its /ready's regions_owned, its replica follows the new owner; AB's
commands there are forwarded to the new owner).
Prints the measured unavailability of AB."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from engine.model import REGIONS
from loadtest.bench.failover import apart, double_booked, present_bookings
from persistence.redis_journal import region_key
from server.regions.lease import parse_lease
from tests.support.cluster import Cluster, free_times
from tests.support.redis_server import RedisServer
from tests.support.served import ServedProcess
from tests.support.waiting import eventually_sync, scaled

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
            taken_epoch = new.epoch
        finally:
            os.kill(owner.process.pid, signal.SIGCONT)

        # It steps down on its first round after waking: by the renewal refused, or, when the
        # freeze caught that round waiting for Redis (its read timed out on waking), by the
        # local deadline. Once both nodes are live again the regions are shared anew, and AB,
        # which ranks high for the woken node, may come back to it: under a NEWER lease.
        stepping_down = re.compile(
            r"(lease of region AB expired or was taken over|could not renew the lease of region AB in time)"
            r"; stepping down"
        )
        last_ready: dict[str, object] = {}

        def stepped_down() -> bool:
            last_ready.clear()
            last_ready.update(httpx.get(f"{owner.url}/ready", timeout=5).json())
            if last_ready["status"] != "ready" or not stepping_down.search(owner.output()):
                return False
            if "AB" not in last_ready["regions_owned"]:  # type: ignore[operator]
                return True  # a replica of AB
            now = parse_lease(store.get(region_key("AB", "lease")))
            return now is not None and now.node == owner_name and now.epoch > taken_epoch

        owner_name = "node-a" if owner is a else "node-b"
        try:
            eventually_sync(stepped_down, what="the woken node to step down from AB")
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}; its /ready said {last_ready}") from None
        assert httpx.get(f"{owner.url}/api/regions/AB/summary", timeout=5).status_code == 200
    finally:
        a.stop()
        b.stop()
        store.close()


def test_a_woken_stale_owner_acknowledges_nothing_it_cannot_keep_and_nothing_is_lost_or_doubled(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Split brain: bookings acknowledged by the owner of AB; the owner SIGSTOPped past its lease;
    the other node takes AB and acknowledges more; requests are queued on the frozen owner's socket
    (they reach its loop on waking, before or after it notices the lost lease); SIGCONT. Whatever
    the old owner answers 201 is kept (an append it tries under its old epoch is refused by the
    journal: then it answers 503 and stops writing AB), it steps down, and afterwards every
    acknowledged booking is present exactly once and no time is held twice."""
    cluster = Cluster(
        tmp_path,
        redis_server.url,
        ("node-a", "node-b"),
        patients=6,
        lease_ttl_ms=TTL_MS,
        env={"TANDTID_FORWARD_TIMEOUT_S": "2"},
    )
    try:
        cluster.start()
        owner = cluster.owner("AB")
        other = cluster.other_than(owner)
        times = apart(free_times(other.url, "AB", 80, per_clinic=20))[:18]
        assert len(times) == 18
        acked: list[str] = []

        def book(served: ServedProcess, slot: dict[str, str], token: str) -> httpx.Response:
            return httpx.post(
                f"{served.url}/api/bookings",
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
                json={**slot, "service": "checkup"},
                timeout=scaled(60),
            )

        for i, slot in enumerate(times[:3]):
            r = book(owner, slot, cluster.tokens[i])
            assert r.status_code == 201, r.text
            acked.append(r.json()["booking"]["id"])
        old = cluster.lease("AB")
        assert owner.process is not None
        os.kill(owner.process.pid, signal.SIGSTOP)
        try:
            eventually_sync(
                lambda: "AB" in cluster.writes(other), timeout=TAKEOVER_BOUND_S, what="the takeover"
            )
            new = cluster.lease("AB")
            assert old is not None and new is not None and new.epoch > old.epoch
            for i, slot in enumerate(times[3:6]):
                r = book(other, slot, cluster.tokens[i])
                assert r.status_code == 201, r.text
                acked.append(r.json()["booking"]["id"])
            # Requests to the frozen owner: the kernel queues them on its socket until it wakes.
            pool = concurrent.futures.ThreadPoolExecutor(12)
            queued = [
                pool.submit(book, owner, slot, cluster.tokens[i % len(cluster.tokens)])
                for i, slot in enumerate(times[6:])
            ]
            eventually_sync(
                lambda: waiting_connections(owner.port) >= len(queued),
                what="the requests to wait on the frozen owner's socket",
            )
        finally:
            os.kill(owner.process.pid, signal.SIGCONT)
        answers = [f.result() for f in queued]
        pool.shutdown()
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) <= {201, 503}, [r.text for r in answers]
        woken = [r.json()["booking"]["id"] for r in answers if r.status_code == 201]
        acked += woken
        eventually_sync(lambda: "AB" not in cluster.writes(owner), what="the woken node to step down from AB")
        refused = "stale epoch" in owner.output()
        print(
            f"\nsplit brain: the woken owner answered {statuses} to the requests queued while it was frozen;"
            f" an append of its refused by the journal: {refused}"
        )

        # Every list complete (no region missing), read where AB is written now and on the woken node.
        present = asyncio.run(present_bookings(other.url, cluster.tokens, complete_within_s=scaled(60)))
        lost = sorted(set(acked) - set(present))
        assert lost == [], f"lost {lost}: {len(set(lost) & set(woken))} answered 201 by the woken owner"
        assert len(acked) == len(set(acked))
        assert double_booked(present) == {}
        eventually_sync(  # the woken node's replicas catch up with the same bookings
            lambda: (
                asyncio.run(present_bookings(owner.url, cluster.tokens, complete_within_s=scaled(60)))
                == present
            ),
            what="the woken node to list the same bookings",
        )
    finally:
        cluster.stop()


def waiting_connections(port: int) -> int:
    """Connections the kernel accepted for the listening socket on ``port`` that the process has
    not taken yet (the LISTEN row's receive queue in /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return int(queues.split(":")[1], 16)
    return 0
