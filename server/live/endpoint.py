"""The WebSocket endpoint ``/ws``: the handshake, then the client's ops on one connection.

Client -> server, one JSON object per frame (msgpack too on a ``?encoding=msgpack`` socket)::

    {"op": "subscribe", "topic": "region:AB" | "clinic:AB-c1", "from": "YYYY-MM-DD", "days": 14,
     "service": "checkup"}                           (service: region topics, what ``starts`` count)
    {"op": "unsubscribe", "topic": ...}
    {"op": "ping"}                                   -> {"type": "pong"}

A bad op, topic or range is answered with ``{"type": "error", "code", "message", "topic"?}``
and the connection stays open; a frame above ``settings.max_ws_frame`` closes it with 1009.
A handshake from a foreign ``Origin`` is refused (403) before the upgrade, and so is one over
the connection caps (``server/live/admission.py``: 429 per address, 503 for the whole server).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.calendar import day_of_epoch
from server import metrics
from server.live.admission import Admission, Refusal
from server.live.codec import MalformedMessage, decode_client, encoding_from_query
from server.live.connection import Connection, Sender
from server.live.fanout import Fanout
from server.live.me_events import MeEvents
from server.live.protocol import RAW_WEBSOCKET, HubWebSocketProtocol
from server.live.topics import BadTopic, parse_range, parse_service, parse_topic
from server.regions.routing import Regions
from server.settings import Settings

CLOSE_POLICY = 1008  # foreign Origin
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013  # over a connection cap, on a server without denial responses (then 403)
REFUSED_STATUS: dict[Refusal, int] = {"per_ip": 429, "global": 503}
REFUSED_MESSAGE: dict[Refusal, str] = {
    "per_ip": "too many live connections from this address; close some or try again later",
    "global": "the server holds as many live connections as it can; try again later",
}


class SignedIn(Protocol):
    @property
    def user_id(self) -> str: ...
    @property
    def session(self) -> str: ...


Identify = Callable[[HTTPConnection], SignedIn | None]
"""The signed-in patient of a handshake (opaque id and session id), or None
(``server.identity.auth.patient_of``)."""


class LiveEndpoint:
    """The ASGI WebSocket endpoint; one call per connection, returning when the socket ends."""

    def __init__(
        self,
        regions: Regions,
        settings: Settings,
        sender: Sender,
        fanout: Fanout,
        me: MeEvents,
        *,
        identify: Identify | None = None,
        max_subscriptions: int = 64,
    ) -> None:
        self.regions = regions
        self.settings = settings
        self.sender = sender
        self.fanout = fanout
        self.me = me
        self.identify = identify
        self.max_subscriptions = max_subscriptions
        self.admission = Admission(settings)
        self._refused = {
            reason: metrics.WS_REFUSED.labels(reason=reason) for reason in ("origin", "per_ip", "global")
        }

    async def __call__(self, websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        if origin and origin not in self.settings.allowed_origins:
            self._refused["origin"].inc()
            await websocket.close(code=CLOSE_POLICY)  # before accept: the handshake gets 403
            return
        ip = websocket.client.host if websocket.client is not None else "unknown"
        refusal = self.admission.admit(ip)
        if refusal is not None:
            self._refused[refusal].inc()
            await self._refuse(websocket, refusal)
            return
        try:
            await self._serve(websocket)
        finally:
            self.admission.release(ip)

    async def _refuse(self, websocket: WebSocket, refusal: Refusal) -> None:
        """Answer the handshake with 429/503 and a JSON error (403 where the server cannot)."""
        if "websocket.http.response" not in websocket.scope.get("extensions", {}):
            await websocket.close(code=CLOSE_TRY_AGAIN)
            return
        body = {"error": {"code": "TOO_MANY_CONNECTIONS", "message": REFUSED_MESSAGE[refusal]}}
        response = JSONResponse(body, status_code=REFUSED_STATUS[refusal], headers={"Retry-After": "5"})
        await websocket.send_denial_response(response)

    async def _serve(self, websocket: WebSocket) -> None:
        encoding = encoding_from_query(websocket.query_params.get("encoding"))
        patient = self.identify(websocket) if self.identify is not None else None
        await websocket.accept()
        self.sender.start()
        raw = websocket.scope.get("extensions", {}).get(RAW_WEBSOCKET)
        conn = Connection(
            websocket,
            encoding,
            patient.user_id if patient is not None else None,
            raw if isinstance(raw, HubWebSocketProtocol) else None,
            session=patient.session if patient is not None else None,
        )
        self.me.watch(conn)
        self.sender.open(conn)
        try:
            await self._receive_loop(conn)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self.sender.release(conn)

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
                self.sender.shut(conn, CLOSE_TOO_BIG)
                continue  # keep reading until the client's disconnect arrives
            if conn.closed:
                continue  # being closed: read until the disconnect arrives
            try:
                request = decode_client(raw)
            except MalformedMessage as exc:
                self.sender.control(conn, {"type": "error", "code": "INVALID", "message": str(exc)})
                continue
            await self._handle(conn, request)

    async def _handle(self, conn: Connection, request: dict[str, Any]) -> None:
        op = request.get("op")
        topic_value = request.get("topic")
        try:
            if op == "subscribe":
                await self._subscribe(conn, request)
            elif op == "unsubscribe":
                self.fanout.unsubscribe(conn, parse_topic(topic_value))
            elif op == "ping":
                self.sender.control(conn, {"type": "pong"})
            else:
                raise BadTopic("INVALID", "unknown op: use subscribe, unsubscribe or ping")
        except BadTopic as exc:
            error: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
            if isinstance(topic_value, str) and len(topic_value) <= 100:
                error["topic"] = topic_value
            self.sender.control(conn, error)

    async def _subscribe(self, conn: Connection, request: dict[str, Any]) -> None:
        name = parse_topic(request.get("topic"))
        actor = self.regions.actors.get(name.region)
        if actor is None:
            raise BadTopic("NOT_FOUND", "this server does not serve that region")
        first_day, days = parse_range(request, day_of_epoch(int(actor.clock())))
        service = parse_service(request)
        if name.key not in conn.subs and len(conn.subs) >= self.max_subscriptions:
            raise BadTopic("LIMIT_REACHED", f"at most {self.max_subscriptions} subscriptions per connection")
        await self.fanout.subscribe(conn, name, first_day, days, service)
