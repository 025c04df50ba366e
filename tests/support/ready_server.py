"""Another process answering ``/ready`` 200 on a port: what a tool or the test harness must not take
for the server it started (``loadtest.instance``). A real HTTP server on a thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ReadyServer:
    port: int
    asked: list[str] = field(default_factory=list)  # the paths asked for, in order

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def ready_server(port: int = 0, instance: str | None = None) -> Iterator[ReadyServer]:
    """Answers every GET with 200 and ``{"ready": true}``, naming ``instance`` when given (a tandtid
    started with another name), else no name (another server, or a tandtid given none)."""
    body = json.dumps(
        {"ready": True, "status": "ready", **({"instance": instance} if instance else {})}
    ).encode()
    asked: list[str] = []

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ReadyServer(server.server_address[1], asked)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
