"""The webhook dispatcher: a journal consumer that queues deliveries, and a sender that posts them.

Consumer: a reader of the process's ``Feed`` (``server.consumers.follow``, shared with the
notifier: one projection, started from the actors' snapshots, restarted after any error); for
each entry after its cursor it queues one delivery per (fact, subscribed endpoint of the fact's
clinic) — in the same transaction that moves the cursor.

Sender: for every endpoint, only its oldest pending delivery is in flight (strict sequence
order), sent by the node that follows the delivery's region (its owner, with ``--node``: the
queue in Redis is shared, and an endpoint's deliveries are all of its clinic's region). A POST answered 2xx is delivered; anything else (status, timeout, refused
connection) is retried after 1 s, 2 s, 4 s, ... capped at ``backoff_cap_s``, and given up
(status ``failed``, visible in the log, replayable) once the delivery is older than 24 h.

The request::

    POST <url>
    Content-Type: application/json
    Tandtid-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}." + body)>
    Tandtid-Event-Id: AB-12-0          Tandtid-Delivery-Id: 42          Tandtid-Sequence: 12

    {"id": "AB-12-0", "type": "booking.created", "region": "AB", "sequence": 12,
     "created_at": "2026-12-07T08:00:00+01:00",
     "data": {"booking": "AB-…", "clinic": "AB-c1", "resource": "AB-c1-r1", "service": "checkup",
              "start": "…+01:00", "end": "…+01:00", "status": "booked"}}

No patient ids, names or e-mail addresses: a clinic looks a patient up through its API.

Where a webhook may point (a clinic must not probe our internal network through it): the URL
is checked when it is registered (:func:`url_problem`: HTTPS, no literal internal address, in
any spelling the OS resolver accepts, e.g. ``2130706433`` or ``0x7f.1``), and the host is
resolved again at every delivery by the sender's network backend (:class:`TargetGuard`), which
connects only to the address it checked (no second lookup to rebind). Loopback, private,
link-local, shared and reserved addresses are refused unless the operator allows them:
``TANDTID_WEBHOOK_ALLOW_PRIVATE=1`` (any non-public address over HTTPS) or
``TANDTID_WEBHOOK_ALLOW_HTTP=1`` (plain HTTP to loopback, for tests). Cloud metadata addresses
are refused always.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

import httpcore
import httpx
import orjson

from persistence.journal import Journal
from server.consumers.feed import Fact, PendingCursors
from server.consumers.follow import Entry, Feed, Up, finish_first, why
from server.consumers.webhooks.signing import HEADER, sign
from server.consumers.webhooks.store import Attempt, Endpoint, QueuedRow, Webhooks, subscribers_in
from server.consumers.workers import in_consumer_thread
from server.http.views import end_iso, epoch_iso
from server.stores import STORE_ERRORS, open_webhooks

log = logging.getLogger("tandtid.webhooks")

WEBHOOK_TYPES: dict[str, str] = {
    "booked": "booking.created",
    "cancelled": "booking.cancelled",
    "rescheduled": "booking.rescheduled",
}
EVENT_TYPES: tuple[str, ...] = tuple(sorted(WEBHOOK_TYPES.values()))
GIVE_UP_AFTER_S = 24 * 3600
CURSOR_FLUSH_S = 1.0
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
REFUSED_TARGET = "refused target"
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _flag(name: str) -> bool:
    return os.environ.get(name, "") in ("1", "true", "yes")


def allow_http() -> bool:
    """TANDTID_WEBHOOK_ALLOW_HTTP: plain HTTP to loopback receivers (tests, local demos)."""
    return _flag("TANDTID_WEBHOOK_ALLOW_HTTP")


def allow_private() -> bool:
    """TANDTID_WEBHOOK_ALLOW_PRIVATE: receivers on non-public addresses (an operator's choice)."""
    return _flag("TANDTID_WEBHOOK_ALLOW_PRIVATE")


def literal_address(host: str) -> Address | None:
    """The address ``host`` spells out, in any form the OS resolver reads as one (``127.1``,
    ``2130706433``, ``0x7f.1``, ``0177.0.0.1``), or None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not host or any(c not in "0123456789abcdefxABCDEFX." for c in host):
            return None
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_problem(address: Address, *, private_ok: bool = False, loopback_ok: bool = False) -> str | None:
    """Why a webhook may not connect to ``address``, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return None if loopback_ok or private_ok else "a loopback address"
    if not address.is_global or address.is_multicast:
        return (
            None if private_ok and not address.is_multicast else "an address not reachable from the internet"
        )
    return None


def url_problem(url: str, *, allow_http: bool = False, allow_private: bool = False) -> str | None:
    """Why ``url`` cannot be a webhook endpoint, or None. HTTPS only; plain HTTP only to
    loopback and only when ``allow_http`` (TANDTID_WEBHOOK_ALLOW_HTTP=1, for tests). Literal
    internal addresses (in any spelling) are refused over HTTPS too, unless ``allow_private``.
    Names are resolved and checked again at every delivery (:class:`TargetGuard`)."""
    if len(url) > 2000:
        return "the URL is too long"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        return "not a URL"
    if parts.username or parts.password:
        return "credentials do not belong in the URL"
    if not host:
        return "the URL has no host"
    if parts.scheme == "http":
        if allow_http and host in _LOOPBACK_HOSTS:
            return None
        return "webhook URLs must use https"
    if parts.scheme != "https":
        return "webhook URLs must use https"
    address = literal_address(host)
    if address is None:
        return (
            None
            if host.rstrip(".") != "localhost" or allow_private
            else "that host is not reachable from the internet"
        )
    problem = address_problem(address, private_ok=allow_private)
    return None if problem is None else "that address is not reachable from the internet"


class TargetGuard(httpcore.AsyncNetworkBackend):
    """The sender's network backend: resolves the host itself, refuses (``httpcore.ConnectError``
    starting ``"refused target"``) if any of its addresses is one a webhook may not reach, and
    connects to the checked address — TLS still verifies the certificate for the host name."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve the host ({exc.__class__.__name__})") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        private_ok, loopback_ok = allow_private(), allow_http()
        for address in addresses:
            problem = address_problem(address, private_ok=private_ok, loopback_ok=loopback_ok)
            if problem is not None:
                raise httpcore.ConnectError(f"{REFUSED_TARGET}: the host resolves to {problem}")
        if not addresses:
            raise httpcore.ConnectError("cannot resolve the host")
        return await self._inner.connect_tcp(
            str(addresses[0]),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError(f"{REFUSED_TARGET}: a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport() -> httpx.AsyncHTTPTransport:
    """httpx's own transport, with its connection pool on :class:`TargetGuard`."""
    transport = httpx.AsyncHTTPTransport()
    # httpx 0.28 takes no network backend; its pool is made exactly like this, plus the guard.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(), network_backend=TargetGuard()
    )
    return transport


