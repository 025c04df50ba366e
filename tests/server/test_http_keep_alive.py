"""Integration tests: an idle keep-alive connection on a real uvicorn serving the app as ``tandtid
serve`` does, over a raw socket (a client library would quietly open a new connection).

A server that closes an idle connection races with a client sending its next request on it: the
request gets no answer, and a POST is not retried (Locust's client, nginx's upstream keep-alive).
uvicorn's default closes after 5 s, which clients pausing between tasks reach; tandtid keeps an
idle connection open for ``keep_alive_s`` (75 s: longer than nginx keeps upstream connections).
"""

from __future__ import annotations

import socket
import time

from tests.support.live_server import LiveServer

UVICORN_DEFAULT_S = 5.0
TIMEOUT = 10.0


def one_reply(sock: socket.socket) -> bytes:
    """The head and body of the next reply (by its Content-Length); b"" if the server closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_connection_idle_past_uvicorns_default_still_answers_a_post(live: LiveServer) -> None:
    assert live.settings.keep_alive_s > 60
    with socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert one_reply(sock).startswith(b"HTTP/1.1 200")
        time.sleep(UVICORN_DEFAULT_S + 1.0)  # the idle time under test, not a wait for something
        sock.sendall(
            b"POST /api/bookings/AB-bunknown/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        reply = one_reply(sock)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]  # answered (not signed in), not closed
