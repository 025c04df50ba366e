"""``python -m loadtest.bench failover``: the owner of AB SIGKILLed under booking load, three nodes behind nginx.

Starts a local cluster (``loadtest.cluster``: redis-server with AOF always, ``--nodes`` nodes,
nginx in front; ``--scale`` seeded), registers patients and collects free times through nginx
in every region the owner of AB writes, and a few in the others. ``--workers`` clients book
them continuously through nginx, each booking with its own Idempotency-Key and retried with the
same key after a 502/503/504, a broken connection or an "in progress" answer (as a client
should), for up to ``10 s + 2 x IN_FLIGHT_TTL_S`` (past a lease TTL and the life of a claim the
killed node held). WebSocket
subscribers to ``region:AB`` on every other node watch. After ``--kill-after`` acknowledged
bookings the owner of AB is SIGKILLed; the load goes on for ``--after-kill-s`` seconds.

Prints one JSON line: ``unavailable_s``, the longest time any of the killed node's regions
took no booking (from the kill to the first 201 in that region for a request sent after it;
per region in ``unavailable_s_by_region``), the counts ``acknowledged`` (201s), ``present``
(of those, found afterwards in the patients' booking lists through nginx), ``lost`` and
``double`` (times held by two bookings), what the subscribers saw (sequence gaps, resyncs, the
first booking after the kill), the lease TTL and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from loadtest.bench.restart import load_avg
from loadtest.cluster import LocalCluster, Node, free_times
from server.http.idempotency import IN_FLIGHT_TTL_S

RETRY_FOR_S = 10 + 2 * IN_FLIGHT_TTL_S  # past the lease TTL and a dead node's claim (3 s, renewed)
RETRY_EVERY_S = 0.1
UNAVAILABLE = (502, 503, 504)


@dataclass
class Acked:
    booking: dict[str, Any]
    token: str
    sent: float  # monotonic: the attempt that got the 201
    answered: float


@dataclass
class BookingLoad:
    """Workers booking ``todo`` (clinic, resource, start) through ``base`` until it is empty or
    ``stop_at`` (monotonic) has passed; what each attempt got is kept for the checks."""

    base: str
    tokens: list[str]
    todo: list[dict[str, str]]
    workers: int = 12
    retry_for_s: float = RETRY_FOR_S
    stop_at: float = float("inf")
    acked: list[Acked] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    retries: int = 0
    unavailable: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # "AB 503" -> count
    in_progress: int = 0  # retries answered "in progress": the claim of a twin still held
    given_up: int = 0
    _patient: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # clinic -> next patient

    async def run(self, timeout_s: float = 30) -> None:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.workers)))

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while self.todo and time.monotonic() < self.stop_at:
            slot = self.todo.pop(0)
            # the n-th booking at a clinic by the n-th patient: nobody books a clinic twice
            n = self._patient[slot["clinic"]]
            self._patient[slot["clinic"]] += 1
            await self._book(client, slot, self.tokens[n % len(self.tokens)])

    async def _book(self, client: httpx.AsyncClient, slot: dict[str, str], token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
        deadline = time.monotonic() + self.retry_for_s
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                r = await client.post(
                    f"{self.base}/api/bookings", headers=headers, json={**slot, "service": "checkup"}
                )
            except httpx.HTTPError as exc:
                r = None
                self.unavailable[f"{slot['clinic'].split('-')[0]} {type(exc).__name__}"] += 1
            if r is not None and r.status_code == 201:
                self.acked.append(Acked(r.json()["booking"], token, sent, time.monotonic()))
                return
            if r is not None and r.status_code not in UNAVAILABLE:
                code = r.json().get("error", {}).get("code", str(r.status_code))
                if code != "IDEMPOTENCY_MISMATCH":
                    self.refused[code] += 1
                    return
                self.in_progress += 1  # its twin still in flight (or its node died holding the claim)
            if r is not None and r.status_code in UNAVAILABLE:
                self.unavailable[f"{slot['clinic'].split('-')[0]} {r.status_code}"] += 1
            self.retries += 1
            await asyncio.sleep(RETRY_EVERY_S)
        self.given_up += 1


@dataclass
class Subscriber:
    """One WebSocket client on one node, subscribed to ``topic``; every message with its arrival."""

    node: str
    url: str  # ws://host:port/ws
    topic: str
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    error: str = ""

    async def run(self, subscribed: asyncio.Event) -> None:
        try:
            async with connect(self.url, open_timeout=30, ping_interval=None) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "topic": self.topic, "days": 15}))
                await self._read(ws, subscribed)
        except Exception as exc:  # noqa: BLE001 - what ended it is reported, the run goes on
            self.error = f"{type(exc).__name__}: {exc}"
            subscribed.set()

    async def _read(self, ws: ClientConnection, subscribed: asyncio.Event) -> None:
        async for raw in ws:
            message: dict[str, Any] = orjson.loads(raw)
            self.messages.append((time.monotonic(), message))
            if message.get("type") == "snapshot":
                subscribed.set()

    def report(self, killed_at: float, after: Acked | None) -> dict[str, Any]:
        """Sequence gaps, resyncs (a snapshot after the first), and whether a diff that arrived
        after the kill shows ``after`` (its clinic and day in a region diff)."""
        gaps = resyncs = diffs = 0
        seq: int | None = None
        for _, message in self.messages:
            if message.get("type") == "snapshot":
                resyncs += seq is not None
                seq = message["seq"]
            elif message.get("type") == "diff":
                diffs += 1
                gaps += seq is None or message["seq"] != seq + 1
                seq = message["seq"]
        seen = after is not None and any(
            at >= after.sent
            and message.get("type") == "diff"
            and [after.booking["clinic"], after.booking["start"][:10]]
            in [c[:2] for c in message["data"]["counts"]]
            for at, message in self.messages
            if at >= killed_at
        )
        return {
            "node": self.node,
            "diffs": diffs,
            "seq_gaps": gaps,
            "resyncs": resyncs,
            "saw_booking_after_kill": seen,
            **({"error": self.error} if self.error else {}),
        }


async def present_bookings(
    base: str, tokens: list[str], *, complete_within_s: float = 60
) -> dict[str, dict[str, Any]]:
    """Every booked booking of these patients, by id, as ``base`` answers: each list asked for
    again while it names ``missing_regions`` (a region still loading there answers later)."""
    present: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for token in tokens:
            deadline = time.monotonic() + complete_within_s
            while True:
                r = await client.get(f"{base}/api/bookings", headers={"Authorization": f"Bearer {token}"})
                r.raise_for_status()
                body = r.json()
                if not body.get("missing_regions"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{base} never answered for {body['missing_regions']}")
                await asyncio.sleep(0.2)
            for booking in body["bookings"]:
                if booking["status"] == "booked":
                    present[booking["id"]] = booking
    return present


def double_booked(present: dict[str, dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(resource, start) -> the ids of the bookings holding it, where more than one does."""
    cells: dict[tuple[str, str], list[str]] = defaultdict(list)
    for booking in present.values():
        cells[(booking["resource"], booking["start"])].append(booking["id"])
    return {k: v for k, v in cells.items() if len(v) > 1}


