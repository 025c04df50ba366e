"""Webhooks: signature unit tests (no network), then integration tests over a real uvicorn
server (the live-server fixture; its stores in SQLite files, then all in a real Redis), the real
dispatcher on its loop, and a real HTTP receiver
(``http.server`` in a thread) that verifies every signature with ``verify_signature``.

The receiver is down while bookings happen; once it comes back it gets every event, in
sequence order, each exactly once; the delivery log shows the retries; a replay re-sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.commands import Book, Cancel, Party, Reschedule
from engine.events import Booked, Cancelled, Rescheduled
from server.consumers.webhooks import HEADER, sign, verify_signature
from server.consumers.webhooks.dispatcher import WebhookDispatcher, url_problem
from server.consumers.webhooks.store import WebhookStore, subscribers_in
from server.identity.accounts import Role
from server.stores import open_webhooks
from tests.server.conftest import bearer
from tests.support import free_port
from tests.support.catalog import CELL_0900, FIRST_DAY
from tests.support.live_server import LiveServer
from tests.support.waiting import eventually

WAIT_S = 30.0
SECRET = "whsec_test"
BODY = b'{"id":"AB-1-0","type":"booking.created"}'


# -- signatures (unit) ---------------------------------------------------------------------------


def test_a_signature_verifies_and_tampering_fails() -> None:
    now = 1_790_000_000
    header = sign(SECRET, BODY, now)
    assert verify_signature(SECRET, header, BODY, now + 10)
    assert not verify_signature(SECRET, header, BODY.replace(b"created", b"cancelled"), now)
    assert not verify_signature("whsec_other", header, BODY, now)
    t, v1 = header.split(",")
    assert not verify_signature(SECRET, f"t={now + 1},{v1}", BODY, now)  # timestamp is signed too


def test_old_and_future_timestamps_fail() -> None:
    now = 1_790_000_000
    assert verify_signature(SECRET, sign(SECRET, BODY, now - 300), BODY, now)
    assert not verify_signature(SECRET, sign(SECRET, BODY, now - 301), BODY, now)
    assert not verify_signature(SECRET, sign(SECRET, BODY, now + 301), BODY, now)
    assert not verify_signature(SECRET, sign(SECRET, BODY, now - 3600), BODY, now, tolerance_s=600)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=abc,v1=00",
        "v1=00",
        "t=1790000000",
        "t=1790000000,t=1790000000,v1=00",
        "t=-5,v1=00",
    ],
)
def test_malformed_headers_fail(header: str | None) -> None:
    assert not verify_signature(SECRET, header, BODY, 1_790_000_000)


def test_endpoint_urls() -> None:
    assert url_problem("https://clinic.example.se/hooks") is None
    assert url_problem("http://clinic.example.se/hooks") is not None
    assert url_problem("http://127.0.0.1:9000/h") is not None
    assert url_problem("http://127.0.0.1:9000/h", allow_http=True) is None
    assert url_problem("http://example.se/h", allow_http=True) is not None
    assert url_problem("https://10.1.2.3/h") is not None
    assert url_problem("https://169.254.169.254/latest") is not None
    assert url_problem("https://user:pw@clinic.example.se/") is not None
    assert url_problem("ftp://clinic.example.se/") is not None
    # numeric spellings of internal addresses that the OS resolver reads as IPv4
    for url in (
        "https://2130706433:18003/",
        "https://0x7f.1/",
        "https://0177.0.0.1/",
        "https://127.1/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::1]/",
        "https://169.254.169.254/",
        "https://100.100.100.200/",
    ):
        assert url_problem(url) is not None, url
    assert url_problem("https://[2a00:1450:400f:80d::200e]/h") is None
    assert url_problem("https://10.1.2.3/h", allow_private=True) is None


def test_subscriptions_follow_endpoints_created_and_deleted_by_any_store(tmp_path: Path) -> None:
    """The dispatcher's store keeps the endpoints in memory; one made or deleted through
    another store on the same file (the server's routes, another process) is seen at once."""
    dispatcher_store = WebhookStore(tmp_path / "webhooks.sqlite3")
    routes_store = WebhookStore(tmp_path / "webhooks.sqlite3")
    try:
        assert dispatcher_store.subscriptions() == {}
        made, _ = routes_store.create_endpoint("AB-c1", "https://a.example/h", ["booking.created"], 100.0)
        assert subscribers_in(dispatcher_store.subscriptions(), "AB-c1", "booking.created", 100.0) == [
            made.id
        ]
        assert subscribers_in(dispatcher_store.subscriptions(), "AB-c1", "booking.created", 99.0) == []
        assert subscribers_in(dispatcher_store.subscriptions(), "AB-c1", "booking.cancelled", 100.0) == []
        assert subscribers_in(dispatcher_store.subscriptions(), "AB-c2", "booking.created", 100.0) == []
        other, _ = dispatcher_store.create_endpoint(
            "AB-c1", "https://b.example/h", ["booking.created"], 101.0
        )
        assert subscribers_in(dispatcher_store.subscriptions(), "AB-c1", "booking.created", 200.0) == [
            made.id,
            other.id,
        ]
        assert routes_store.delete_endpoint("AB-c1", made.id, 102.0)
        assert subscribers_in(dispatcher_store.subscriptions(), "AB-c1", "booking.created", 200.0) == [
            other.id
        ]
    finally:
        dispatcher_store.close()
        routes_store.close()


async def test_delivery_refuses_a_host_that_resolves_inside(
    live: LiveServer, dispatcher: WebhookDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address is checked when the dispatcher connects, not only when the URL is registered:
    a name (or an endpoint stored earlier) that resolves to loopback is never connected to."""
    monkeypatch.delenv("TANDTID_WEBHOOK_ALLOW_HTTP", raising=False)
    monkeypatch.delenv("TANDTID_WEBHOOK_ALLOW_PRIVATE", raising=False)
    probed: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    endpoints = [
        dispatcher.store.create_endpoint("M-c1", url, ["booking.created"], live.clock() - 60)[0].id
        for url in (f"https://2130706433:{port}/hook", f"https://0x7f.1:{port}/hook")
    ]
    assert live.regions is not None
    regions = live.regions
    patient = live.user(Role.PATIENT)[0].id
    booking = Book("M-bprobe", patient, "M-c1-r1", "checkup", FIRST_DAY + 3, CELL_0900)
    await asyncio.wrap_future(live.call(regions.submit(booking)))

    async def attempted() -> bool:
        with contextlib.suppress(TimeoutError):
            probed.append(listener.accept()[0].fileno())
        rows = [d for e in endpoints for d in dispatcher.store.deliveries(e)]
        return len(rows) == 2 and all(d.attempts >= 1 for d in rows)

    try:
        await eventually(attempted, timeout=WAIT_S, interval=0.05, what="delivery attempts to both endpoints")
        rows = [d for e in endpoints for d in dispatcher.store.deliveries(e)]
        assert all("refused" in d.last_error for d in rows), [d.last_error for d in rows]
        assert probed == []
    finally:
        listener.close()
        for endpoint in endpoints:  # M-c1's list is expected empty by the test below
            dispatcher.store.delete_endpoint("M-c1", endpoint, live.clock())


class ReadBeganBeforeTheRecord:
    """The dispatcher's store, except that one armed read of the heads takes its rows, then waits
    until an attempt's outcome is recorded (and a little more) before answering: a read that began
    before an attempt ended and returns after it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.armed = threading.Event()
        self.read_taken = threading.Event()
        self.recorded = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def heads(self) -> Any:
        rows = self.store.heads()
        if self.armed.is_set():
            self.armed.clear()
            self.read_taken.set()
            self.recorded.wait(10)
            time.sleep(0.3)  # the attempt's task has ended: it is no longer in flight
        return rows

    def delivered(self, delivery_id: int, now: float, status_code: int) -> None:
        self.store.delivered(delivery_id, now, status_code)
        self.recorded.set()


async def test_a_read_of_the_queue_from_before_a_delivery_ended_does_not_send_it_again(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDTID_WEBHOOK_ALLOW_HTTP", "1")
    posts: list[str] = []
    arrived, answer = threading.Event(), threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            posts.append(self.headers["Tandtid-Delivery-Id"])
            arrived.set()
            answer.wait(10)  # the first answer waits until the racing read has taken its rows
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    assert live.journal is not None and live.regions is not None
    regions = live.regions
    store = ReadBeganBeforeTheRecord(open_webhooks(live.data_dir, live.redis_url))
    endpoint = store.create_endpoint(
        "AB-c2", f"http://127.0.0.1:{server.server_address[1]}/hook", ["booking.created"], live.clock() - 60
    )[0].id
    dispatcher = WebhookDispatcher(live.journal, store, clock=time.time, poll_s=0.1, timeout_s=5.0)
    await asyncio.wrap_future(live.call(dispatcher.start()))

    async def wake() -> None:
        dispatcher.wake()

    try:
        patient = live.user(Role.PATIENT)[0].id
        await asyncio.wrap_future(
            live.call(
                regions.submit(Book("AB-bracing", patient, "AB-c2-r1", "checkup", FIRST_DAY + 3, CELL_0900))
            )
        )
        assert await asyncio.to_thread(arrived.wait, WAIT_S), "the delivery never arrived"
        store.armed.set()
        await asyncio.wrap_future(live.call(wake()))  # a read while the POST is in flight
        assert await asyncio.to_thread(store.read_taken.wait, WAIT_S), "no read of the queue began"
        answer.set()
        await asyncio.sleep(1.5)  # several rounds of the sender (poll 0.1 s) after the racing read
        assert len(posts) == 1, f"one delivery posted {len(posts)} times"
        assert [d.status for d in store.deliveries(endpoint)] == ["delivered"]
    finally:
        answer.set()
        await asyncio.wrap_future(live.call(dispatcher.stop()))
        store.delete_endpoint("AB-c2", endpoint, live.clock())
        store.close()
        server.shutdown()
        server.server_close()


# -- a real receiver -------------------------------------------------------------------------------


class Receiver:
    """An HTTP server on a fixed port that can go down and come back; ``delay_s`` holds each answer
    that long (a slow endpoint: its deliveries stay pending while they are posted)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.delay_s = delay_s
        self.delivery_ids: list[int] = []
        self.handling = 0  # requests being answered now
        self.secret = ""
        self.events: list[dict[str, Any]] = []
        self.rejected = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.handling += 1
                time.sleep(receiver.delay_s)  # a handler thread of its own: a slow endpoint
                ok = verify_signature(receiver.secret, self.headers.get(HEADER), body, time.time())
                with receiver._lock:
                    if ok:
                        event = json.loads(body)
                        assert event["id"] == self.headers["Tandtid-Event-Id"]
                        receiver.events.append(event)
                        receiver.delivery_ids.append(int(self.headers["Tandtid-Delivery-Id"]))
                    else:
                        receiver.rejected += 1
                    receiver.handling -= 1
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def live(live_each_store: LiveServer) -> LiveServer:
    return live_each_store  # every test here runs with the stores in SQLite, then in Redis


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        yield c


@pytest.fixture
async def dispatcher(live: LiveServer) -> AsyncIterator[WebhookDispatcher]:
    assert live.journal is not None
    d = WebhookDispatcher(
        live.journal,
        open_webhooks(live.data_dir, live.redis_url),
        clock=time.time,
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
        poll_s=0.1,
        timeout_s=2.0,
    )
    d._owns_store = True
    await asyncio.wrap_future(live.call(d.start()))
    try:
        yield d
    finally:
        await asyncio.wrap_future(live.call(d.stop()))


# -- integration ---------------------------------------------------------------------------------


async def test_create_endpoint_validates_and_is_scoped_to_the_clinic(
    client: httpx.AsyncClient, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, staff = live.user(Role.STAFF, "AB-c2")
    _, other = live.user(Role.STAFF, "M-c1")
    _, patient = live.user(Role.PATIENT)
    url = "/api/clinic/v1/webhooks"
    r = await client.post(url, json={"url": "http://127.0.0.1:9/h"}, headers=bearer(staff))
    assert r.status_code == 422 and r.json()["error"]["field"] == "url"
    monkeypatch.setenv("TANDTID_WEBHOOK_ALLOW_HTTP", "1")
    r = await client.post(
        url, json={"url": "http://127.0.0.1:9/h", "events": ["booking.exploded"]}, headers=bearer(staff)
    )
    assert r.status_code == 422
    r = await client.post(url, json={"url": "http://127.0.0.1:9/h"}, headers=bearer(patient))
    assert r.status_code == 403
    r = await client.post(
        url, json={"url": "http://127.0.0.1:9/h", "events": ["booking.cancelled"]}, headers=bearer(staff)
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and created["events"] == ["booking.cancelled"]
    listed = (await client.get(url, headers=bearer(staff))).json()["endpoints"]
    assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]
    assert (await client.get(url, headers=bearer(other))).json()["endpoints"] == []
    r = await client.get(f"{url}/{created['id']}/deliveries", headers=bearer(other))
    assert r.status_code == 404
    assert (await client.delete(f"{url}/{created['id']}", headers=bearer(other))).status_code == 404
    assert (await client.delete(f"{url}/{created['id']}", headers=bearer(staff))).status_code == 204
    assert (await client.get(url, headers=bearer(staff))).json()["endpoints"] == []


@pytest.mark.slow
async def test_a_receiver_that_was_down_gets_every_event_in_order(
    client: httpx.AsyncClient,
    live: LiveServer,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TANDTID_WEBHOOK_ALLOW_HTTP", "1")
    _, staff = live.user(Role.STAFF, "AB-c1")
    patients = [live.user(Role.PATIENT)[0].id for _ in range(6)]  # at most 3 bookings each per clinic
    r = await client.post("/api/clinic/v1/webhooks", json={"url": receiver.url}, headers=bearer(staff))
    assert r.status_code == 201, r.text
    endpoint = r.json()["id"]
    receiver.secret = r.json()["secret"]
    log_url = f"/api/clinic/v1/webhooks/{endpoint}/deliveries"
    assert live.regions is not None
    regions = live.regions

    async def submit(command: Any) -> None:
        await asyncio.wrap_future(live.call(regions.submit(command)))

    # the receiver is down while things happen
    for i in range(6):
        await submit(Book(f"AB-bwh{i}", patients[i], "AB-c1-r1", "checkup", FIRST_DAY + 1, CELL_0900 + 2 * i))
    await submit(Book("AB-bwh-other", patients[0], "AB-c2-r1", "checkup", FIRST_DAY + 1, CELL_0900))  # AB-c2
    await submit(Cancel("AB-bwh1", Party.CLINIC, "AB-c1"))
    await submit(Reschedule("AB-bwh2", patients[2], "AB-c1-r2", FIRST_DAY + 2, CELL_0900))

    async def retried() -> bool:
        rows = (await client.get(log_url, headers=bearer(staff))).json()["deliveries"]
        return any(d["attempts"] >= 2 and d["last_error"] for d in rows)

    await eventually(retried, timeout=WAIT_S, what="failed attempts against the receiver that is down")

    events = await live.journal_events("AB")
    expected = [
        (e.booking_id, type(e).__name__)
        for e in events
        if isinstance(e, Booked | Cancelled | Rescheduled)
        and e.booking_id.startswith("AB-bwh")
        and e.booking_id != "AB-bwh-other"
    ]
    assert len(expected) == 8

    receiver.start()

    async def all_in() -> bool:
        return len(receiver.received()) >= len(expected)

    await eventually(all_in, timeout=WAIT_S, what="every event at the receiver after it came back")
    got = receiver.received()
    assert receiver.rejected == 0
    assert [(e["data"]["booking"], e["type"]) for e in got] == [
        (
            b,
            {
                "Booked": "booking.created",
                "Cancelled": "booking.cancelled",
                "Rescheduled": "booking.rescheduled",
            }[k],
        )
        for b, k in expected
    ]
    sequences = [e["sequence"] for e in got]
    assert sequences == sorted(sequences)
    assert len({e["id"] for e in got}) == len(got)
    assert all(e["region"] == "AB" and e["data"]["clinic"] == "AB-c1" for e in got)
    assert all("patient" not in e["data"] for e in got)
    cancelled = next(e for e in got if e["type"] == "booking.cancelled")
    assert cancelled["data"]["cancelled_by"] == "clinic" and cancelled["data"]["status"] == "cancelled"
    moved = next(e for e in got if e["type"] == "booking.rescheduled")
    assert (
        moved["data"]["resource"] == "AB-c1-r2" and moved["data"]["previous_start"] < moved["data"]["start"]
    )

    async def all_delivered() -> list[dict[str, Any]] | None:
        # the receiver counts a delivery when it arrives; the dispatcher records it once answered
        rows: list[dict[str, Any]] = (await client.get(log_url, headers=bearer(staff))).json()["deliveries"]
        return rows if [d["status"] for d in rows] == ["delivered"] * len(expected) else None

    rows = await eventually(all_delivered, timeout=WAIT_S, what="every delivery recorded as delivered")
    first = rows[-1]
    assert first["attempts"] >= 2 and first["event_id"] == got[0]["id"]

    r = await client.post(f"{log_url}/{first['id']}/replay", headers=bearer(staff))
    assert r.status_code == 202, r.text
    assert r.json()["delivery"]["replay_of"] == first["id"]

    async def replayed() -> bool:
        return len(receiver.received()) == len(expected) + 1

    await eventually(replayed, timeout=WAIT_S, what="the replayed delivery")
    assert receiver.received()[-1] == got[0]
    r = await client.post(f"{log_url}/999999/replay", headers=bearer(staff))
    assert r.status_code == 404
