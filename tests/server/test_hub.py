"""Integration tests: the live hub over a real uvicorn, real sockets and real region actors.

Each test starts uvicorn in-process on a free port serving a tiny Starlette app with the hub
at /ws, backed by the lead's ``Regions`` over a FileJournal in a temp dir, seeded with a few
clinics through ``regions.submit``. Clients are the ``websockets`` library (and one raw
socket that stops reading). Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
import uvicorn
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from engine.calendar import date_of
from engine.cells import BOOKED, FREE
from engine.commands import Book, Cancel, Party
from persistence.file_journal import FileJournal
from persistence.journal import Journal
from persistence.memory_journal import MemoryJournal
from server.identity.accounts import AccountStore, Role
from server.identity.auth import SessionSigner, patient_of, start_session
from server.live.hub import Hub
from server.live.protocol import UVICORN_WS_OPTIONS
from server.regions.actor import Lifecycle, Reloaded, Unavailable
from server.regions.routing import Regions
from server.settings import Settings
from tests.support import free_port
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands
from tests.support.waiting import eventually, scaled

TIMEOUT = scaled(10.0)  # how long a frame may take to arrive (TANDTID_TEST_TIMEOUT_FACTOR scales it)
FIRST = date_of(FIRST_DAY).isoformat()
SECOND = date_of(FIRST_DAY + 1).isoformat()
ORIGIN = "http://localhost:8000"


@dataclass
class Live:
    regions: Regions
    hub: Hub
    settings: Settings
    url: str
    accounts: AccountStore
    signer: SessionSigner
    direct: bool = False


@contextlib.asynccontextmanager
async def hub_served(
    tmp_path: Path, journal: Journal, protocol: str, **actor_options: Any
) -> AsyncIterator[Live]:
    """``direct``: the hub's own uvicorn protocol (pre-framed writes straight to sockets, as
    ``tandtid serve`` runs); ``asgi``: uvicorn's stock protocol, every frame through ASGI send."""
    settings = Settings(
        data_dir=tmp_path, secret_key=b"x" * 32, allowed_origins=[ORIGIN], ws_send_buffer=8, max_ws_frame=4096
    )
    await journal.open()
    regions = Regions(journal, clock=lambda: NOW, regions=("AB",), **actor_options)
    await regions.start()
    for command in setup_commands("AB", clinics=3, resources=2, days=5):
        await regions.submit(command)
    hub = Hub(
        regions,
        settings,
        identify=patient_of,
        max_subscriptions=3,
        stall_s=1.0,
        sweep_s=0.1,
        close_timeout_s=2.0,
    )
    hub.start()
    app = Starlette(routes=[WebSocketRoute("/ws", hub.endpoint)])
    accounts = AccountStore(tmp_path / "accounts.sqlite3")
    app.state.accounts = accounts
    app.state.signer = SessionSigner(settings.secret_key)
    port = free_port()
    ws_options: dict[str, Any] = UVICORN_WS_OPTIONS if protocol == "direct" else {"ws": "websockets-sansio"}
    config = uvicorn.Config(app, port=port, log_level="warning", lifespan="off", **ws_options)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, what="uvicorn to start")
    try:
        yield Live(
            regions,
            hub,
            settings,
            f"ws://127.0.0.1:{port}/ws",
            accounts,
            app.state.signer,
            protocol == "direct",
        )
    finally:
        await hub.stop()
        server.should_exit = True
        await serving
        await regions.stop()
        await journal.close()
        accounts.close()


@pytest.fixture(params=["direct", "asgi"])
async def live(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Live]:
    async with hub_served(tmp_path, FileJournal(tmp_path / "data"), request.param) as served:
        yield served


