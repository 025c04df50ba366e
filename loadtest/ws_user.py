"""A WebSocket-capable Locust user: ``WebSocketUser`` = an HTTP user plus one live connection.

``LiveConnection`` speaks the ``/ws`` protocol of docs/API.md over ``websocket-client`` (plain
sockets, which Locust's gevent monkey-patching makes cooperative). A reader greenlet per
connection receives every frame and reports to Locust's own statistics:

- ``WS  snapshot region`` / ``snapshot clinic``: time from sending ``subscribe`` to its snapshot;
- ``WS  diff region`` / ``diff clinic``: delivery latency, now minus the diff's ``committed_at``
  (the server's commit time, epoch ms; client and server share a clock on 127.0.0.1);
- failures ``WS  seq gap`` (then it resubscribes, as a browser must), ``WS  error <code>``,
  ``WS  connection lost``.

Subclasses of ``WebSocketUser`` call ``self.live.subscribe(topic, ...)`` and override
``on_diff(topic, data)`` (called in the reader greenlet: it must not block; hand work to the
user's own greenlet through a queue).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import gevent
import orjson
import websocket
from gevent.event import AsyncResult
from locust import FastHttpUser
from locust.env import Environment

WS = "WS"
DiffHandler = Callable[[str, dict[str, Any]], None]


def ws_url(host: str) -> str:
    """``http://h:p`` -> ``ws://h:p/ws`` (``https`` -> ``wss``)."""
    base = host.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/ws"
    return base + "/ws"


def topic_kind(topic: str) -> str:
    return topic.split(":", 1)[0]


