"""The webhook dispatcher: a journal consumer that queues deliveries, and a sender that posts them.

Consumer: like the notifier (``server.consumers.feed``), per region it replays the journal into a
projection and, for each entry after its cursor, queues one delivery per (fact, subscribed
endpoint of the fact's clinic) — in the same transaction that moves the cursor.

Sender: for every endpoint, only its oldest pending delivery is in flight (strict sequence
order). A POST answered 2xx is delivered; anything else (status, timeout, refused
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
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson

from engine.model import REGIONS
from persistence.journal import Journal
from server.consumers.feed import Fact, PendingCursors, Projection, follow_region
from server.consumers.webhooks.signing import HEADER, sign
from server.consumers.webhooks.store import Attempt, QueuedRow, WebhookStore
from server.http.views import end_iso, epoch_iso

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


def url_problem(url: str, *, allow_http: bool = False) -> str | None:
    """Why ``url`` cannot be a webhook endpoint, or None. HTTPS only; plain HTTP only to
    loopback and only when ``allow_http`` (TANDTID_WEBHOOK_ALLOW_HTTP=1, for tests). Literal
    private, loopback and link-local addresses are refused over HTTPS too."""
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
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None if host != "localhost" else "that host is not reachable from the internet"
    if not address.is_global:
        return "that address is not reachable from the internet"
    return None


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


class WebhookDispatcher:
    def __init__(
        self,
        journal: Journal,
        store: WebhookStore,
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
        self.journal = journal
        self.store = store
        self.clock = clock
        self.regions = tuple(regions) if regions is not None else tuple(r.code for r in REGIONS)
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.give_up_after_s = give_up_after_s
        self.poll_s = poll_s
        self._transport = transport
        self.projection = Projection()
        self._cursors = PendingCursors(self.store.advance, CURSOR_FLUSH_S)
        self._wake = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._owns_store = False

    @classmethod
    def open(cls, journal: Journal, data_dir: Path, **options: object) -> WebhookDispatcher:
        """The dispatcher of a data directory (``webhooks.sqlite3``); it closes the store on stop."""
        dispatcher = cls(journal, WebhookStore(data_dir / "webhooks.sqlite3"), **options)  # type: ignore[arg-type]
        dispatcher._owns_store = True
        return dispatcher

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self.timeout_s,
            follow_redirects=False,
            transport=self._transport,
            headers={"User-Agent": "tandtid-webhooks/1"},
        )
        cursors = await asyncio.to_thread(self.store.cursors)
        for region in self.regions:
            self._tasks.append(
                asyncio.create_task(
                    follow_region(
                        self.journal,
                        region,
                        self.projection,
                        cursor=cursors.get(region, 0),
                        handle=self._handle,
                    ),
                    name=f"webhooks-{region}",
                )
            )
        self._tasks.append(asyncio.create_task(self._send_forever(), name="webhooks-sender"))
        self._tasks.append(asyncio.create_task(self._cursors.flush_forever(), name="webhooks-cursors"))
        for task in self._tasks:
            task.add_done_callback(self._crashed)

    async def stop(self) -> None:
        tasks = self._tasks + list(self._inflight.values())
        self._tasks = []
        for task in tasks:
            task.remove_done_callback(self._crashed)
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._inflight.clear()
        await asyncio.to_thread(self._cursors.flush)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._owns_store:
            self.store.close()

    def wake(self) -> None:
        """Look at the queue now (after a replay was queued)."""
        self._wake.set()

    @staticmethod
    def _crashed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook task %s died", task.get_name(), exc_info=task.exception())

    # -- queueing --------------------------------------------------------------------------------

    async def _handle(self, region: str, position: int, facts: list[Fact], act: bool) -> None:
        if not act:
            return
        rows: list[QueuedRow] = []
        for fact in facts:
            event_type = WEBHOOK_TYPES.get(fact.kind)
            if event_type is None:
                continue
            endpoints = await asyncio.to_thread(self.store.subscribers, fact.clinic.id, event_type, fact.at)
            if endpoints:
                try:
                    body = payload(fact)
                except ValueError:  # a time the calendar cannot place (never written by the engine)
                    log.warning("region %s position %d: event not deliverable; skipped", region, position)
                    continue
                rows.extend((endpoint, fact.event_id, event_type, body) for endpoint in endpoints)
        if not rows:
            self._cursors.note(region, position)
            return
        await asyncio.to_thread(self.store.enqueue, region, position, rows, self.clock())
        self._cursors.discard(region)
        self._wake.set()

    # -- sending ---------------------------------------------------------------------------------

    async def _send_forever(self) -> None:
        while True:
            self._wake.clear()
            heads = await asyncio.to_thread(self.store.heads)
            now = self.clock()
            wait = self.poll_s
            for head in heads:
                endpoint = head.delivery.endpoint
                if endpoint in self._inflight:
                    continue
                if head.delivery.next_attempt_at <= now:
                    task = asyncio.create_task(self._attempt(head), name=f"webhook-{head.delivery.id}")
                    self._inflight[endpoint] = task
                else:
                    wait = min(wait, head.delivery.next_attempt_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.0))

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
                error = exc.__class__.__name__
            now = self.clock()
            if not error:
                await asyncio.to_thread(self.store.delivered, delivery.id, now, status)
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
            await asyncio.to_thread(self.store.attempt_failed, delivery.id, now, error, status, next_at)
        finally:
            self._inflight.pop(delivery.endpoint, None)
            self._wake.set()
