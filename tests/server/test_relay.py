"""The relay a node forwards requests to a region's owner with (server.http.relay), against a real
uvicorn: answers come back whole, connections are reused, and what goes wrong raises RelayError."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loadtest.redis_server import free_port
from server.http.relay import Relay, RelayError
from tests.support.waiting import eventually, scaled

held = asyncio.Event()  # set: the slow route answers


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {"method": request.method, "body": body.decode(), "ask": request.headers.get("x-ask", "")},
        status_code=201,
        headers={"X-Answer": "yes"},
    )


async def chunked(_request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    return StreamingResponse(parts(), media_type="text/plain")


async def closing(_request: Request) -> Response:
    return Response(b"bye", headers={"Connection": "close"})


async def slow(_request: Request) -> Response:
    await held.wait()
    return Response(b"late")


@asynccontextmanager
async def owner() -> AsyncIterator[str]:
    """A real uvicorn on a free port, in this event loop; its base URL."""
    app = Starlette(
        routes=[
            Route("/echo", echo, methods=["GET", "POST", "HEAD"]),
            Route("/chunked", chunked),
            Route("/closing", closing),
            Route("/slow", slow, methods=["POST"]),
        ]
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, what="uvicorn to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        held.set()
        server.should_exit = True
        await task
        held.clear()


async def test_answers_come_back_whole_over_one_kept_connection() -> None:
    relay = Relay(timeout_s=scaled(10))
    async with owner() as url:
        try:
            for n in range(3):
                answer = await relay.request(
                    "POST",
                    f"{url}/echo?x=1",
                    [(b"x-ask", b"hej"), (b"content-type", b"text/plain")],
                    b"b%d" % n,
                )
                assert answer.status == 201
                assert (b"x-answer", b"yes") in answer.headers
                assert answer.body == b'{"method":"POST","body":"b%d","ask":"hej"}' % n
            streamed = await relay.request("GET", f"{url}/chunked", [], b"")
            assert (b"transfer-encoding", b"chunked") in streamed.headers
            assert streamed.body == b"one,two,three"  # the chunks joined, their framing gone
            head = await relay.request("HEAD", f"{url}/echo", [], b"")
            assert head.status == 201 and head.body == b""
            again = await relay.request("GET", f"{url}/echo", [], b"")
            assert again.status == 201
            # one connection for the four before HEAD; HEAD's is not reused (the parser would
            # wait for a body that never comes), so the last one opened a second
            assert relay.opened == 2
        finally:
            await relay.close()


async def test_a_connection_the_owner_closed_or_left_idle_too_long_is_not_used_again() -> None:
    relay = Relay(timeout_s=scaled(10), idle_s=0.2)
    async with owner() as url:
        try:
            assert (await relay.request("GET", f"{url}/closing", [], b"")).body == b"bye"
            assert (await relay.request("GET", f"{url}/echo", [], b"")).status == 201
            assert relay.opened == 2  # the owner said close: a new connection
            await asyncio.sleep(0.3)
            assert (await relay.request("GET", f"{url}/echo", [], b"")).status == 201
            assert relay.opened == 3  # idle past idle_s: closed, not used
        finally:
            await relay.close()


async def test_no_answer_in_time_or_nobody_listening_is_a_relay_error() -> None:
    relay = Relay(timeout_s=0.5)
    async with owner() as url:
        try:
            with pytest.raises(RelayError):
                await relay.request("POST", f"{url}/slow", [], b"{}")
            held.set()
            assert (await relay.request("GET", f"{url}/echo", [], b"")).status == 201  # a fresh one
            assert relay.opened == 2
        finally:
            await relay.close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(RelayError):
        await relay.request("POST", f"http://127.0.0.1:{closed_port}/echo", [], b"{}")
