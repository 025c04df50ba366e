"""The load tools wait for /ready from the server they started, not from another process that took
its port (``loadtest.instance``): a real HTTP server on the port stands in for the other process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadtest.bench.restart import wait_ready
from tests.support.ready_server import ready_server


def _process(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_another_process_ready_on_the_port_is_not_ours() -> None:
    ours = _process(30)  # started, never answering: the port is the other's
    try:
        with (
            ready_server(instance="someone-else") as other,
            pytest.raises(SystemExit, match="not ready within"),
        ):
            wait_ready(other.url, ours, timeout_s=1.0, interval_s=0.05, name="ours")
        assert other.asked
    finally:
        ours.kill()
        ours.wait()


def test_ours_exiting_names_the_process_that_answers_instead() -> None:
    ours = _process(0.5)  # could not bind the port: it exits
    with (
        ready_server(instance="someone-else") as other,
        pytest.raises(SystemExit, match="another process answers /ready there.*someone-else"),
    ):
        wait_ready(other.url, ours, timeout_s=30, interval_s=0.05, name="ours")


def test_ready_with_our_name_or_any_name_when_none_is_asked() -> None:
    ours = _process(30)
    try:
        with ready_server(instance="ours") as named, ready_server() as unnamed:
            wait_ready(named.url, ours, timeout_s=10, interval_s=0.05, name="ours")
            wait_ready(unnamed.url, ours, timeout_s=10, interval_s=0.05, name=None)  # the trivial endpoint
            with pytest.raises(SystemExit, match="not ready within"):
                wait_ready(unnamed.url, ours, timeout_s=0.5, interval_s=0.05, name="ours")
    finally:
        ours.kill()
        ours.wait()
