"""A webhook receiver (integration): a real HTTP server on 127.0.0.1 in this process that answers 204 to every
POST and queues what it got, for the browser tests of webhooks and for ``make screenshots`` (whose staff page
shows a delivered webhook). Served system must allow plain HTTP to loopback (``TANDTID_WEBHOOK_ALLOW_HTTP=1``).

    with receiving() as receiver:
        url = f"{receiver.base_url}/hooks/clinic"      # register this as the endpoint
        delivery = receiver.next_for(booking_id)       # .path, .headers (lower-case), .body, .json()
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.waiting import scaled


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    """The server, bound to a free port on construction; serving once :func:`receiving` has started it."""

    def __init__(self) -> None:
        got: queue.Queue[Received] = queue.Queue()
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got.put(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def next_for(self, booking_id: str, timeout_s: float = 15.0) -> Received:
        """The next delivery about ``booking_id`` (others, if any, are skipped); fails after ``timeout_s``
        (scaled)."""
        deadline = time.monotonic() + scaled(timeout_s)
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no delivery for {booking_id} within {timeout_s}s"
            try:
                item = self.got.get(timeout=remaining)
            except queue.Empty:
                raise AssertionError(f"no delivery for {booking_id} within {timeout_s}s") from None
            if item.json()["data"]["booking"] == booking_id:
                return item


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A serving :class:`Receiver`, shut down and its port closed on leaving."""
    made = Receiver()
    made.thread.start()
    try:
        yield made
    finally:
        made.server.shutdown()
        made.server.server_close()
