"""Unit tests (in-process, no network): what ``CompressMiddleware`` does with each kind of reply,
driven through tiny inline ASGI apps. The real app over a real uvicorn: ``test_http_compression``."""

from __future__ import annotations

import gzip

from starlette.types import Message, Receive, Scope, Send

from server.http.compression import CompressMiddleware

BIG = b'{"times": [' + b'"2026-12-03T09:00:00+01:00", ' * 200 + b'"end"]}'


def replying(*parts: bytes, headers: list[tuple[bytes, bytes]] | None = None, status: int = 200) -> object:
    """An app that answers with ``parts`` as body messages (more_body on all but the last)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        head = headers if headers is not None else [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": head})
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})

    return app


async def run(app: object, accept: bytes | None) -> tuple[dict[bytes, bytes], bytes, int]:
    """(the reply's headers, its body as sent, how many body messages)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"accept-encoding", accept)] if accept is not None else []
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    await CompressMiddleware(app, min_bytes=1024, level=6)(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start"
    bodies = [m for m in sent[1:] if m["type"] == "http.response.body"]
    return dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in bodies), len(bodies)


async def test_a_whole_big_reply_is_compressed_with_its_length_and_vary() -> None:
    headers, body, _ = await run(
        replying(
            BIG,
            headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(BIG)).encode()),
                (b"vary", b"Cookie"),
            ],
        ),
        b"gzip, br",
    )
    assert headers[b"content-encoding"] == b"gzip"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert headers[b"vary"] == b"Cookie, Accept-Encoding"
    assert gzip.decompress(body) == BIG


async def test_a_streamed_reply_is_compressed_part_by_part_without_a_length() -> None:
    headers, body, parts = await run(replying(b"<!doctype html>", b"<p>" * 400, b""), b"gzip")
    assert headers[b"content-encoding"] == b"gzip"
    assert b"content-length" not in headers
    assert parts == 3
    assert gzip.decompress(body) == b"<!doctype html>" + b"<p>" * 400


async def test_what_is_not_compressed() -> None:
    small = b'{"ok": true}'
    cases = [
        (replying(BIG), None),  # the client does not accept gzip
        (replying(BIG), b"identity"),
        (replying(small), b"gzip"),  # too small
        (replying(BIG, headers=[(b"content-type", b"image/png")]), b"gzip"),  # does not shrink
        (replying(BIG, headers=[(b"content-type", b"text/event-stream")]), b"gzip"),
        (replying(BIG, headers=[(b"content-type", b"text/css"), (b"content-encoding", b"gzip")]), b"gzip"),
        (replying(BIG, status=206), b"gzip"),
    ]
    for app, accept in cases:
        headers, body, _ = await run(app, accept)
        assert headers.get(b"content-encoding") in (None, b"gzip") and b"vary" not in headers, (
            accept,
            headers,
        )
        assert body in (BIG, small), (accept, headers)