def payload(fact: Fact) -> bytes:
    booking, clinic = fact.booking, fact.clinic
    cm = clinic.cell_minutes
    data = {
        "booking": booking.id,
        "clinic": clinic.id,
        "resource": booking.resource,
        "service": booking.service,
        "start": epoch_iso(fact.start),
        "end": end_iso(booking.day, booking.cell, booking.cells, cm),
        "status": booking.status,
    }
    if fact.kind == "cancelled":
        data["cancelled_by"] = fact.by
    if fact.previous is not None:
        data["previous_start"] = epoch_iso(fact.previous_start)
    body = {
        "id": fact.event_id,
        "type": WEBHOOK_TYPES[fact.kind],
        "region": fact.region,
        "sequence": fact.position,
        "created_at": epoch_iso(fact.at),
        "data": data,
    }
    return orjson.dumps(body)


class FreshSubscriptions:
    """The store's ``subscriptions()`` as read no earlier than it was asked for, off the event
    loop, one read at a time: whoever asks while a read is under way waits for the next read,
    which begins after it asked and serves everyone who asked meanwhile (every region's runs). So
    facts are matched against the endpoints as they were after their entries were read (an
    endpoint created before a fact is seen, on any node), as when each run read them itself, with
    one store round trip per read rather than per run and region, and none on the event loop (with
    Redis a run's GET waited there behind the journal's fsyncs: ~28% of a node's loop under
    ``bench http --nodes 2``, py-spy, issue 11)."""

    def __init__(self, read: Callable[[], dict[str, list[Endpoint]]]) -> None:
        self._read = read
        self._next: asyncio.Future[dict[str, list[Endpoint]]] | None = None  # the read not begun yet
        self._reading: asyncio.Task[None] | None = None
        self.reads = 0

    async def get(self) -> dict[str, list[Endpoint]]:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieved)
        wanted = self._next
        if self._reading is None:
            self._reading = asyncio.create_task(self._read_while_asked(), name="webhook-subscriptions")
        return await asyncio.shield(wanted)  # a cancelled asker does not cancel the others' read

    async def _read_while_asked(self) -> None:
        try:
            while self._next is not None:
                serving, self._next = self._next, None
                try:
                    # not left running in a worker thread by a cancel: reads stay one at a time
                    found = await finish_first(in_consumer_thread(self._read))
                except Exception as exc:
                    serving.set_exception(exc)
                except BaseException:  # cancelled (the loop is closing): its askers are too
                    serving.cancel()
                    raise
                else:
                    serving.set_result(found)
                self.reads += 1
        finally:
            self._reading = None
            if self._next is not None:
                self._next.cancel()
                self._next = None


