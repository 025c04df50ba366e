"""Integration: failover under load. Two real ``tandtid serve --node`` processes on one real
redis-server behind a real nginx; clients book continuously through nginx (each booking with its
own Idempotency-Key, retried with it after a 503 or a broken connection, as a client should);
the owner of AB is SIGKILLed mid-load. Afterwards: no time is booked twice, no booking that got
a 201 is missing. Prints the window in which AB took no booking, and the counts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.http.idempotency import IN_FLIGHT_TTL_S
from tests.support.cluster import Cluster, free_times
from tests.support.nginx import Nginx
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually, scaled

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PATIENTS = 30
WORKERS = 12
KILL_AFTER = 40  # acknowledged bookings before the kill
# How long a client keeps retrying one booking (scaled): past IN_FLIGHT_TTL_S, the life of the
# Idempotency-Key claim a killed node was holding (until then its retries are "in progress").
RETRY_FOR_S = 2 * IN_FLIGHT_TTL_S


class Load:
    """Workers booking ``todo`` through ``base``; what each got is kept for the checks."""

    def __init__(self, base: str, tokens: list[str], todo: list[dict[str, str]]) -> None:
        self.base = base
        self.tokens = tokens
        self.todo = list(todo)
        self.acked: dict[str, tuple[str, dict[str, str], str]] = {}  # booking id -> (region, slot, token)
        self.acked_at: list[tuple[float, float, str]] = []  # (attempt sent, answered: monotonic; region)
        self.refused: dict[str, int] = defaultdict(int)
        self.retries = 0
        self.in_progress = 0  # retries answered "in progress": a twin's claim still held
        self.given_up = 0
        self._patient: dict[str, int] = defaultdict(int)  # clinic -> next patient

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=scaled(30)) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(WORKERS)))

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while self.todo:
            slot = self.todo.pop()
            n = self._patient[slot["clinic"]]
            self._patient[slot["clinic"]] += 1
            await self._book(client, slot, self.tokens[n % len(self.tokens)])

    async def _book(self, client: httpx.AsyncClient, slot: dict[str, str], token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
        deadline = time.monotonic() + scaled(RETRY_FOR_S)
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                r = await client.post(
                    f"{self.base}/api/bookings", headers=headers, json={**slot, "service": "checkup"}
                )
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code == 201:
                booking = r.json()["booking"]
                region = booking["id"].split("-")[0]
                self.acked[booking["id"]] = (region, slot, token)
                self.acked_at.append((sent, time.monotonic(), region))
                return
            if r is not None and r.status_code not in (502, 503, 504):
                code = r.json().get("error", {}).get("code", str(r.status_code))
                if code != "IDEMPOTENCY_MISMATCH":
                    self.refused[code] += 1
                    return
                self.in_progress += 1  # its twin still in flight (or its node died holding the claim)
            self.retries += 1
            await asyncio.sleep(0.1)
        self.given_up += 1


async def test_sigkill_of_an_owner_under_load_through_nginx_loses_and_doubles_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    cluster = Cluster(
        tmp_path,
        redis_server.url,
        ("node-a", "node-b"),
        patients=PATIENTS,
        env={"TANDTID_FORWARD_TIMEOUT_S": "2"},
        lease_ttl_ms=2_000,
    )
    try:
        await asyncio.to_thread(cluster.start)
        victim = cluster.owner("AB")
        survivor = cluster.other_than(victim)
        theirs = cluster.region_owned_by(survivor)
        with Nginx(tmp_path / "nginx", [f"127.0.0.1:{s.port}" for s in cluster.nodes.values()]) as nginx:
            # At most PATIENTS per clinic: every patient books a clinic at most once.
            todo = await asyncio.to_thread(
                free_times, nginx.url, "AB", 160, per_clinic=PATIENTS
            ) + await asyncio.to_thread(free_times, nginx.url, theirs, 80, per_clinic=PATIENTS)
            load = Load(nginx.url, cluster.tokens, sorted(todo, key=lambda s: s["start"]))
            running = asyncio.create_task(load.run())
            await eventually(
                lambda: len(load.acked) >= KILL_AFTER or running.done(),
                timeout=60,
                what="bookings before the kill",
            )
            assert victim.process is not None
            lease_before = cluster.lease("AB")
            assert lease_before is not None and cluster.nodes[lease_before.node] is victim
            os.kill(victim.process.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            await running
            lease_after = cluster.lease("AB")
            assert lease_after is not None and cluster.nodes[lease_after.node] is survivor
            assert lease_after.epoch > lease_before.epoch

            # Checks, through nginx (the survivor's replicas and writers).
            # The window: from the kill to the first AB booking acknowledged for a request sent after it.
            before = [at for _, at, region in load.acked_at if region == "AB" and at < killed_at]
            after = [at for sent, at, region in load.acked_at if region == "AB" and sent >= killed_at]
            window = (min(after) - killed_at) if after else float("nan")
            present: dict[str, dict[str, Any]] = {}
            async with httpx.AsyncClient(timeout=30) as client:
                for token in cluster.tokens:
                    r = await client.get(
                        f"{nginx.url}/api/bookings", headers={"Authorization": f"Bearer {token}"}
                    )
                    assert r.status_code == 200, r.text
                    for booking in r.json()["bookings"]:
                        if booking["status"] == "booked":
                            present[booking["id"]] = booking
            lost = sorted(set(load.acked) - set(present))
            cells: dict[tuple[str, str], list[str]] = defaultdict(list)
            for booking in present.values():
                cells[(booking["resource"], booking["start"])].append(booking["id"])
            double = {k: v for k, v in cells.items() if len(v) > 1}
            print(
                f"\nfailover through nginx: {len(load.acked)} acknowledged ({len(before)} in AB before the kill,"
                f" {len(after)} sent after it), {len(present)} present, {len(lost)} acknowledged but lost,"
                f" {len(double)} times booked twice; refused {dict(load.refused)}, {load.retries} retries"
                f" ({load.in_progress} of them 'in progress'),"
                f" {load.given_up} given up; AB unavailable for {window:.2f} s after SIGKILL (lease TTL 2 s)"
            )
            assert not lost, lost
            assert not double, double
            assert after, "AB never took a booking again after the kill"
            assert load.given_up == 0
            assert survivor.process is not None and survivor.process.poll() is None
    finally:
        await asyncio.to_thread(cluster.stop)
