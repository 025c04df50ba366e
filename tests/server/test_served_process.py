"""The harness's ``ServedProcess`` waits for ITS OWN server. A restart reuses the port; between the
stop and the start another process (another test's server, an engineer's) may take it and answer
``/ready`` 200. ``start()`` must not take that one for ours: ours cannot bind the port and exits, and
``start()`` raises with its output, instead of returning a harness that talks to the other process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.served import ServedProcess

pytestmark = pytest.mark.slow


class Impostor(BaseHTTPRequestHandler):
    """Another HTTP server that says it is ready, as a tandtid without an instance name would."""

    asked = 0

    def do_GET(self) -> None:
        Impostor.asked += 1
        body = b'{"ready": true, "status": "ready"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def impostor_on(port: int) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", port), Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_restart_does_not_take_another_process_on_its_port_for_its_server(tmp_path: Path) -> None:
    served = ServedProcess(tmp_path / "data")
    try:
        served.start()
        first = httpx.get(f"{served.url}/ready", timeout=30).json()
        assert first["instance"] == served.instance
        served.stop()
        Impostor.asked = 0
        with impostor_on(served.port), pytest.raises(RuntimeError, match="exited") as failed:
            served.start()
        assert Impostor.asked > 0, "the other process was asked for /ready"
        assert "another process answers /ready" in str(failed.value)
        assert "address already in use" in str(failed.value).lower(), str(failed.value)
    finally:
        served.stop()