def _retrieved(future: asyncio.Future[dict[str, list[Endpoint]]]) -> None:
    if not future.cancelled():
        future.exception()  # every asker got it; none left to log it as never retrieved


class WebhookDispatcher:
    name = "webhooks"

    def __init__(
        self,
        source: Journal | Feed,
        store: Webhooks,
        *,
        clock: Callable[[], float] = time.time,
        regions: Iterable[str] | None = None,
        timeout_s: float = 5.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 3600.0,
        give_up_after_s: float = GIVE_UP_AFTER_S,
        poll_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._owns_feed = not isinstance(source, Feed)
        self.feed = source if isinstance(source, Feed) else Feed(source, regions=regions)
        self.store = store
        self.clock = clock
        self.regions = tuple(regions) if regions is not None else self.feed.regions
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.give_up_after_s = give_up_after_s
        self.poll_s = poll_s
        self._transport = transport
        self._cursors = PendingCursors(self.store.advance, CURSOR_FLUSH_S)
        self._wake = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        # delivery id -> when it may be attempted again (inf: delivered or given up), for attempts
        # that ended while a read of the heads was under way: that read may still show the delivery
        # as it was before, and it must not be posted again (or before its backoff)
        self._settled: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._owns_store = False
        self.subscriptions = FreshSubscriptions(store.subscriptions)
        self.feed.add(self)

    @classmethod
    def open(
        cls, source: Journal | Feed, data_dir: Path, redis_url: str | None = None, **options: object
    ) -> WebhookDispatcher:
        """The dispatcher of a data directory (``webhooks.sqlite3``), or of the Redis at
        ``redis_url``; it closes the store on stop."""
        dispatcher = cls(source, open_webhooks(data_dir, redis_url), **options)  # type: ignore[arg-type]
        dispatcher._owns_store = True
        return dispatcher

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self.timeout_s,
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would be connected to unchecked
            transport=self._transport if self._transport is not None else guarded_transport(),
            headers={"User-Agent": "tandtid-webhooks/1"},
        )
        self._tasks.append(
            self.feed.supervise(("webhooks",), "*", self._send_forever, name="webhooks-sender")
        )
        self._tasks.append(asyncio.create_task(self._cursors.flush_forever(), name="webhooks-cursors"))
        if self._owns_feed:
            await self.feed.start()

    async def stop(self) -> None:
        if self._owns_feed:
            await self.feed.stop()
        tasks = self._tasks + list(self._inflight.values())
        self._tasks = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._inflight.clear()
        await in_consumer_thread(self._cursors.flush)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._owns_store:
            self.store.close()

    def wake(self) -> None:
        """Look at the queue now (after a replay was queued)."""
        self._wake.set()

    def cursors(self) -> dict[str, int]:
        """The durable cursor per region (blocking; the feed calls it in a worker thread)."""
        return self.store.cursors()

    # -- queueing --------------------------------------------------------------------------------

    async def handle(self, region: str, entries: list[Entry]) -> None:
        """Queue the deliveries of a run of entries after the cursor and move the cursor past
        the last (one write for them all)."""
        rows: list[QueuedRow] = []
        subscriptions: dict[str, list[Endpoint]] | None = None
        for position, facts in entries:
            for fact in facts:
                event_type = WEBHOOK_TYPES.get(fact.kind)
                if event_type is None:
                    continue
                if subscriptions is None:
                    subscriptions = await self.subscriptions.get()  # read after the run was read
                endpoints = subscribers_in(subscriptions, fact.clinic.id, event_type, fact.at)
                if endpoints:
                    try:
                        body = payload(fact)
                    except ValueError:  # a time the calendar cannot place (never written by the engine)
                        log.warning("region %s position %d: event not deliverable; skipped", region, position)
                        continue
                    rows.extend((endpoint, fact.event_id, event_type, body) for endpoint in endpoints)
        position = entries[-1][0]
        if not rows:
            self._cursors.note(region, position)
            return
        # not left running in a worker thread by a cancel: a restarted pipeline that read the
        # cursor before this write landed would queue the deliveries again
        await finish_first(in_consumer_thread(self.store.enqueue, region, position, rows, self.clock()))
        self._cursors.discard(region)
        self._wake.set()

    # -- sending ---------------------------------------------------------------------------------

    async def _send_forever(self, up: Up) -> None:
        up()
        while True:
            self._wake.clear()
            # Only the deliveries of the regions this node follows (owns, with --node): the queue in
            # Redis is every node's, and each endpoint's deliveries are of its clinic's one region.
            following = self.feed.following
            heads = [h for h in await in_consumer_thread(self.store.heads) if h.delivery.region in following]
            now = self.clock()
            wait = self.poll_s
            shown = {head.delivery.id for head in heads}
            self._settled = {d: at for d, at in self._settled.items() if d in shown}  # others: read settled
            for head in heads:
                endpoint = head.delivery.endpoint
                if endpoint in self._inflight:
                    continue
                not_before = max(head.delivery.next_attempt_at, self._settled.get(head.delivery.id, 0.0))
                if not_before == math.inf:
                    continue  # delivered or given up while this read was under way
                if not_before <= now:
                    # a stop waits for the POST in flight and its record (else it is sent again)
                    task = asyncio.create_task(
                        finish_first(self._attempt(head)), name=f"webhook-{head.delivery.id}"
                    )
                    self._inflight[endpoint] = task
                else:
                    wait = min(wait, not_before - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):  # not wait_for: it can swallow a cancel
                    await self._wake.wait()

    async def _record(self, write: Callable[[], None]) -> None:
        """Record an attempt's outcome, retrying while the store fails (Redis away, a full disk):
        the POST has happened, and an outcome left unrecorded would send it again."""
        delay = 0.1
        while True:
            try:
                await in_consumer_thread(write)
                return
            except STORE_ERRORS as exc:
                log.error("a webhook attempt's outcome not recorded (%s); retrying in %.1fs", why(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _attempt(self, head: Attempt) -> None:
        delivery = head.delivery
        try:
            assert self._client is not None
            timestamp = int(self.clock())
            headers = {
                "Content-Type": "application/json",
                HEADER: sign(head.secret, delivery.body, timestamp),
                "Tandtid-Event-Id": delivery.event_id,
                "Tandtid-Delivery-Id": str(delivery.id),
                "Tandtid-Sequence": str(delivery.position),
            }
            status, error = 0, ""
            try:
                response = await self._client.post(head.url, content=delivery.body, headers=headers)
                status = response.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                refused = str(exc).startswith(REFUSED_TARGET)
                error = str(exc) if refused else exc.__class__.__name__
            now = self.clock()
            if not error:
                await self._record(lambda: self.store.delivered(delivery.id, now, status))
                self._settled[delivery.id] = math.inf
                return
            next_at: float | None = now + min(self.backoff_base_s * 2**delivery.attempts, self.backoff_cap_s)
            if now - delivery.created_at >= self.give_up_after_s:
                next_at = None
                log.warning(
                    "webhook delivery %d to endpoint %s given up after %d attempts",
                    delivery.id,
                    delivery.endpoint,
                    delivery.attempts + 1,
                )
            await self._record(lambda: self.store.attempt_failed(delivery.id, now, error, status, next_at))
            self._settled[delivery.id] = math.inf if next_at is None else next_at
        finally:
            self._inflight.pop(delivery.endpoint, None)
            self._wake.set()
