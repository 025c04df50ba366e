"""Relay: the HTTP/1.1 client a node forwards requests to a region's owner with.

One request at a time per connection, kept alive and reused (the most recently used first), on
asyncio's transports with httptools parsing the answer (uvicorn's own parser). Why not httpx:
forwarding made every other request of a two-node cluster go through it, and its pool cost the
event loop ~40% of its time there (issue 11: py-spy of ``bench http --nodes 2``): each request
polled every pooled connection's socket for readability, looked for ``sniffio`` on the import
path (not installed: a failed import per request), and with more requests in flight than its
keep-alive limit it opened and closed a connection per request.

Rules (the forwarding rules in ``server.http.forwarding`` rely on them):

- A connection is reused only if its last answer completed, said keep-alive, and the owner has
  not closed it since (the transport says so: no system call to find out); one idle longer than
  ``idle_s`` is closed, not used: the owner (75 s, ``TANDTID_KEEP_ALIVE_S``) keeps it longer, so
  a request is never sent on a connection the owner is about to drop.
- A request is sent once. Whatever goes wrong (refused, reset, closed before the whole answer,
  no answer within ``timeout_s``, an answer that does not parse) raises ``RelayError`` and the
  connection is closed; nothing is retried (a command may have been made).
- The answer's body is the message body without its transfer coding (chunks joined), its
  content coding untouched: relayed as it is with a Content-Length of its own.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

IDLE_S = 5.0  # a pooled connection idle longer than this is closed, not used
MAX_IDLE = 256  # idle connections kept per owner


class RelayError(Exception):
    """The request got no complete answer: the owner was unreachable, closed, slow or garbled."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class _Exchange:
    """What one request's answer has brought so far."""

    done: asyncio.Future[None]
    head_only: bool
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    status: int = 0
    keep_alive: bool = False


class _Connection(asyncio.Protocol):
    """One connection to an owner and the parser of its answers."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.open = False
        self.used = time.monotonic()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:  # nothing asked: an owner never speaks first
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RelayError(f"the answer did not parse: {exc}"))

    def eof_received(self) -> bool | None:
        self._fail(RelayError("the owner closed the connection before the whole answer"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(RelayError(f"the connection was lost: {type(exc).__name__ if exc else 'closed'}"))

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.exchange is not None
        self.exchange.headers.append((name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.status = self.parser.get_status_code()
        if exchange.head_only:  # an answer to HEAD has no body whatever its headers say
            exchange.keep_alive = False  # the parser would wait for one: not reused
            self._finish()

    def on_body(self, body: bytes) -> None:
        assert self.exchange is not None
        self.exchange.body.append(body)

    def on_message_complete(self) -> None:
        assert self.exchange is not None
        self.exchange.keep_alive = self.parser.should_keep_alive()
        self._finish()

    # -- ours -------------------------------------------------------------------------------------

    def _finish(self) -> None:
        if self.exchange is not None and not self.exchange.done.done():
            self.exchange.done.set_result(None)

    def _fail(self, error: RelayError) -> None:
        self.open = False
        if self.exchange is not None and not self.exchange.done.done():
            self.exchange.done.set_exception(error)

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    async def exchange_once(self, request: bytes, head_only: bool) -> _Exchange:
        assert self.transport is not None
        exchange = _Exchange(asyncio.get_running_loop().create_future(), head_only)
        self.exchange = exchange
        self.transport.write(request)
        await exchange.done
        self.exchange = None
        return exchange


class Relay:
    """Keep-alive connections to the owners, by address. ``await close()`` on shutdown."""

    def __init__(self, *, timeout_s: float = 10.0, connect_timeout_s: float = 1.0, idle_s: float = IDLE_S):
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.idle_s = idle_s
        self._idle: dict[str, deque[_Connection]] = {}  # origin -> idle connections, oldest first
        self.opened = 0  # connections made so far (a pool that works makes few)
        self._ssl: ssl.SSLContext | None = None

    async def close(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()

    async def request(
        self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        """Send one request to ``url`` (http or https) and read its whole answer."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode("latin-1")]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                conn = self._pooled(origin) or await self._connect(parts.scheme, parts.hostname, parts.port)
                exchange = await conn.exchange_once(b"".join(head) + body, method == "HEAD")
        except (OSError, TimeoutError) as exc:
            if conn is not None:
                conn.close()
            raise RelayError(f"{type(exc).__name__} from {origin}") from exc
        except BaseException:  # RelayError, or cancelled: an answer may still come on it
            if conn is not None:
                conn.close()
            raise
        if exchange.keep_alive and conn.open:
            conn.used = time.monotonic()
            pool = self._idle.setdefault(origin, deque())
            pool.append(conn)
            if len(pool) > MAX_IDLE:
                pool.popleft().close()
        else:
            conn.close()
        return Answer(exchange.status, exchange.headers, b"".join(exchange.body))

    def _pooled(self, origin: str) -> _Connection | None:
        pool = self._idle.get(origin)
        if not pool:
            return None
        too_old = time.monotonic() - self.idle_s
        while pool and pool[0].used < too_old:  # the oldest first: the stale ones are there
            pool.popleft().close()
        while pool:
            conn = pool.pop()
            if conn.open:
                return conn
        return None

    async def _connect(self, scheme: str, host: str | None, port: int | None) -> _Connection:
        secure = scheme == "https"
        if secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            _, conn = await loop.create_connection(
                _Connection,
                host or "localhost",
                port or (443 if secure else 80),
                ssl=self._ssl if secure else None,
            )
        self.opened += 1
        return conn
