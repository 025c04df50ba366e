"""Integration tests: request header size and count limits (431) on a real uvicorn serving the
app with the HTTP protocol ``tandtid serve`` uses, over raw sockets (a client library would
refuse to send such requests)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.live_server import LiveServer

TIMEOUT = 10.0


@pytest.fixture
def conn(live: LiveServer) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=TIMEOUT)
    try:
        yield sock
    finally:
        sock.close()


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def request(*headers: bytes) -> bytes:
    return b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"".join(headers) + b"\r\n"


def test_ordinary_headers_pass(conn: socket.socket) -> None:
    conn.sendall(request(b"Cookie: " + b"a" * 8000 + b"\r\n", *(b"X-N%d: v\r\n" % i for i in range(40))))
    assert answer(conn).startswith(b"HTTP/1.1 200")


def test_a_huge_header_value_is_431(conn: socket.socket, live: LiveServer) -> None:
    conn.sendall(request(b"X-Big: " + b"a" * (live.settings.max_header_bytes + 1) + b"\r\n"))
    reply = answer(conn)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b'"code":"HEADERS_TOO_LARGE"' in reply


def test_too_many_headers_is_431(conn: socket.socket, live: LiveServer) -> None:
    conn.sendall(request(*(b"X-N%d: v\r\n" % i for i in range(live.settings.max_headers + 1))))
    assert answer(conn).startswith(b"HTTP/1.1 431")


def test_a_long_url_counts_too(conn: socket.socket, live: LiveServer) -> None:
    conn.sendall(
        b"GET /health?" + b"q" * (live.settings.max_header_bytes + 1) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert answer(conn).startswith(b"HTTP/1.1 431")


def test_an_unfinished_header_is_cut_off_before_it_grows(conn: socket.socket, live: LiveServer) -> None:
    """A header that never ends is answered (and the connection closed) once it passes the
    limit; the server does not keep buffering megabytes waiting for its end."""
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    sent, reply = 0, b""
    try:
        while sent < 8 * live.settings.max_header_bytes:
            conn.sendall(b"a" * 4096)
            sent += 4096
    except (BrokenPipeError, ConnectionResetError):
        pass
    reply = answer(conn)
    assert reply.startswith(b"HTTP/1.1 431"), (sent, reply[:200])
