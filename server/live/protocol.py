"""uvicorn's sans-I/O WebSocket protocol, handing itself to the live hub for pre-framed writes.

The hub encodes a diff once per topic and wants to put the very same bytes on every
subscriber's socket. Through ASGI each ``websocket.send`` costs a task switch, several
coroutine layers and a re-framing per subscriber; with this protocol the hub finds the
connection's protocol object in ``scope["extensions"][RAW_WEBSOCKET]`` and writes a
ready-made WebSocket frame straight to its transport when (and only when) nothing is queued
and the transport is writable -- otherwise it queues and waits, exactly as ``send`` would.
Everything else (handshake, pings, close, reads) is uvicorn's own code, untouched.

Use ``UVICORN_WS_OPTIONS`` in every ``uvicorn.Config`` that serves the hub.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

RAW_WEBSOCKET = "tandtid.raw_websocket"


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    """Exactly uvicorn's ``websockets-sansio`` protocol, plus itself in the ASGI scope."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the ASGI task is created but has not run yet: it sees this
            scope["extensions"][RAW_WEBSOCKET] = self

    def start_keepalive(self) -> None:
        # called right after the 101 response is written: the parsed request and the response
        # (header lists, ~2 KB per connection) are never read again
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()

    def writable_now(self) -> bool:
        """True when a frame may go straight to the socket: open, not closing, not paused."""
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.writable.is_set()
            and not self.transport.is_closing()
        )


# Per-message deflate costs a zlib compressor + decompressor per connection (~50 KB) and a
# compression per frame per subscriber; diffs are small, so the hub goes without.
UVICORN_WS_OPTIONS: dict[str, Any] = {
    "ws": HubWebSocketProtocol,
    "ws_per_message_deflate": False,
}
