"""Integration test: the live hub against a model of its clients, over many random steps.

Real uvicorn, real region actor over a MemoryJournal (which can fail an append on demand, so
the actor really drops and reloads its state), real ``websockets`` clients. Each client keeps
what a browser keeps: per topic the last ``seq`` and the view rebuilt from the snapshot and
the diffs since. After every step, once the hub is quiet, every client must

- have seen consecutive ``seq`` on each topic, except where a snapshot restarted it (a
  resubscribe, or a resync after a reload), and never a ``seq`` going back;
- hold exactly what a fresh snapshot of the same range shows now, at the topic's current ``seq``.

Steps: book, cancel (by the clinic: the cells go to BUFFER), subscribe (random range, JSON or
msgpack), unsubscribe, and a failed journal append (the actor answers 503, reloads, and the hub
resyncs every subscriber of the region).
"""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from engine.commands import Book, Cancel, Party
from engine.errors import Refused
from persistence.memory_journal import MemoryJournal
from server.live.topics import DEFAULT_SERVICE, parse_topic, snapshot_data
from server.regions.actor import Unavailable
from tests.server.test_hub import Live, hub_served, recv, send
from tests.support.catalog import FIRST_DAY, NOW
from tests.support.waiting import eventually

TOPICS = ("region:AB", "clinic:AB-c1", "clinic:AB-c2")
RESOURCES = ("AB-c1-r1", "AB-c1-r2", "AB-c2-r1", "AB-c2-r2", "AB-c3-r2")  # AB-c3-r1: the failing appends
DAYS = 5  # opened by setup_commands
STEPS = 60


