"""The harness's ``ServedProcess`` waits for ITS OWN server. A restart reuses the port; between the
stop and the start another process (another test's server, an engineer's) may take it and answer
``/ready`` 200. ``start()`` must not take that one for ours: ours cannot bind the port and exits, and
``start()`` raises with its output, instead of returning a harness that talks to the other process.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.ready_server import ready_server
from tests.support.served import ServedProcess

pytestmark = pytest.mark.slow


def test_a_restart_does_not_take_another_process_on_its_port_for_its_server(tmp_path: Path) -> None:
    served = ServedProcess(tmp_path / "data")
    try:
        served.start()
        first = httpx.get(f"{served.url}/ready", timeout=30).json()
        assert first["instance"] == served.instance
        served.stop()
        with ready_server(served.port) as other, pytest.raises(RuntimeError, match="exited") as failed:
            served.start()
        assert other.asked, "the other process was asked for /ready"
        assert "another process answers /ready" in str(failed.value)
        assert "address already in use" in str(failed.value).lower(), str(failed.value)
    finally:
        served.stop()