class LiveConnection:
    """One ``/ws`` connection with its reader greenlet. Open with ``open()``; always ``close()``."""

    def __init__(
        self,
        environment: Environment,
        host: str,
        *,
        on_diff: DiffHandler | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.environment = environment
        self.url = ws_url(host)
        self.on_diff = on_diff
        self.timeout_s = timeout_s
        self.seq: dict[str, int] = {}  # topic -> last seq seen
        self.wanted: dict[str, dict[str, Any]] = {}  # topic -> its subscribe message
        self.sent_at: dict[str, float] = {}  # topic -> perf_counter of the subscribe
        self.waiting: dict[str, AsyncResult[dict[str, Any]]] = {}  # topic -> snapshot future
        self.diffs = 0
        self.gaps = 0
        self._ws: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet[[], None] | None = None
        self._closing = False

    # -- reporting ---------------------------------------------------------------------------

    def _report(
        self, name: str, response_time_ms: float, length: int = 0, exception: BaseException | None = None
    ) -> None:
        # locust's EventHook.fire(**kwargs) carries no annotations
        self.environment.events.request.fire(  # type: ignore[no-untyped-call]
            request_type=WS,
            name=name,
            response_time=response_time_ms,
            response_length=length,
            exception=exception,
            context={},
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        started = time.perf_counter()
        try:
            # enable_multithread: the user's greenlet and the reader (resubscribing) may both send
            # websocket-client checks a text frame's UTF-8 in pure Python (without the optional
            # wsaccel): 38% of the load generator's CPU in a bench mix run. Decoding the frame to a
            # str (in C) still refuses bad UTF-8.
            self._ws = websocket.create_connection(
                self.url, timeout=self.timeout_s, enable_multithread=True, skip_utf8_validation=True
            )
        except (OSError, websocket.WebSocketException) as exc:
            self._report("connect", (time.perf_counter() - started) * 1000, exception=exc)
            raise
        self._report("connect", (time.perf_counter() - started) * 1000)
        self._ws.settimeout(None)  # the reader blocks (cooperatively) until a frame or close
        self._reader = gevent.spawn(self._read_forever)

    def close(self) -> None:
        self._closing = True
        # the reader first: only one greenlet may wait on the socket, and close() reads the reply
        if self._reader is not None and not self._reader.dead:
            self._reader.kill(block=True)
        if self._ws is not None:
            with contextlib.suppress(OSError, websocket.WebSocketException):
                self._ws.close(timeout=1)
            # close() skips the socket when the server had closed first; websocket-client leaves
            # shutdown() unannotated
            self._ws.shutdown()  # type: ignore[no-untyped-call]
        for result in self.waiting.values():
            if not result.ready():
                result.set_exception(ConnectionError("connection closed"))
        self.waiting.clear()

    @property
    def connected(self) -> bool:
        """True while the reader runs: it ends when the server closes or the socket fails."""
        return self._reader is not None and not self._reader.dead and not self._closing

    def reconnect(self) -> None:
        """A new socket after a lost one (e.g. closed 1013, too slow), with every topic asked again.
        Call from the user's greenlet only, never from ``on_diff``."""
        if self._ws is not None:
            self._ws.shutdown()  # type: ignore[no-untyped-call]  # unannotated in websocket-client
        self.seq.clear()
        self.open()
        for topic, message in list(self.wanted.items()):
            self.sent_at[topic] = time.perf_counter()
            self._send(message)

    def _ensure_open(self) -> None:
        if not self.connected and not self._closing:
            self.reconnect()

    # -- client -> server --------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        self._ws.send(orjson.dumps(message).decode())

    def subscribe(
        self, topic: str, *, from_: str | None = None, days: int | None = None, wait: bool = True
    ) -> dict[str, Any] | None:
        """Subscribe and (with ``wait``) return the snapshot's ``data``; raises on timeout."""
        message: dict[str, Any] = {"op": "subscribe", "topic": topic}
        if from_ is not None:
            message["from"] = from_
        if days is not None:
            message["days"] = days
        self._ensure_open()
        self.wanted[topic] = message
        self.seq.pop(topic, None)
        result: AsyncResult[dict[str, Any]] = AsyncResult()
        self.waiting[topic] = result
        self.sent_at[topic] = time.perf_counter()
        self._send(message)
        if not wait:
            return None
        return result.get(timeout=self.timeout_s)

    def unsubscribe(self, topic: str) -> None:
        self.wanted.pop(topic, None)
        self.seq.pop(topic, None)
        self.waiting.pop(topic, None)
        if self.connected:
            self._send({"op": "unsubscribe", "topic": topic})

    def ping(self) -> None:
        self._ensure_open()
        self._send({"op": "ping"})

    # -- server -> client --------------------------------------------------------------------

    def _read_forever(self) -> None:
        assert self._ws is not None
        while True:
            try:
                frame = self._ws.recv()
            except (OSError, websocket.WebSocketException) as exc:
                if not self._closing:
                    self._report("connection lost", 0, exception=exc)
                return
            if not frame:
                if not self._closing:
                    self._report("connection lost", 0, exception=ConnectionError("closed by server"))
                return
            self._handle(frame, time.time())

    def _handle(self, frame: str | bytes, arrived_s: float) -> None:
        message = orjson.loads(frame)
        kind = message.get("type")
        topic = message.get("topic", "")
        if kind == "snapshot":
            self._on_snapshot(topic, message, len(frame))
        elif kind == "diff":
            self._on_diff(topic, message, len(frame), arrived_s)
        elif kind == "error":
            self._report(
                f"error {message.get('code', '?')}",
                0,
                exception=RuntimeError(message.get("message", "error frame")),
            )

    def _on_snapshot(self, topic: str, message: dict[str, Any], length: int) -> None:
        if topic not in self.wanted:
            return
        self.seq[topic] = int(message["seq"])
        sent = self.sent_at.pop(topic, None)
        if sent is not None:
            self._report(f"snapshot {topic_kind(topic)}", (time.perf_counter() - sent) * 1000, length)
        result = self.waiting.pop(topic, None)
        if result is not None and not result.ready():
            result.set(message["data"])

    def _on_diff(self, topic: str, message: dict[str, Any], length: int, arrived_s: float) -> None:
        last = self.seq.get(topic)
        if last is None:  # not subscribed (any more), or still waiting for the snapshot
            return
        seq = int(message["seq"])
        if seq != last + 1:
            self.gaps += 1
            self._report("seq gap", 0, exception=RuntimeError(f"{topic}: seq {last} then {seq}"))
            self.resubscribe(topic)
            return
        self.seq[topic] = seq
        self.diffs += 1
        latency_ms = max(0.0, arrived_s * 1000 - float(message["committed_at"]))
        self._report(f"diff {topic_kind(topic)}", latency_ms, length)
        if self.on_diff is not None:
            self.on_diff(topic, message["data"])

    def resubscribe(self, topic: str) -> None:
        """After a gap: forget the topic's sequence and ask again for a fresh snapshot."""
        message = self.wanted.get(topic)
        if message is None:
            return
        self.seq.pop(topic, None)
        self.sent_at[topic] = time.perf_counter()
        self._send(message)


class WebSocketUser(FastHttpUser):
    """An HTTP user with one live WebSocket connection (``self.live``), opened in ``on_start``
    and closed in ``on_stop``. Subclasses that override these must call ``super()``."""

    abstract = True
    live: LiveConnection

    def on_start(self) -> None:
        assert self.host is not None
        self.live = LiveConnection(self.environment, self.host, on_diff=self.on_diff)
        self.live.open()

    def on_stop(self) -> None:
        live = getattr(self, "live", None)
        if live is not None:
            live.close()
        self.client.client.close()  # the HTTP connection pool: nothing left to the garbage collector

    def on_diff(self, topic: str, data: dict[str, Any]) -> None:
        """Called in the reader greenlet for every in-order diff; must not block."""
