"""Sending to WebSocket connections: one bounded queue of shared frames per socket, backpressure.

A frame is encoded once per encoding and the very same ``str``/``bytes`` object goes to every
connection that should get it. On uvicorn with the hub's protocol (``server/live/protocol.py``)
a frame is written straight to the transport while nothing is queued and the socket is
writable; otherwise it waits in the connection's deque, drained by a task that exists only
while there is a backlog. On any other ASGI server each connection has one sender task.

Backpressure: a connection's deque holds at most ``max_queue`` frames. When a diff does not
fit, everything already queued for that subscription is dropped and the subscription is
marked for resync (a fresh snapshot, fetched through the ``resync`` callback once the deque
has drained). A connection that overflows again and again before draining, whose queued bytes
pass ``max_queued_bytes``, or whose socket has not taken a frame for ``stall_s`` is closed with
1013 (try again later). Memory per connection is thus bounded whatever a client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from server import metrics
from server.live.codec import Encoding, Frame, encode, wire_frame
from server.live.protocol import HubWebSocketProtocol

if TYPE_CHECKING:
    from server.live.fanout import Topic

log = logging.getLogger("tandtid.hub")

CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013  # slow consumer
CLOSE_SIGNED_OUT = 4401  # the session the socket was opened with ended (sign-out, password change)

KINDS = ("snapshot", "diff", "event", "control")


class Subscription:
    """One connection's interest in one topic, with the day range its snapshots cover."""

    __slots__ = ("conn", "topic", "first_day", "days", "service", "resync")

    def __init__(self, conn: Connection, topic: Topic, first_day: int, days: int, service: str) -> None:
        self.conn = conn
        self.topic = topic
        self.first_day = first_day
        self.days = days
        self.service = service  # what a region snapshot's ``starts`` count
        self.resync = False  # diffs suppressed until a fresh snapshot is queued


QueueItem = tuple[Subscription | None, str, Frame]


class Connection:
    """Per-socket state, kept small: a deque of shared frame objects and the subscriptions."""

    __slots__ = (
        "websocket",
        "raw",
        "encoding",
        "patient",
        "session",
        "queue",
        "queued_bytes",
        "subs",
        "waiter",
        "sender",
        "strikes",
        "send_since",
        "closed",
        "resync_pending",
        "resync_delay",
    )

    def __init__(
        self,
        websocket: WebSocket,
        encoding: Encoding,
        patient: str | None,
        raw: HubWebSocketProtocol | None = None,
        session: str | None = None,
    ) -> None:
        self.websocket = websocket
        # the uvicorn protocol when frames may be written straight to its transport; then
        # there is no sender task, only a drain task while a backlog waits
        self.raw = raw
        self.encoding = encoding
        self.patient = patient
        self.session = session  # the patient's session id: the socket ends with it
        self.queue: deque[QueueItem] = deque()
        self.queued_bytes = 0
        self.subs: dict[str, Subscription] = {}
        self.waiter: asyncio.Future[None] | None = None
        self.sender: asyncio.Task[None] | None = None
        self.strikes = 0  # overflows since the deque last drained
        self.send_since = 0.0  # loop time the frame being sent was handed to the socket; 0: idle
        self.closed = False
        self.resync_pending = False
        self.resync_delay = 0.0  # the last backoff after a failed resync (server.live.fanout)