def unavailable_s(acked: list[Acked], regions: list[str], killed_at: float) -> dict[str, float | None]:
    """Per region: from the kill to the first 201 for a request sent after it (None: none came)."""
    out: dict[str, float | None] = {}
    for region in regions:
        after = [a.answered for a in acked if a.booking["id"].split("-")[0] == region and a.sent >= killed_at]
        out[region] = round(min(after) - killed_at, 2) if after else None
    return out


async def register(base: str, count: int) -> list[str]:
    """``count`` new patients through ``base``: their tokens."""
    run = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(timeout=60) as client:
        tokens = []
        for i in range(count):
            r = await client.post(
                f"{base}/api/auth/register",
                json={
                    "email": f"failover-{run}-{i}@bench.test",
                    "password": "bench-password",
                    "name": "Bench",
                },
            )
            r.raise_for_status()
            tokens.append(r.json()["token"])
    return tokens


def apart(times: list[dict[str, str]], minutes: int = 60) -> list[dict[str, str]]:
    """Of ``times``, those at least ``minutes`` after the last one kept on the same resource:
    no two of them overlap (a check-up is shorter), so none is refused as taken by another."""
    kept: dict[str, datetime] = {}
    out = []
    for t in sorted(times, key=lambda t: (t["resource"], t["start"])):
        start = datetime.fromisoformat(t["start"])
        if t["resource"] not in kept or start - kept[t["resource"]] >= timedelta(minutes=minutes):
            kept[t["resource"]] = start
            out.append(t)
    return out


def interleaved(per_region: dict[str, list[dict[str, str]]]) -> list[dict[str, str]]:
    """One time of each region in turn: every region is asked for all the time."""
    lists = [sorted(times, key=lambda t: t["start"]) for times in per_region.values()]
    out = []
    for i in range(max((len(t) for t in lists), default=0)):
        out += [times[i] for times in lists if i < len(times)]
    return out


