"""The live hub: WebSocket ``/ws``, topic subscriptions, fan-out and backpressure.

Flow of one committed batch::

    RegionActor turn -> journal append durable -> Hub.on_commit(Committed)   (sync, in the actor turn)
        -> pending diff items per topic (only topics somebody watches)
        -> flush (next loop iteration): ONE message per topic, encoded ONCE per encoding in
           use, the same str/bytes object queued to every subscriber's bounded deque
        -> each connection's sender task drains its deque with websocket.send_text/bytes

A flush normally covers exactly one batch; when the loop is busy it covers every batch
committed since the previous flush, so frame counts stay flat under load. Diffs carry
absolute values (free counts, cell states), so a diff that repeats a change a snapshot
already holds is harmless; that is what makes snapshots consistent: a snapshot is read and
its subscription registered in ONE ``regions.query`` call, inside the actor between
batches, and it carries the topic's current ``seq``; every later flush is ``seq + 1``.

Backpressure: a connection's deque holds at most ``settings.ws_send_buffer`` frames. When a
diff does not fit, the diffs already queued for that topic are dropped and the topic is
resynced (a fresh snapshot once the deque has drained). A connection that overflows again
and again before draining, whose queued bytes pass the byte bound, or whose socket has not
taken a frame for ``stall_s`` is closed with 1013 (try again later). Memory per connection
is thus bounded whatever a client does.

Signed-in patients also get ``{"type": "event", "topic": "me"}`` for their own bookings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.calendar import day_of_epoch, iso
from engine.events import Booked, Cancelled, ClinicRegistered, OfferMade, Rescheduled
from engine.state import RegionState
from server import metrics
from server.http.views import hold_view
from server.live.codec import (
    Encoding,
    Frame,
    MalformedMessage,
    decode_client,
    encode,
    encoding_from_query,
    wire_frame,
)
from server.live.protocol import RAW_WEBSOCKET, HubWebSocketProtocol
from server.live.topics import (
    BadTopic,
    TopicName,
    cell_items_by_clinic,
    clinic_exists,
    count_items,
    parse_range,
    parse_topic,
    snapshot_data,
)
from server.regions.actor import Committed, Reloaded
from server.regions.routing import Regions
from server.settings import Settings

log = logging.getLogger("tandtid.hub")

CLOSE_POLICY = 1008  # foreign Origin
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013  # slow consumer
CLOSE_GOING_AWAY = 1001

_KINDS = ("snapshot", "diff", "event", "control")
_ME_KINDS = {Booked: "booking_confirmed", Cancelled: "booking_cancelled", Rescheduled: "booking_moved"}


class Subscription:
    """One connection's interest in one topic, with the day range its snapshots cover."""

    __slots__ = ("conn", "topic", "first_day", "days", "resync")

    def __init__(self, conn: Connection, topic: Topic, first_day: int, days: int) -> None:
        self.conn = conn
        self.topic = topic
        self.first_day = first_day
        self.days = days
        self.resync = False  # diffs suppressed until a fresh snapshot is queued


class Topic:
    """A topic's sequence number, subscribers and encoded-snapshot cache."""

    __slots__ = ("name", "seq", "subscribers", "snapshots")

    def __init__(self, name: TopicName) -> None:
        self.name = name
        self.seq = 0
        self.subscribers: dict[Connection, Subscription] = {}
        # (first_day, days, encoding) -> encoded snapshot at the current seq and state
        self.snapshots: dict[tuple[int, int, Encoding], Frame] = {}


QueueItem = tuple[Subscription | None, str, Frame]


class Connection:
    """Per-socket state, kept small: a deque of shared frame objects and the subscriptions."""

    __slots__ = (
        "websocket",
        "raw",
        "encoding",
        "patient",
        "queue",
        "queued_bytes",
        "subs",
        "waiter",
        "sender",
        "strikes",
        "send_since",
        "closed",
        "resync_pending",
    )

    def __init__(
        self,
        websocket: WebSocket,
        encoding: Encoding,
        patient: str | None,
        raw: HubWebSocketProtocol | None = None,
    ) -> None:
        self.websocket = websocket
        # the uvicorn protocol when frames may be written straight to its transport (see
        # server/live/protocol.py); then there is no sender task, only a drain task while a backlog waits
        self.raw = raw
        self.encoding = encoding
        self.patient = patient
        self.queue: deque[QueueItem] = deque()
        self.queued_bytes = 0
        self.subs: dict[str, Subscription] = {}
        self.waiter: asyncio.Future[None] | None = None
        self.sender: asyncio.Task[None] | None = None
        self.strikes = 0  # overflows since the deque last drained
        self.send_since = 0.0  # loop time the frame being sent was handed to the socket; 0: idle
        self.closed = False
        self.resync_pending = False


