"""gzip for the API's big replies, and nothing at all for the rest.

``CompressMiddleware`` is pure ASGI and does Starlette's ``GZipMiddleware``'s job at a fraction
of its cost per request (that one parsed the request's and the reply's headers into objects
and normalised its list of excluded types on every request, ~11 µs of a booking's event-loop
time, for replies that are nearly all too small to compress):

- a request that does not accept gzip, or is no HTTP request, passes straight through;
- otherwise the reply's head is held until its first body part decides: a whole reply of at
  least ``min_bytes`` is compressed (``Content-Length`` set again, ``Vary: Accept-Encoding``
  added), a streamed one is compressed part by part (no ``Content-Length``); smaller replies,
  partial ones (206), replies that carry a ``Content-Encoding`` already (``/static`` compresses
  its own) and types that do not shrink (images, ``text/event-stream``, ...: Starlette's list)
  pass as they are;
- a body of ``THREAD_MIN_BYTES`` or more is compressed in a worker thread (the map's clinic list
  is ~1.2 MB), so the event loop does not stop for it.
"""

from __future__ import annotations

import asyncio
import zlib

from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES
from starlette.types import ASGIApp, Message, Receive, Scope, Send

THREAD_MIN_BYTES = 128 * 1024
_EXCLUDED = frozenset(t.partition(";")[0].strip().lower() for t in DEFAULT_EXCLUDED_CONTENT_TYPES)


def _accepts_gzip(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            return b"gzip" in value
    return False


def _compressible(start: Message) -> bool:
    if start["status"] == 206:
        return False
    media = ""
    for name, value in start.get("headers", ()):
        lowered = name.lower()
        if lowered == b"content-encoding":
            return False
        if lowered == b"content-type":
            media = value.decode("latin-1").partition(";")[0].strip().lower()
    return media not in _EXCLUDED and media.partition("/")[0] + "/*" not in _EXCLUDED


def _compressed_head(start: Message, length: int | None) -> Message:
    """The reply's head for a gzip body: its old length and Vary dropped, the new ones added."""
    headers = []
    vary = b""
    for name, value in start.get("headers", ()):
        lowered = name.lower()
        if lowered == b"content-length":
            continue
        if lowered == b"vary":
            vary = value
            continue
        headers.append((name, value))
    if b"accept-encoding" not in vary.lower():
        vary = vary + b", Accept-Encoding" if vary else b"Accept-Encoding"
    headers.append((b"vary", vary))
    headers.append((b"content-encoding", b"gzip"))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {**start, "headers": headers}


class CompressMiddleware:
    def __init__(self, app: ASGIApp, *, min_bytes: int, level: int) -> None:
        self.app = app
        self.min_bytes = min_bytes
        self.level = level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _accepts_gzip(scope):
            await self.app(scope, receive, send)
            return
        held: Message | None = None  # the head, until the first body part decides
        compressor: zlib._Compress | None = None  # a streamed reply being compressed
        decided = False

        async def send_compressed(message: Message) -> None:
            nonlocal held, compressor, decided
            kind = message["type"]
            if kind == "http.response.start":
                held = message
                return
            if decided or kind != "http.response.body" or held is None:
                if held is not None:  # another kind of message first (pathsend): the head as it is
                    head, held = held, None
                    decided = True
                    await send(head)
                if compressor is not None and kind == "http.response.body":
                    more = message.get("more_body", False)
                    body = compressor.compress(message.get("body", b""))
                    body += compressor.flush(zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH)
                    message = {**message, "body": body}
                await send(message)
                return
            head, held = held, None
            decided = True
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not _compressible(head) or (not more and len(body) < self.min_bytes):
                await send(head)
                await send(message)
                return
            compressor = zlib.compressobj(self.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            if more:
                body = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
                await send(_compressed_head(head, None))
            else:
                body = (
                    await asyncio.to_thread(_whole, compressor, body)
                    if len(body) >= THREAD_MIN_BYTES
                    else _whole(compressor, body)
                )
                await send(_compressed_head(head, len(body)))
            await send({**message, "body": body})

        await self.app(scope, receive, send_compressed)


def _whole(compressor: zlib._Compress, body: bytes) -> bytes:
    return compressor.compress(body) + compressor.flush()