async def measure(
    cluster: LocalCluster,
    *,
    patients: int = 30,
    workers: int = 12,
    kill_after: int = 40,
    after_kill_s: float = 15.0,
    per_region: int = 60,
    region: str = "AB",
    retry_for_s: float = RETRY_FOR_S,
) -> dict[str, Any]:
    """The failover of ``region``'s owner under load through ``cluster``'s nginx; the figures."""
    base = cluster.url
    victim = cluster.node_of(region)
    owners = cluster.owners()
    theirs = sorted(c for c, n in owners.items() if n == victim.name)
    others = sorted(c for c, n in owners.items() if n != victim.name)[:3]
    tokens = await register(base, patients)
    found = {
        code: apart(
            await asyncio.to_thread(
                free_times, base, code, 4 * per_region * (3 if code == region else 1), per_clinic=4 * patients
            )
        )[: per_region * (3 if code == region else 1)]
        for code in theirs + others
    }
    survivors: list[Node] = [n for n in cluster.nodes if n is not victim and n.alive()]
    subscribers = [
        Subscriber(n.name, n.url.replace("http://", "ws://") + "/ws", f"region:{region}") for n in survivors
    ]
    events = [asyncio.Event() for _ in subscribers]
    watching = [asyncio.create_task(s.run(e)) for s, e in zip(subscribers, events, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
    load = BookingLoad(base, tokens, interleaved(found), workers=workers, retry_for_s=retry_for_s)
    running = asyncio.create_task(load.run())
    while len(load.acked) < kill_after and not running.done():  # noqa: ASYNC110 - counted by the workers
        await asyncio.sleep(0.05)
    lease_before = cluster.lease(region)
    assert victim.process is not None
    os.kill(victim.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    load.stop_at = killed_at + after_kill_s  # no new bookings after this; retries run their course
    await running
    victim.process.wait(timeout=10)
    lease_after = cluster.lease(region)
    windows = unavailable_s(load.acked, theirs, killed_at)
    first_after = min(
        (a for a in load.acked if a.booking["id"].split("-")[0] == region and a.sent >= killed_at),
        key=lambda a: a.answered,
        default=None,
    )
    # the subscribers: until each has the diff of the first booking after the kill (10 s at most)
    deadline = time.monotonic() + 10
    while first_after is not None and time.monotonic() < deadline:
        if all(s.report(killed_at, first_after)["saw_booking_after_kill"] for s in subscribers):
            break
        await asyncio.sleep(0.1)
    for task in watching:
        task.cancel()
    await asyncio.gather(*watching, return_exceptions=True)
    present = await present_bookings(base, tokens)
    acked_ids = {a.booking["id"] for a in load.acked}
    known = [w for w in windows.values() if w is not None]
    return {
        "killed": victim.name,
        "regions_of_killed": theirs,
        "new_owner": lease_after.node if lease_after else None,
        "epoch": [lease_before.epoch if lease_before else None, lease_after.epoch if lease_after else None],
        "unavailable_s": max(known) if len(known) == len(windows) else None,
        "unavailable_s_by_region": windows,
        "acknowledged": len(acked_ids),
        "present": len(acked_ids & set(present)),
        "lost": len(acked_ids - set(present)),
        "double": len(double_booked(present)),
        "acknowledged_before_kill": sum(a.answered < killed_at for a in load.acked),
        "refused": dict(load.refused),
        "retries": load.retries,
        "in_progress_answers": load.in_progress,
        "given_up": load.given_up,
        "unavailable_answers": dict(sorted(load.unavailable.items())),
        "subscribers": [s.report(killed_at, first_after) for s in subscribers],
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench failover")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--scale", default="small", help="seed scale: demo, small, sweden")
    parser.add_argument("--lease-ttl-ms", type=int, default=2000)
    parser.add_argument("--patients", type=int, default=30)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--kill-after", type=int, default=40, help="acknowledged bookings before the kill")
    parser.add_argument("--after-kill-s", type=float, default=15.0, help="new bookings this long after it")
    parser.add_argument("--keep", default=None, help="run the cluster in this directory and leave it (logs)")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    load_start = load_avg()
    with tempfile.TemporaryDirectory(prefix="tandtid-bench-failover-") as scratch:
        root = args.keep or scratch
        cluster = LocalCluster(
            Path(root),
            args.nodes,
            env={
                "TANDTID_LEASE_TTL_MS": str(args.lease_ttl_ms),
                "TANDTID_RATE_PER_S": "0",
                "TANDTID_FORWARD_TIMEOUT_S": "2",
            },
            log_level="warning",
        )
        try:
            cluster.start(scale=args.scale)
            figures = asyncio.run(
                measure(
                    cluster,
                    patients=args.patients,
                    workers=args.workers,
                    kill_after=args.kill_after,
                    after_kill_s=args.after_kill_s,
                )
            )
        finally:
            cluster.stop()
    result = {
        "bench": "failover",
        "nodes": args.nodes,
        "scale": args.scale,
        "lease_ttl_ms": args.lease_ttl_ms,
        **figures,
        "load_avg": [load_start, load_avg()],
    }
    print(json.dumps(result), flush=True)
    return result