async def recv(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
    message: dict[str, Any] = msgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
    return message


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def subscribe(ws: ClientConnection, topic: str, days: int = 5) -> dict[str, Any]:
    await send(ws, {"op": "subscribe", "topic": topic, "from": FIRST, "days": days})
    snapshot = await recv(ws)
    assert snapshot["type"] == "snapshot" and snapshot["topic"] == topic, snapshot
    return snapshot


def book(n: int, resource: str = "AB-c1-r1", day: int = FIRST_DAY, cell: int = CELL_0900) -> Book:
    return Book(
        booking_id=f"AB-b{n}",
        patient=f"opaque-patient-{n}",
        resource=resource,
        service="checkup",
        day=day,
        cell=cell,
    )


async def test_snapshots_then_one_diff_per_topic_per_batch(live: Live) -> None:
    async with connect(live.url) as ws:
        region = await subscribe(ws, "region:AB")
        clinic = await subscribe(ws, "clinic:AB-c1")
        assert region["data"]["from"] == FIRST and region["data"]["days"] == 5
        assert set(region["data"]["clinics"]) == {"AB-c1", "AB-c2", "AB-c3"}
        free_before = region["data"]["clinics"]["AB-c1"][0]
        assert free_before == 2 * 32  # two resources, 08-12 and 13-17 in 15-minute cells
        cells = clinic["data"]["resources"]["AB-c1-r1"][FIRST]
        assert clinic["data"]["cell_minutes"] == 15 and len(cells) == 96
        assert cells[CELL_0900 : CELL_0900 + 2] == f"{FREE}{FREE}"

        await live.regions.submit(book(1))
        diffs = {m["topic"]: m for m in (await recv(ws), await recv(ws))}
        region_diff, clinic_diff = diffs["region:AB"], diffs["clinic:AB-c1"]
        assert region_diff["type"] == clinic_diff["type"] == "diff"
        assert region_diff["seq"] == region["seq"] + 1 and clinic_diff["seq"] == clinic["seq"] + 1
        # a time counts once however many dentists are free then: the other one still is at 09:00
        assert region["data"]["service"] == "checkup" and region["data"]["starts"]["AB-c1"][0] == 30
        every = {"checkup": 30, "cleaning": 28, "emergency": 30, "filling": 26, "child_checkup": 32}
        assert region_diff["data"] == {"counts": [["AB-c1", FIRST, free_before - 2, every]]}
        assert clinic_diff["data"] == {"cells": [["AB-c1-r1", FIRST, CELL_0900, 2, BOOKED]]}
        assert (
            isinstance(clinic_diff["committed_at"], int) and clinic_diff["committed_at"] > 1_700_000_000_000
        )

        # a booking at another clinic: only the region topic moves
        await live.regions.submit(book(2, resource="AB-c2-r1"))
        other = await recv(ws)
        assert other["topic"] == "region:AB" and other["seq"] == region["seq"] + 2
        assert other["data"] == {"counts": [["AB-c2", FIRST, 2 * 32 - 2, every]]}

        # the same time taken on the second dentist too: 08:45, 09:00 and 09:15 are gone for a check-up
        await live.regions.submit(book(3, resource="AB-c1-r2"))
        both = await recv(ws)
        fewer = {"checkup": 27, "cleaning": 24, "emergency": 27, "filling": 21, "child_checkup": 30}
        assert both["data"] == {"counts": [["AB-c1", FIRST, free_before - 4, fewer]]}


async def test_a_region_subscription_names_the_service_its_starts_count(live: Live) -> None:
    async with connect(live.url) as ws:
        await live.regions.submit(book(1))
        await live.regions.submit(book(2, resource="AB-c1-r2"))
        await send(
            ws, {"op": "subscribe", "topic": "region:AB", "from": FIRST, "days": 2, "service": "filling"}
        )
        filling = await recv(ws)
        assert filling["type"] == "snapshot" and filling["data"]["service"] == "filling"
        assert filling["data"]["starts"] == {"AB-c1": [21, 26], "AB-c2": [26, 26], "AB-c3": [26, 26]}
        await send(ws, {"op": "subscribe", "topic": "region:AB", "from": FIRST, "days": 2, "service": "x"})
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == "INVALID" and error["topic"] == "region:AB"


async def test_unsubscribe_then_resubscribe_gets_a_snapshot_with_the_gap_filled(live: Live) -> None:
    async with connect(live.url) as ws:
        await subscribe(ws, "region:AB")
        first = await subscribe(ws, "clinic:AB-c1")
        await send(ws, {"op": "unsubscribe", "topic": "clinic:AB-c1"})
        await live.regions.submit(book(1))
        await send(ws, {"op": "ping"})
        # the region diff, then the pong: nothing for the clinic in between
        assert (await recv(ws))["topic"] == "region:AB"
        assert (await recv(ws)) == {"type": "pong"}
        again = await subscribe(ws, "clinic:AB-c1")
        assert again["seq"] >= first["seq"]
        row = again["data"]["resources"]["AB-c1-r1"][FIRST]
        assert row[CELL_0900 : CELL_0900 + 2] == f"{BOOKED}{BOOKED}"
        await live.regions.submit(book(2, cell=CELL_0900 + 4))
        diffs = {m["topic"]: m for m in (await recv(ws), await recv(ws))}
        assert diffs["clinic:AB-c1"]["seq"] == again["seq"] + 1


async def test_cancel_frees_cells_and_snapshot_ranges_are_per_subscriber(live: Live) -> None:
    async with connect(live.url) as a, connect(live.url) as b:
        await send(a, {"op": "subscribe", "topic": "clinic:AB-c1", "from": SECOND, "days": 1})
        narrow = await recv(a)
        assert list(narrow["data"]["resources"]["AB-c1-r1"]) == [SECOND]
        wide = await subscribe(b, "clinic:AB-c1", days=3)
        assert len(wide["data"]["resources"]["AB-c1-r1"]) == 3
        # two days ahead: far enough to cancel online
        await live.regions.submit(book(1, day=FIRST_DAY + 2))
        await live.regions.submit(Cancel("AB-b1", Party.PATIENT, "opaque-patient-1"))
        third = date_of(FIRST_DAY + 2).isoformat()
        for ws, base in ((a, narrow["seq"]), (b, wide["seq"])):
            booked, freed = await recv(ws), await recv(ws)
            assert (booked["seq"], freed["seq"]) == (base + 1, base + 2)
            assert freed["data"] == {"cells": [["AB-c1-r1", third, CELL_0900, 2, FREE]]}


async def test_msgpack_encoding_sends_binary_frames(live: Live) -> None:
    async with connect(live.url + "?encoding=msgpack") as ws, connect(live.url) as js:
        await send(ws, {"op": "subscribe", "topic": "clinic:AB-c1", "from": FIRST, "days": 2})
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert isinstance(raw, bytes)
        snapshot = msgpack.unpackb(raw)
        assert snapshot["type"] == "snapshot" and len(snapshot["data"]["resources"]["AB-c1-r2"]) == 2
        await subscribe(js, "clinic:AB-c1", days=2)
        await live.regions.submit(book(1))
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        text = await asyncio.wait_for(js.recv(), TIMEOUT)
        assert isinstance(raw, bytes) and isinstance(text, str)
        assert msgpack.unpackb(raw) == orjson.loads(text)
        # client -> server may be msgpack too
        await ws.send(msgpack.packb({"op": "ping"}))
        assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), TIMEOUT)) == {"type": "pong"}