class ModelClient:
    """What a client knows: per topic its range, last seq and the view rebuilt from frames."""

    def __init__(self, ws: ClientConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.ranges: dict[str, tuple[int, int]] = {}  # topic -> (first day, days)
        self.seq: dict[str, int] = {}
        self.views: dict[str, dict[str, Any]] = {}

    def apply(self, frame: dict[str, Any]) -> None:
        topic = frame["topic"]
        if topic not in self.ranges:  # unsubscribed: a frame queued before that may still come
            return
        if frame["type"] == "snapshot":
            assert frame["seq"] >= self.seq.get(topic, 0), (self.name, topic, frame["seq"], self.seq)
            self.seq[topic] = frame["seq"]
            self.views[topic] = frame["data"]
            return
        assert frame["type"] == "diff", frame
        if topic not in self.seq:
            return  # a diff before our snapshot: the snapshot will cover it
        assert frame["seq"] == self.seq[topic] + 1, (self.name, topic, frame["seq"], self.seq[topic])
        self.seq[topic] = frame["seq"]
        view = self.views[topic]
        for item in frame["data"].get("counts", ()):
            clinic, day, free, starts = item
            offset = (date.fromisoformat(day) - date.fromisoformat(view["from"])).days
            if clinic in view["clinics"] and 0 <= offset < view["days"]:
                view["clinics"][clinic][offset] = free
                view["starts"][clinic][offset] = starts.get(view["service"], 0)
        for item in frame["data"].get("cells", ()):
            resource, day, first, n, state = item
            rows = view["resources"].get(resource, {})
            if day in rows:
                row = rows[day]
                rows[day] = row[:first] + str(state) * n + row[first + n :]

    async def drain(self) -> None:
        """Read until the pong of a ping sent now: everything the hub queued before it is applied."""
        await send(self.ws, {"op": "ping"})
        while (frame := await recv(self.ws)) != {"type": "pong"}:
            assert frame["type"] in ("snapshot", "diff"), frame
            self.apply(frame)


def iso(day: int) -> str:
    return date.fromordinal(day).isoformat()


async def quiet(live: Live) -> None:
    """No resync waiting, nothing queued, no flush pending: what the clients read next is all there is."""

    def settled() -> bool:
        hub = live.hub
        return not hub.fanout._pending and all(
            not c.queue and not c.resync_pending and not any(s.resync for s in c.subs.values())
            for c in hub.connections
        )

    await eventually(settled, what="the hub to settle")


async def check(live: Live, clients: list[ModelClient]) -> None:
    await quiet(live)
    for client in clients:
        await client.drain()
    for client in clients:
        for topic, (first, days) in client.ranges.items():
            name = parse_topic(topic)
            fresh = await live.regions.query(
                "AB", lambda s, n=name, f=first, d=days: snapshot_data(s, n, f, d, DEFAULT_SERVICE, NOW)
            )
            assert client.views[topic] == _plain(fresh), (client.name, topic)
            assert client.seq[topic] == live.hub.topics[topic].seq, (client.name, topic)


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """Snapshot data as it looks after a JSON round trip (tuples -> lists)."""
    import orjson

    plain: dict[str, Any] = orjson.loads(orjson.dumps(data))
    return plain


@pytest.mark.parametrize("protocol", ["direct", "asgi"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_clients_rebuild_exactly_the_servers_state_from_gapless_sequences(
    tmp_path: Path, protocol: str, seed: int
) -> None:
    rng = random.Random(seed)
    journal = MemoryJournal()
    async with (
        hub_served(tmp_path, journal, protocol, retry_backoff_s=(0.01, 0.05)) as live,
        connect(live.url) as a,
        connect(live.url + "?encoding=msgpack") as b,
        connect(live.url) as c,
    ):
        clients = [ModelClient(a, "a"), ModelClient(b, "b:msgpack"), ModelClient(c, "c")]
        booked: list[tuple[str, str]] = []  # (booking id, clinic)
        counter = 0
        for _step in range(STEPS):
            roll = rng.random()
            if roll < 0.4:
                counter += 1
                resource = rng.choice(RESOURCES)
                booking_id = f"AB-m{counter}"
                day = FIRST_DAY + rng.randrange(DAYS)
                cell = rng.choice([*range(32, 46), *range(52, 66)])
                try:
                    await live.regions.submit(Book(booking_id, f"p{counter}", resource, "checkup", day, cell))
                    booked.append((booking_id, resource.rsplit("-", 1)[0]))
                except Refused:
                    pass  # taken or outside the hours: refused changes nothing
            elif roll < 0.55 and booked:
                booking_id, clinic = booked.pop(rng.randrange(len(booked)))
                await live.regions.submit(Cancel(booking_id, Party.CLINIC, clinic))
            elif roll < 0.8:
                client = rng.choice(clients)
                topic = rng.choice(TOPICS)
                first = FIRST_DAY + rng.randrange(DAYS)
                days = rng.randint(1, DAYS)
                if topic not in client.ranges and len(client.ranges) >= 3:
                    continue  # the fixture's hub allows three per connection
                await client.drain()  # frames of the old range are applied before the range changes
                client.ranges[topic] = (first, days)
                client.seq.pop(topic, None)
                await send(client.ws, {"op": "subscribe", "topic": topic, "from": iso(first), "days": days})
            elif roll < 0.92:
                client = rng.choice(clients)
                if client.ranges:
                    topic = rng.choice(sorted(client.ranges))
                    await send(client.ws, {"op": "unsubscribe", "topic": topic})
                    del client.ranges[topic]
                    client.seq.pop(topic, None)
                    client.views.pop(topic, None)
            else:
                journal.fail_next_append("AB")
                counter += 1
                with pytest.raises(Unavailable):  # the batch is answered 503; the actor reloads
                    await live.regions.submit(
                        Book(f"AB-m{counter}", "p", "AB-c3-r1", "checkup", FIRST_DAY + 4, 32)
                    )
                await eventually(lambda: live.regions.actors["AB"].ready, what="the region to reload")
            await check(live, clients)
        assert sum(len(client.ranges) for client in clients) > 0