class Sender:
    """Sends frames to every open connection within the bounds above.

    ``detach(conn)`` is called when a connection stops being sent to (its subscriptions and
    watches must go); ``resync(conn)`` when its deque has drained and some of its subscriptions
    wait for a fresh snapshot. Call ``start()`` with a running loop and ``await stop()`` at the end.
    """

    def __init__(
        self,
        *,
        detach: Callable[[Connection], None],
        resync: Callable[[Connection], Awaitable[None]],
        max_queue: int,
        max_queued_bytes: int,
        max_strikes: int = 3,
        stall_s: float = 10.0,
        sweep_s: float = 1.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        self._detach = detach
        self._resync = resync
        self.max_queue = max(1, max_queue)
        self.max_queued_bytes = max_queued_bytes
        self.max_strikes = max_strikes
        self.stall_s = stall_s
        self.sweep_s = sweep_s
        self.close_timeout_s = close_timeout_s
        self.connections: set[Connection] = set()
        self.frames_sent = 0
        self.dropped = 0
        self.resynced = 0
        self.queue_high_water = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()
        self._frames_metric = {kind: metrics.WS_FRAMES_SENT.labels(kind=kind) for kind in KINDS}
        self._slow_metric = {
            action: metrics.WS_SLOW_CONSUMERS.labels(action=action) for action in ("resynced", "dropped")
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the stall sweeper (needs a running loop). Idempotent."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="hub-sweeper")

    async def stop(self) -> None:
        """Stop sweeping and close every connection with 1001 (going away)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for conn in list(self.connections):
            self.shut(conn, CLOSE_GOING_AWAY)
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    def open(self, conn: Connection) -> None:
        """An accepted connection starts being sent to."""
        self.connections.add(conn)
        metrics.WS_CONNECTIONS.inc()
        if conn.raw is None:  # any other ASGI server: one sender task per connection
            conn.sender = asyncio.get_running_loop().create_task(self._send_loop(conn))

    def release(self, conn: Connection) -> None:
        """The connection's socket is gone (its endpoint returns)."""
        self._detach(conn)
        if conn.sender is not None and not conn.sender.done():
            conn.sender.cancel()
        self.connections.discard(conn)
        metrics.WS_CONNECTIONS.dec()

    # -- queueing ----------------------------------------------------------------------------

    def push(
        self, conn: Connection, sub: Subscription | None, kind: str, frame: Frame, wire: bytes | None = None
    ) -> None:
        """Send ``frame`` now if the socket takes it, else queue it (``wire``: ``frame`` already
        framed, shared by many connections)."""
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
        self.kick(conn)

    def broadcast(
        self, targets: Iterable[tuple[Connection, Subscription | None]], kind: str, message: dict[str, Any]
    ) -> None:
        """``message`` to every target: encoded and framed once per encoding in use."""
        frames: dict[Encoding, tuple[Frame, bytes]] = {}
        direct = 0
        for conn, sub in list(targets):  # a push may close a connection and detach it
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
                self.push(conn, sub, kind, encoded[0], encoded[1])
        if direct:
            self.frames_sent += direct
            self._frames_metric[kind].inc(direct)

    def control(self, conn: Connection, message: dict[str, Any]) -> None:
        """A pong or an error: dropped if the deque is full (the client is behind anyway)."""
        if conn.closed or len(conn.queue) >= self.max_queue:
            return
        self.push(conn, None, "control", encode(message, conn.encoding))

    def unqueue(self, conn: Connection, sub: Subscription) -> None:
        """Remove everything queued for ``sub`` (its diffs and any snapshot not yet sent)."""
        queue = conn.queue
        if not any(item[0] is sub for item in queue):
            return
        kept = [item for item in queue if item[0] is not sub]
        queue.clear()
        queue.extend(kept)
        conn.queued_bytes = sum(len(item[2]) for item in kept)

    def kick(self, conn: Connection) -> None:
        """Make sure somebody sends ``conn``'s queue (and its pending resyncs)."""
        if conn.raw is None:
            if conn.waiter is not None:
                self._wake(conn)
        elif conn.sender is None and not conn.closed:
            conn.sender = asyncio.get_running_loop().create_task(self._drain(conn))

    def _wake(self, conn: Connection) -> None:
        waiter = conn.waiter
        if waiter is not None:
            conn.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _overflow(self, conn: Connection, sub: Subscription | None) -> None:
        conn.strikes += 1
        if sub is None or conn.strikes > self.max_strikes:
            self.drop(conn)
            return
        self.unqueue(conn, sub)
        if conn.queued_bytes >= self.max_queued_bytes:
            self.drop(conn)
            return
        if not sub.resync:
            sub.resync = True
            conn.resync_pending = True
            self.resynced += 1
            self._slow_metric["resynced"].inc()

    # -- the senders -------------------------------------------------------------------------

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

    # -- closing -----------------------------------------------------------------------------

    def drop(self, conn: Connection) -> None:
        """Close a slow consumer with 1013 (try again later)."""
        if conn.closed:
            return
        self.dropped += 1
        self._slow_metric["dropped"].inc()
        log.info(
            "closing a slow WebSocket consumer (queue %d frames, %d bytes)",
            len(conn.queue),
            conn.queued_bytes,
        )
        self.shut(conn, CLOSE_TRY_AGAIN)

    def shut(self, conn: Connection, code: int) -> None:
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

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_s)
            now = loop.time()
            for conn in list(self.connections):
                if conn.send_since and now - conn.send_since > self.stall_s:
                    self.drop(conn)