async def test_origin_must_be_allowed_unless_absent(live: Live) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(live.url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    async with connect(live.url, origin=ORIGIN) as ws:  # type: ignore[arg-type]
        await send(ws, {"op": "ping"})
        assert await recv(ws) == {"type": "pong"}
    async with connect(live.url) as ws:  # no Origin: a non-browser client
        await send(ws, {"op": "ping"})
        assert await recv(ws) == {"type": "pong"}


async def test_bad_frames_get_errors_or_a_close_and_others_keep_their_diffs(live: Live) -> None:
    async with connect(live.url) as watcher, connect(live.url) as rude:
        base = await subscribe(watcher, "region:AB")
        await rude.send("{not json")
        assert (await recv(rude))["code"] == "INVALID"
        await send(rude, {"op": "dance"})
        assert (await recv(rude))["code"] == "INVALID"
        await send(rude, [1, 2])  # type: ignore[arg-type]
        assert (await recv(rude))["code"] == "INVALID"
        for topic in ("clinic:AB-c99", "region:XX", "clinic:nope", "region:C"):
            await send(rude, {"op": "subscribe", "topic": topic})
            error = await recv(rude)
            assert error["type"] == "error" and error["code"] == "NOT_FOUND", error
        await send(rude, {"op": "subscribe", "topic": "region:AB", "days": 1000})
        assert (await recv(rude))["code"] == "INVALID"
        await send(rude, {"op": "subscribe", "topic": "region:AB", "from": "23/11/2026"})
        assert (await recv(rude))["code"] == "INVALID"
        for topic in ("region:AB", "clinic:AB-c1", "clinic:AB-c2"):
            await subscribe(rude, topic)
        await send(rude, {"op": "subscribe", "topic": "clinic:AB-c3"})
        assert (await recv(rude))["code"] == "LIMIT_REACHED"
        await send(rude, {"op": "ping"})
        assert await recv(rude) == {"type": "pong"}  # still connected after every error

        await rude.send("x" * (live.settings.max_ws_frame + 1))
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(rude)
        assert rude.close_code == 1009

        await live.regions.submit(book(1))
        diff = await recv(watcher)
        assert diff["type"] == "diff" and diff["seq"] == base["seq"] + 1


async def test_reload_resyncs_every_subscriber_with_the_next_seq(live: Live) -> None:
    async with connect(live.url) as ws:
        region = await subscribe(ws, "region:AB")
        clinic = await subscribe(ws, "clinic:AB-c1")
        await live.regions.submit(book(1))
        await recv(ws), await recv(ws)
        # what the actor hands its listeners after dropping and reloading its state
        live.hub.on_commit(Reloaded("AB"))
        fresh = {m["topic"]: m for m in (await recv(ws), await recv(ws))}
        assert {m["type"] for m in fresh.values()} == {"snapshot"}
        assert fresh["region:AB"]["seq"] == region["seq"] + 2
        assert fresh["clinic:AB-c1"]["seq"] == clinic["seq"] + 2
        row = fresh["clinic:AB-c1"]["data"]["resources"]["AB-c1-r1"][FIRST]
        assert row[CELL_0900] == str(BOOKED)
        await live.regions.submit(book(2, cell=CELL_0900 + 4))
        after = {m["topic"]: m for m in (await recv(ws), await recv(ws))}
        assert after["clinic:AB-c1"]["seq"] == clinic["seq"] + 3


async def test_a_client_that_stops_reading_is_resynced_then_dropped_within_bounds(live: Live) -> None:
    hub = live.hub
    port = int(live.url.split(":")[2].split("/")[0])
    # A raw socket with a tiny receive buffer that completes the handshake, subscribes, and
    # then never reads again.
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, ("127.0.0.1", port))
    await loop.sock_sendall(
        raw,
        (
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.wait_for(loop.sock_recv(raw, 1), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101")

    def masked(text: str) -> bytes:  # a client frame: FIN + text, masked with a zero key
        data = text.encode()
        assert len(data) < 126
        return bytes([0x81, 0x80 | len(data), 0, 0, 0, 0]) + data

    def subscribe_raw(topic: str, days: int) -> bytes:
        return masked(orjson.dumps({"op": "subscribe", "topic": topic, "from": FIRST, "days": days}).decode())

    # Re-subscribing with 92 days queues ~20 KB snapshots until the socket stops taking bytes.
    sent = 0
    while not any(c.send_since for c in hub.connections):
        assert sent < 2000, "the server's socket never filled up"
        await loop.sock_sendall(raw, subscribe_raw(("clinic:AB-c1", "clinic:AB-c2")[sent % 2], 92))
        sent += 1
        await eventually(
            lambda sent=sent: hub.frames_sent >= sent or any(c.send_since for c in hub.connections),
            what="the snapshot to be sent",
        )
    await loop.sock_sendall(raw, subscribe_raw("region:AB", 5))
    await eventually(lambda: hub.stats()["subscriptions"] == 3, what="the raw client's subscriptions")

    # Its socket is stalled from here on; the sweeper may drop it only after its queue overflowed
    # (on a loaded machine the bookings below can take longer than the stall bound).
    stall_s, hub.sender.stall_s = hub.sender.stall_s, float("inf")
    async with connect(live.url) as good:
        base = await subscribe(good, "region:AB")
        seq = base["seq"]
        slots = [
            (resource, FIRST_DAY + d, cell)
            for d in range(4)
            for cell in [*range(32, 48, 2), *range(52, 68, 2)]
            for resource in ("AB-c1-r1", "AB-c1-r2", "AB-c2-r1", "AB-c2-r2")
        ]
        n = 0
        try:
            # bookings flow; the reading client gets every diff in order
            while hub.resynced == 0 and n < 40:
                resource, day, cell = slots[n]
                n += 1
                await live.regions.submit(book(n, resource=resource, day=day, cell=cell))
                diff = await recv(good)  # the reading client keeps getting every diff in order
                seq += 1
                assert diff["seq"] == seq
                assert max(len(c.queue) for c in hub.connections) <= hub.max_queue
            # its queue overflowed: queued diffs were dropped and its topics marked for resync
            assert hub.resynced >= 1
            assert hub.stats()["queue_high_water"] <= hub.max_queue
            assert hub.dropped == 0
            # it still does not read: the sweeper closes it (1013) once its socket stalls too long
            hub.sender.stall_s = stall_s
            await eventually(lambda: hub.dropped == 1, what="the stalled consumer to be dropped")
            await live.regions.submit(book(n + 1, *slots[n]))
            assert (await recv(good))["seq"] == seq + 1
        finally:
            raw.close()
    stats = hub.stats()
    assert stats["resynced"] >= 1 and stats["dropped"] == 1
    assert stats["queue_high_water"] <= stats["queue_bound"] == live.settings.ws_send_buffer
    await eventually(lambda: hub.stats()["connections"] == 0, what="both connections to end")
    assert hub.stats()["subscriptions"] == 0


async def test_frames_carry_no_personal_data(live: Live) -> None:
    async with connect(live.url) as ws:
        frames = []
        for topic in ("region:AB", "clinic:AB-c1"):
            await send(ws, {"op": "subscribe", "topic": topic, "from": FIRST, "days": 5})
            frames.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
        await live.regions.submit(book(1, day=FIRST_DAY + 2))
        await live.regions.submit(Cancel("AB-b1", Party.PATIENT, "opaque-patient-1"))
        frames += [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in range(4)]
    text = "\n".join(f if isinstance(f, str) else f.decode() for f in frames)
    assert "opaque-patient" not in text and "AB-b1" not in text
    assert "Tandläkare" not in text and "Testgatan" not in text


async def test_signed_in_patients_get_their_own_booking_events_only(live: Live) -> None:
    user = live.accounts.create_user(
        "anna@example.se", "correct horse battery", "Anna Andersson", Role.PATIENT
    )
    token = start_session(live.accounts, live.signer, user)
    async with (
        connect(live.url, additional_headers={"Authorization": f"Bearer {token}"}) as me,
        connect(live.url) as anonymous,
    ):
        day = FIRST_DAY + 2
        await live.regions.submit(Book("AB-b1", user.id, "AB-c1-r1", "checkup", day, CELL_0900))
        await live.regions.submit(book(2))  # somebody else's booking: no event for anyone
        await live.regions.submit(Cancel("AB-b1", Party.PATIENT, user.id))
        raw = [await asyncio.wait_for(me.recv(), TIMEOUT) for _ in range(2)]
        confirmed, cancelled = (orjson.loads(r) for r in raw)
        assert confirmed["type"] == "event" and confirmed["topic"] == "me"
        assert confirmed["data"]["kind"] == "booking_confirmed"
        booking = confirmed["data"]["booking"]
        assert booking["id"] == "AB-b1" and booking["clinic"] == "AB-c1" and booking["status"] == "booked"
        assert booking["start"] == f"{date_of(day).isoformat()}T09:00:00+01:00"
        assert booking["end"] == f"{date_of(day).isoformat()}T09:30:00+01:00"
        assert cancelled["data"]["kind"] == "booking_cancelled"
        assert cancelled["data"]["booking"]["status"] == "cancelled"
        text = "".join(str(r) for r in raw)
        assert "anna" not in text.lower() and "Andersson" not in text and user.id not in text
        for ws in (me, anonymous):
            await send(ws, {"op": "ping"})
            assert await recv(ws) == {"type": "pong"}  # nothing else was queued before the pong


async def test_direct_connections_need_no_sender_task_and_share_one_framed_diff(live: Live) -> None:
    async with connect(live.url) as one, connect(live.url) as two:
        for ws in (one, two):
            await subscribe(ws, "clinic:AB-c1")
        conns = list(live.hub.connections)
        assert len(conns) == 2
        # direct: the uvicorn protocol is known and idle connections have no task of their own
        assert all((c.raw is not None) == live.direct for c in conns)
        assert all((c.sender is None) == live.direct for c in conns)
        sent = live.hub.frames_sent
        await live.regions.submit(book(1))
        first, second = await recv(one), await recv(two)
        assert first == second and first["type"] == "diff"
        assert first["data"]["cells"] == [["AB-c1-r1", FIRST, CELL_0900, 2, BOOKED]]
        assert live.hub.frames_sent == sent + 2


def refused_count(reason: str) -> float:
    return REGISTRY.get_sample_value("tandtid_ws_refused_total", {"reason": reason}) or 0.0


async def test_connection_caps_refuse_the_handshake_per_address_and_in_total(live: Live) -> None:
    live.settings.ws_max_connections_per_ip = 2  # read per handshake
    live.settings.ws_max_connections = 3
    per_ip, total = refused_count("per_ip"), refused_count("global")
    async with connect(live.url) as one, connect(live.url) as two:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(live.url):
                pass
        assert refused.value.response.status_code == 429
        assert b"TOO_MANY_CONNECTIONS" in refused.value.response.body
        assert refused_count("per_ip") == per_ip + 1
        # another address still gets in, up to the server's cap
        async with connect(live.url, local_addr=("127.0.0.2", 0)) as other:
            with pytest.raises(InvalidStatus) as full:
                async with connect(live.url, local_addr=("127.0.0.3", 0)):
                    pass
            assert full.value.response.status_code == 503
            assert refused_count("global") == total + 1
            for ws in (one, two, other):  # the admitted connections work
                await send(ws, {"op": "ping"})
                assert await recv(ws) == {"type": "pong"}
        await one.close()
        # a closed connection frees its place
        await eventually(
            lambda: live.hub.stats()["connections"] == 1, what="the closed connections to be released"
        )
        async with connect(live.url) as again:
            await subscribe(again, "region:AB")


@pytest.mark.parametrize("protocol", ["direct", "asgi"])
async def test_a_subscribe_while_the_region_is_away_gets_its_snapshot_once_it_is_back(
    tmp_path: Path, protocol: str
) -> None:
    journal = MemoryJournal()
    async with (
        hub_served(tmp_path, journal, protocol, retry_backoff_s=(0.05, 0.1)) as live,
        connect(live.url) as ws,
    ):
        journal.unreachable = True
        with pytest.raises(Unavailable):  # the append fails: the actor reloads, retrying while away
            await live.regions.submit(book(1))
        for topic in ("clinic:AB-c1", "clinic:AB-c99"):
            await send(ws, {"op": "subscribe", "topic": topic, "from": FIRST, "days": 5})
            error = await recv(ws)
            assert (error["type"], error["code"], error["topic"]) == ("error", "UNAVAILABLE", topic)
        journal.unreachable = False
        snapshot, missing = await recv(ws), await recv(ws)
        if snapshot["type"] == "error":
            snapshot, missing = missing, snapshot
        assert snapshot["type"] == "snapshot" and snapshot["topic"] == "clinic:AB-c1"
        assert snapshot["data"]["resources"]["AB-c1-r1"][FIRST][CELL_0900] == str(FREE)  # book(1) never was
        assert (missing["type"], missing["code"], missing["topic"]) == ("error", "NOT_FOUND", "clinic:AB-c99")
        await live.regions.submit(book(2))
        diff = await recv(ws)
        assert diff["type"] == "diff" and diff["seq"] == snapshot["seq"] + 1
        assert live.hub.stats()["subscriptions"] == 1


async def test_a_failed_region_is_resynced_with_a_growing_backoff_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber of a FAILED region (damage: only an operator brings it back) is asked for
    again after 0.5, 1, 2 ... s (at most 30), not every 0.5 s forever, with one log line."""
    journal = MemoryJournal()
    async with hub_served(tmp_path, journal, "direct") as live, connect(live.url) as ws:
        journal.corrupt("AB", 1)
        journal.fail_next_append()
        with pytest.raises(Unavailable):  # the reload finds the damage: FAILED
            await live.regions.submit(book(1))
        await eventually(lambda: live.regions.actors["AB"].lifecycle is Lifecycle.FAILED, what="FAILED")
        loop = asyncio.get_running_loop()
        attempts: list[float] = []
        query = live.regions.query

        async def counted(region: str, fn: Any) -> Any:
            attempts.append(loop.time())
            return await query(region, fn)

        live.regions.query = counted  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="tandtid.hub"):
            await send(ws, {"op": "subscribe", "topic": "region:AB", "from": FIRST, "days": 5})
            assert (await recv(ws))["code"] == "UNAVAILABLE"
            await eventually(lambda: len(attempts) >= 5, timeout=scaled(30.0), what="four resync attempts")
        # attempts[0] is the subscribe; then a resync at once, then after each backoff
        gaps = [later - earlier for earlier, later in zip(attempts[1:], attempts[2:], strict=False)]
        assert [gap >= 0.9 * wait for gap, wait in zip(gaps, (0.5, 1.0, 2.0), strict=False)] == [True] * 3, (
            gaps
        )
        logged = [r for r in caplog.records if "resync from region AB failed" in r.getMessage()]
        assert len(logged) == 1
