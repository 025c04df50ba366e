"""Unit tests (a real event loop, no network): a reply's head and body leave in one write.

``OneWrite`` stands between a request's cycle and a transport that records what it is given;
the cycle's own writing (uvicorn's) is what the live-server tests cover."""

from __future__ import annotations

import asyncio

from server.http.protocol import OneWrite


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 7


async def test_the_head_leaves_with_the_body_in_one_write() -> None:
    transport = Recording()
    one = OneWrite(transport, asyncio.get_running_loop())
    one.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n")
    assert transport.writes == []
    one.write(b"{}")
    assert transport.writes == [b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)  # the loop's next turn has nothing left to send
    assert len(transport.writes) == 1


async def test_a_lone_write_leaves_at_the_next_turn_of_the_loop() -> None:
    transport = Recording()
    one = OneWrite(transport, asyncio.get_running_loop())
    one.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    one.write(b"next")  # held again, joined by the one after it
    one.write(b" part")
    assert transport.writes[1:] == [b"next part"]


async def test_close_sends_what_is_held_first() -> None:
    transport = Recording()
    one = OneWrite(transport, asyncio.get_running_loop())
    one.write(b"head")
    one.close()
    assert transport.writes == [b"head"]
    assert transport.closed
    assert one.is_closing()
    assert one.get_write_buffer_size() == 7  # everything else is the transport's own
    await asyncio.sleep(0)
    assert transport.writes == [b"head"]
