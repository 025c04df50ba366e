"""The load tools wait for /ready from the server they started, not from another process that took
its port (``loadtest.instance``): a real HTTP server on the port stands in for the other process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadtest.bench.restart import wait_ready


def _ready_server(name: str | None) -> ThreadingHTTPServer:
    body = json.dumps({"ready": True, **({"instance": name} if name else {})}).encode()

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def other() -> Iterator[ThreadingHTTPServer]:
    server = _ready_server("someone-else")
    yield server
    server.shutdown()
    server.server_close()


def _process(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_another_process_ready_on_the_port_is_not_ours(other: ThreadingHTTPServer) -> None:
    ours = _process(30)  # started, never answering: the port is the other's
    try:
        with pytest.raises(SystemExit, match="not ready within"):
            wait_ready(_url(other), ours, timeout_s=1.0, interval_s=0.05, name="ours")
    finally:
        ours.kill()
        ours.wait()


def test_ours_exiting_names_the_process_that_answers_instead(other: ThreadingHTTPServer) -> None:
    ours = _process(0.5)  # could not bind the port: it exits
    with pytest.raises(SystemExit, match="another process answers /ready there.*someone-else"):
        wait_ready(_url(other), ours, timeout_s=30, interval_s=0.05, name="ours")


def test_ready_with_our_name_or_any_name_when_none_is_asked() -> None:
    named, unnamed = _ready_server("ours"), _ready_server(None)
    ours = _process(30)
    try:
        wait_ready(_url(named), ours, timeout_s=10, interval_s=0.05, name="ours")
        wait_ready(_url(unnamed), ours, timeout_s=10, interval_s=0.05, name=None)  # the trivial endpoint
        with pytest.raises(SystemExit, match="not ready within"):
            wait_ready(_url(unnamed), ours, timeout_s=0.5, interval_s=0.05, name="ours")
    finally:
        ours.kill()
        ours.wait()
        for server in (named, unnamed):
            server.shutdown()
            server.server_close()
