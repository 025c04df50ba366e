"""HTTP/1.1 on uvicorn's httptools protocol, with bounds on the request head (431) and one write per reply.

uvicorn bounds nothing of the head on httptools (only h11 has ``h11_max_incomplete_event_size``),
so a 50 MB header value reached the app and ten unfinished 40 MB headers held a gigabyte. This
protocol counts the request line's target and every header as the parser hands them over, and
the raw bytes of a head that has not ended yet (llhttp buffers an unfinished header value
itself, so that is where memory would grow). Past ``max_header_bytes`` or ``max_headers`` the
client gets ``431 Request Header Fields Too Large`` in the one error shape and the connection
is closed: the response is sent, then FIN, input is discarded, and the socket closes a moment
later (closing with unread input at once would reset the connection and lose the answer).

uvicorn writes a reply's head when the app sends ``http.response.start`` and its body with
``http.response.body``: two ``send`` system calls, two segments and two wake-ups of the client
per reply (a fifth of the event loop's time under refused bookings was these writes). Each
request's cycle writes through :class:`OneWrite`, which holds the head and sends it with the body
that follows in the same step (or at the loop's next turn, whatever comes first).

Use :func:`http_protocol` for uvicorn's ``http=`` option; everything else is uvicorn's own.
"""

from __future__ import annotations

import asyncio

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_HEADERS = 100
_LINGER_S = 1.0  # how long a refused connection's input is read and dropped before closing


class HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing a head that passed a limit."""


class OneWrite:
    """A request cycle's view of its connection: a write is held until the next one joins it or the
    loop's next turn sends it (the head of a reply, joined by its body); ``close`` sends what is
    held first. Everything else is the transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads over the class's limits with 431."""

    max_header_bytes = DEFAULT_MAX_HEADER_BYTES
    max_headers = DEFAULT_MAX_HEADERS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_bytes = 0  # counted from the parser's callbacks
        self._head_count = 0
        self._raw_head = 0  # raw bytes received while the head is unfinished
        self._in_head = True
        self._refused = False
        super().connection_made(transport)

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head_bytes = self._head_count = 0
        self._in_head = True
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.max_header_bytes:
            raise HeadTooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_count > self.max_headers or self._head_bytes > self.max_header_bytes:
            raise HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head = 0
        before = getattr(self, "cycle", None)
        super().on_headers_complete()
        cycle = getattr(self, "cycle", None)
        # A new request (an upgrade makes none): its task has not run yet.
        if cycle is not None and cycle is not before:
            cycle.transport = OneWrite(self.transport, self.loop)

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    # -- input ----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._raw_head += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse()
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and self._raw_head > self.max_header_bytes:
            self._refuse()

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _refuse(self) -> None:
        self._refused = True
        body = orjson.dumps(
            {
                "error": {
                    "code": "HEADERS_TOO_LARGE",
                    "message": f"request head over {self.max_header_bytes} bytes or {self.max_headers} headers",
                    "request_id": "",
                }
            }
        )
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(_LINGER_S, self.transport.close)


def http_protocol(max_header_bytes: int, max_headers: int) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's ``http=`` option, with these limits."""
    return type(
        "HeadLimitedProtocol",
        (HeadLimitedProtocol,),
        {"max_header_bytes": max_header_bytes, "max_headers": max_headers},
    )