class Hub:
    """Create once per app (it registers itself with ``regions``), mount ``endpoint`` at /ws,
    call ``start()`` on startup and ``await stop()`` on shutdown."""

    def __init__(
        self,
        regions: Regions,
        settings: Settings,
        *,
        max_subscriptions: int = 64,
        stall_s: float = 10.0,
        max_strikes: int = 3,
        max_queued_bytes: int | None = None,
        sweep_s: float = 1.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.regions = regions
        self.settings = settings
        self.max_queue = max(1, settings.ws_send_buffer)
        self.max_queued_bytes = max_queued_bytes or max(1 << 20, 32 * settings.max_ws_frame)
        self.max_subscriptions = max_subscriptions
        self.stall_s = stall_s
        self.max_strikes = max_strikes
        self.sweep_s = sweep_s
        self.close_timeout_s = close_timeout_s
        self.topics: dict[str, Topic] = {}
        self.connections: set[Connection] = set()
        self.patients: dict[str, set[Connection]] = {}
        self.frames_sent = 0
        self.dropped = 0
        self.resynced = 0
        self.queue_high_water = 0
        # topic key -> (earliest committed_at ms, data key, items) waiting for the next flush
        self._pending: dict[str, tuple[int, str, list[list[Any]]]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._frames_metric = {kind: metrics.WS_FRAMES_SENT.labels(kind=kind) for kind in _KINDS}
        self._direct_diffs = 0  # diff frames written straight to sockets, not yet added to the metric
        self._slow_metric = {
            action: metrics.WS_SLOW_CONSUMERS.labels(action=action) for action in ("resynced", "dropped")
        }
        regions.add_listener(self.on_commit)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the stall sweeper (needs a running loop). Idempotent."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="hub-sweeper")

    async def stop(self) -> None:
        """Stop sweeping and close every connection with 1001 (going away)."""
        self.regions.remove_listener(self.on_commit)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for conn in list(self.connections):
            self._shut(conn, CLOSE_GOING_AWAY)
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        self._report_direct()
        return {
            "connections": len(self.connections),
            "subscriptions": sum(len(t.subscribers) for t in self.topics.values()),
            "topics": sum(1 for t in self.topics.values() if t.subscribers),
            "frames_sent": self.frames_sent,
            "dropped": self.dropped,
            "resynced": self.resynced,
            "queued": sum(len(c.queue) for c in self.connections),
            "queue_high_water": self.queue_high_water,
            "queue_bound": self.max_queue,
        }

    # -- the socket --------------------------------------------------------------------------

    async def endpoint(self, websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        if origin and origin not in self.settings.allowed_origins:
            await websocket.close(code=CLOSE_POLICY)  # before accept: the handshake gets 403
            return
        encoding = encoding_from_query(websocket.query_params.get("encoding"))
        patient = self._patient_of(websocket)
        await websocket.accept()
        self.start()
        raw = websocket.scope.get("extensions", {}).get(RAW_WEBSOCKET)
        conn = Connection(
            websocket, encoding, patient, raw if isinstance(raw, HubWebSocketProtocol) else None
        )
        self.connections.add(conn)
        if patient is not None:
            self.patients.setdefault(patient, set()).add(conn)
        metrics.WS_CONNECTIONS.inc()
        if conn.raw is None:  # any other ASGI server: one sender task per connection
            conn.sender = asyncio.get_running_loop().create_task(self._send_loop(conn))
        try:
            await self._receive_loop(conn)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self._detach(conn)
            if conn.sender is not None and not conn.sender.done():
                conn.sender.cancel()
            self.connections.discard(conn)
            metrics.WS_CONNECTIONS.dec()

    async def _receive_loop(self, conn: Connection) -> None:
        websocket = conn.websocket
        limit = self.settings.max_ws_frame
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw: str | bytes | None = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            size = len(raw) if isinstance(raw, bytes) or len(raw) * 4 <= limit else len(raw.encode())
            if size > limit:
                self._shut(conn, CLOSE_TOO_BIG)
                continue  # keep reading until the client's disconnect arrives
            if conn.closed:
                continue  # being closed: read until the disconnect arrives
            try:
                request = decode_client(raw)
            except MalformedMessage as exc:
                self._control(conn, {"type": "error", "code": "INVALID", "message": str(exc)})
                continue
            await self._handle(conn, request)

    async def _handle(self, conn: Connection, request: dict[str, Any]) -> None:
        op = request.get("op")
        topic_value = request.get("topic")
        try:
            if op == "subscribe":
                await self._subscribe(conn, request)
            elif op == "unsubscribe":
                name = parse_topic(topic_value)
                sub = conn.subs.pop(name.key, None)
                if sub is not None:
                    self._forget(sub)
            elif op == "ping":
                self._control(conn, {"type": "pong"})
            else:
                raise BadTopic("INVALID", "unknown op: use subscribe, unsubscribe or ping")
        except BadTopic as exc:
            error: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
            if isinstance(topic_value, str) and len(topic_value) <= 100:
                error["topic"] = topic_value
            self._control(conn, error)

    async def _subscribe(self, conn: Connection, request: dict[str, Any]) -> None:
        name = parse_topic(request.get("topic"))
        actor = self.regions.actors.get(name.region)
        if actor is None:
            raise BadTopic("NOT_FOUND", "this server does not serve that region")
        first_day, days = parse_range(request, day_of_epoch(int(actor.clock())))
        if name.key not in conn.subs and len(conn.subs) >= self.max_subscriptions:
            raise BadTopic("LIMIT_REACHED", f"at most {self.max_subscriptions} subscriptions per connection")

        def register(state: RegionState) -> bool:
            # inside the actor, between batches: the snapshot and the registration are atomic
            if conn.closed:
                return True
            if name.kind == "clinic" and not clinic_exists(state, name.ident):
                return False
            topic = self.topics.get(name.key)
            if topic is None:
                topic = self.topics[name.key] = Topic(name)
            old = conn.subs.pop(name.key, None)
            if old is not None:
                self._forget(old)
            sub = Subscription(conn, topic, first_day, days)
            topic.subscribers[conn] = sub
            conn.subs[name.key] = sub
            self._push(
                conn, sub, "snapshot", self._snapshot_frame(state, topic, first_day, days, conn.encoding)
            )
            return True

        try:
            found = await self.regions.query(name.region, register)
        except Exception as exc:
            log.warning("subscribe to %s failed: %s", name.key, type(exc).__name__)
            raise BadTopic("UNAVAILABLE", "the region is not available right now; try again") from None
        if not found:
            raise BadTopic("NOT_FOUND", "no such clinic")

    # -- sending -----------------------------------------------------------------------------

    async def _send_loop(self, conn: Connection) -> None:
        websocket = conn.websocket
        send = websocket.send_bytes if conn.encoding is Encoding.MSGPACK else websocket.send_text
        queue = conn.queue
        loop = asyncio.get_running_loop()
        frames_metric = self._frames_metric
        try:
            while not conn.closed:
                if not queue:
                    conn.strikes = 0
                    if conn.resync_pending:
                        await self._resync(conn)
                        continue
                    conn.waiter = loop.create_future()
                    await conn.waiter
                    continue
                _sub, kind, frame = queue.popleft()
                conn.queued_bytes -= len(frame)
                conn.send_since = loop.time()
                await send(frame)  # type: ignore[arg-type]
                conn.send_since = 0.0
                self.frames_sent += 1
                frames_metric[kind].inc()
        except (WebSocketDisconnect, RuntimeError, OSError):
            conn.closed = True
            self._detach(conn)

    def _wake(self, conn: Connection) -> None:
        waiter = conn.waiter
        if waiter is not None:
            conn.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _push(
        self, conn: Connection, sub: Subscription | None, kind: str, frame: Frame, wire: bytes | None = None
    ) -> None:
        queue = conn.queue
        raw = conn.raw
        if raw is not None and not queue and not conn.closed and raw.writable_now():
            raw.transport.write(wire_frame(frame) if wire is None else wire)
            self.frames_sent += 1
            self._frames_metric[kind].inc()
            return
        size = len(frame)
        if len(queue) >= self.max_queue or conn.queued_bytes + size > self.max_queued_bytes:
            self._overflow(conn, sub)
            return
        queue.append((sub, kind, frame))
        conn.queued_bytes += size
        if len(queue) > self.queue_high_water:
            self.queue_high_water = len(queue)
        self._kick(conn)

    def _kick(self, conn: Connection) -> None:
        """Make sure somebody sends ``conn``'s queue (and its pending resyncs)."""
        if conn.raw is None:
            if conn.waiter is not None:
                self._wake(conn)
        elif conn.sender is None and not conn.closed:
            conn.sender = asyncio.get_running_loop().create_task(self._drain(conn))

    async def _drain(self, conn: Connection) -> None:
        """A direct connection's backlog: write it as the transport takes it, then resync."""
        raw = conn.raw
        assert raw is not None
        queue = conn.queue
        loop = asyncio.get_running_loop()
        frames_metric = self._frames_metric
        try:
            while not conn.closed:
                if queue:
                    if raw.disconnected or raw.close_sent or raw.transport.is_closing():
                        break  # the receive loop sees the disconnect and cleans up
                    if not raw.writable.is_set():
                        conn.send_since = loop.time()
                        await raw.writable.wait()
                        conn.send_since = 0.0
                        continue
                    _sub, kind, frame = queue.popleft()
                    conn.queued_bytes -= len(frame)
                    raw.transport.write(wire_frame(frame))
                    self.frames_sent += 1
                    frames_metric[kind].inc()
                    continue
                conn.strikes = 0
                if not conn.resync_pending:
                    break
                await self._resync(conn)
        finally:
            conn.send_since = 0.0
            if conn.sender is asyncio.current_task():
                conn.sender = None

    def _control(self, conn: Connection, message: dict[str, Any]) -> None:
        """A pong or an error: dropped if the deque is full (the client is behind anyway)."""
        if conn.closed or len(conn.queue) >= self.max_queue:
            return
        self._push(conn, None, "control", encode(message, conn.encoding))

    def _overflow(self, conn: Connection, sub: Subscription | None) -> None:
        conn.strikes += 1
        if sub is None or conn.strikes > self.max_strikes:
            self._drop(conn)
            return
        self._unqueue(conn, sub)
        if conn.queued_bytes >= self.max_queued_bytes:
            self._drop(conn)
            return
        if not sub.resync:
            sub.resync = True
            conn.resync_pending = True
            self.resynced += 1
            self._slow_metric["resynced"].inc()

    def _unqueue(self, conn: Connection, sub: Subscription) -> None:
        """Remove everything queued for ``sub`` (its diffs and any snapshot not yet sent)."""
        queue = conn.queue
        if not any(item[0] is sub for item in queue):
            return
        kept = [item for item in queue if item[0] is not sub]
        queue.clear()
        queue.extend(kept)
        conn.queued_bytes = sum(len(item[2]) for item in kept)

    def _drop(self, conn: Connection) -> None:
        if conn.closed:
            return
        self.dropped += 1
        self._slow_metric["dropped"].inc()
        log.info(
            "closing a slow WebSocket consumer (queue %d frames, %d bytes)",
            len(conn.queue),
            conn.queued_bytes,
        )
        self._shut(conn, CLOSE_TRY_AGAIN)

    def _shut(self, conn: Connection, code: int) -> None:
        """Stop sending to ``conn`` at once and close it with ``code`` in the background."""
        if conn.closed:
            return
        conn.closed = True
        self._detach(conn)
        conn.queue.clear()
        conn.queued_bytes = 0
        if conn.sender is not None and conn.sender is not asyncio.current_task():
            conn.sender.cancel()
        self._wake(conn)
        task = asyncio.get_running_loop().create_task(self._close(conn, code))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _close(self, conn: Connection, code: int) -> None:
        # A socket that does not read blocks the close frame too: give up after a while;
        # the connection then holds only the transport's bounded write buffer until it goes.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.websocket.close(code=code), timeout=self.close_timeout_s)

    def _detach(self, conn: Connection) -> None:
        for sub in conn.subs.values():
            topic = sub.topic
            if topic.subscribers.get(conn) is sub:
                del topic.subscribers[conn]
        conn.subs.clear()
        if conn.patient is not None:
            watchers = self.patients.get(conn.patient)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self.patients[conn.patient]

    def _forget(self, sub: Subscription) -> None:
        topic, conn = sub.topic, sub.conn
        if topic.subscribers.get(conn) is sub:
            del topic.subscribers[conn]
        self._unqueue(conn, sub)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_s)
            now = loop.time()
            for conn in list(self.connections):
                if conn.send_since and now - conn.send_since > self.stall_s:
                    self._drop(conn)

    # -- snapshots and resync ----------------------------------------------------------------

    def _snapshot_frame(
        self, state: RegionState, topic: Topic, first_day: int, days: int, encoding: Encoding
    ) -> Frame:
        """Runs inside the actor. Subscribers asking for the same range share one encoded frame."""
        key = (first_day, days, encoding)
        frame = topic.snapshots.get(key)
        if frame is None:
            if len(topic.snapshots) >= 16:
                topic.snapshots.clear()
            message = {
                "type": "snapshot",
                "topic": topic.name.key,
                "seq": topic.seq,
                "data": snapshot_data(state, topic.name, first_day, days),
            }
            frame = topic.snapshots[key] = encode(message, encoding)
        return frame

    async def _resync(self, conn: Connection) -> None:
        conn.resync_pending = False
        by_region: dict[str, list[Subscription]] = defaultdict(list)
        for sub in conn.subs.values():
            if sub.resync:
                by_region[sub.topic.name.region].append(sub)
        for region, subs in by_region.items():

            def resnapshot(state: RegionState, subs: list[Subscription] = subs) -> None:
                for sub in subs:
                    topic = sub.topic
                    if conn.closed or not sub.resync or topic.subscribers.get(conn) is not sub:
                        continue
                    sub.resync = False
                    self._push(
                        conn,
                        sub,
                        "snapshot",
                        self._snapshot_frame(state, topic, sub.first_day, sub.days, conn.encoding),
                    )

            try:
                await self.regions.query(region, resnapshot)
            except Exception as exc:  # the region is reloading: Reloaded will resync again
                log.info("resync from region %s failed (%s); retrying", region, type(exc).__name__)
                conn.resync_pending = True
                await asyncio.sleep(0.5)

    def _resync_topic(self, topic: Topic) -> None:
        """Every subscriber of ``topic`` gets a fresh snapshot (its seq continues, +1)."""
        topic.seq += 1
        topic.snapshots.clear()
        for conn, sub in topic.subscribers.items():
            self._unqueue(conn, sub)
            sub.resync = True
            conn.resync_pending = True
            if not conn.queue:
                self._kick(conn)

    # -- from the actors ---------------------------------------------------------------------

    def on_commit(self, item: Committed | Reloaded) -> None:
        """Called by a region actor right after a durable batch (or a reload). Never blocks."""
        if isinstance(item, Reloaded):
            self._on_reloaded(item.region)
            return
        topics = self.topics
        committed_ms = int(item.committed_at * 1000)
        if item.counts:
            topic = topics.get("region:" + item.region)
            if topic is not None:
                topic.snapshots.clear()  # cached snapshots no longer match state
                if topic.subscribers:
                    self._add_pending(topic, committed_ms, "counts", count_items(item.counts))
        if item.changes:
            for clinic, cells in cell_items_by_clinic(item.changes).items():
                topic = topics.get("clinic:" + clinic)
                if topic is not None:
                    topic.snapshots.clear()
                    if topic.subscribers:
                        self._add_pending(topic, committed_ms, "cells", cells)
        for event in item.events:
            if type(event) is ClinicRegistered:
                # a new clinic or new resources: a diff cannot say that, a snapshot can
                for key in ("region:" + item.region, "clinic:" + str(event.clinic.get("id", ""))):
                    topic = topics.get(key)
                    if topic is not None:
                        self._pending.pop(key, None)
                        self._resync_topic(topic)
        if self.patients:
            self._notify_patients(item)

    def _add_pending(self, topic: Topic, committed_ms: int, data_key: str, items: list[list[Any]]) -> None:
        pending = self._pending.get(topic.name.key)
        if pending is None:
            self._pending[topic.name.key] = (committed_ms, data_key, items)
        else:
            pending[2].extend(items)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        for key, (committed_ms, data_key, items) in pending.items():
            topic = self.topics.get(key)
            if topic is None or not topic.subscribers:
                continue
            topic.seq += 1
            topic.snapshots.clear()
            message = {
                "type": "diff",
                "topic": key,
                "seq": topic.seq,
                "committed_at": committed_ms,
                "data": {data_key: items},
            }
            # per encoding in use: the message encoded once and framed once for every subscriber
            frames: dict[Encoding, tuple[Frame, bytes]] = {}
            direct = 0
            for conn, sub in list(topic.subscribers.items()):
                if sub.resync:
                    continue
                encoded = frames.get(conn.encoding)
                if encoded is None:
                    frame = encode(message, conn.encoding)
                    encoded = frames[conn.encoding] = (frame, wire_frame(frame))
                raw = conn.raw
                # the hot path: nothing queued, socket writable -> the shared bytes go out now
                if raw is not None and not conn.queue and raw.writable_now():
                    raw.transport.write(encoded[1])
                    direct += 1
                else:
                    self._push(conn, sub, "diff", encoded[0], encoded[1])
            self.frames_sent += direct
            self._direct_diffs += direct
        self._report_direct()

    def _report_direct(self) -> None:
        if self._direct_diffs:
            self._frames_metric["diff"].inc(self._direct_diffs)
            self._direct_diffs = 0

    def _on_reloaded(self, region: str) -> None:
        for key in [k for k, t in self.topics.items() if t.name.region == region]:
            self._pending.pop(key, None)
            topic = self.topics[key]
            if topic.subscribers:
                self._resync_topic(topic)

    def _notify_patients(self, item: Committed) -> None:
        actor = self.regions.actors.get(item.region)
        if actor is None:
            return
        state = actor.state  # safe: on_commit runs inside the actor's turn
        for event in item.events:
            if isinstance(event, OfferMade):
                # a wait-list offer: the patient's new hold (gone already if released in the same batch)
                hold = state.holds.get(event.hold_id)
                watchers = self.patients.get(event.patient)
                if hold is None or not watchers:
                    continue
                data: dict[str, Any] = {"kind": "offer", "hold": hold_view(hold, state.clinics[hold.clinic])}
            else:
                kind = _ME_KINDS.get(type(event))
                if kind is None:
                    continue
                booking = state.bookings.get(event.booking_id)  # type: ignore[union-attr]
                if booking is None:
                    continue
                watchers = self.patients.get(booking.patient)
                if not watchers:
                    continue
                data = {"kind": kind, "booking": self._booking_view(state, booking)}
            message = {"type": "event", "topic": "me", "data": data}
            frames: dict[Encoding, Frame] = {}
            for conn in list(watchers):
                frame = frames.get(conn.encoding)
                if frame is None:
                    frame = frames[conn.encoding] = encode(message, conn.encoding)
                self._push(conn, None, "event", frame)

    @staticmethod
    def _booking_view(state: RegionState, booking: Any) -> dict[str, Any]:
        """A booking as patients see it: no personal data, not even the patient id."""
        clinic = state.clinics.get(booking.clinic)
        cell_minutes = clinic.cell_minutes if clinic is not None else 15
        view: dict[str, Any] = {
            "id": booking.id,
            "clinic": booking.clinic,
            "resource": booking.resource,
            "service": booking.service,
            "status": booking.status,
        }
        end_day, end_cell = booking.day, booking.cell + booking.cells
        if end_cell * cell_minutes >= 24 * 60:
            end_day, end_cell = end_day + 1, end_cell - 24 * 60 // cell_minutes
        try:
            view["start"] = iso(booking.day, booking.cell, cell_minutes)
            view["end"] = iso(end_day, end_cell, cell_minutes)
        except ValueError:  # a DST gap edge: leave the times to the HTTP API
            view.setdefault("start", "")
            view["end"] = ""
        if clinic is not None:
            view["clinic_name"] = clinic.name
        return view

    @staticmethod
    def _patient_of(websocket: WebSocket) -> str | None:
        """The signed-in patient's opaque id, or None (anonymous, staff, clinic keys)."""
        try:
            from server.identity.auth import principal_from

            principal = principal_from(websocket)
        except Exception:  # no auth wiring in this app (e.g. a bare test app)
            return None
        if principal is not None and principal.role == "patient" and principal.user_id:
            return principal.user_id
        return None
