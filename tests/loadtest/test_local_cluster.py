"""Integration: ``make cluster``'s ``python -m loadtest.cluster`` starts a real redis-server, three
real nodes and a real nginx; a patient registers and books through nginx; SIGINT (Ctrl-C) stops
every process it started; started again on the same directory it serves the same store without
seeding it a second time, and the booking is still there."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.support import free_port
from tests.support.cluster import free_times
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
READY_LINE = "tandtid cluster ready: open "


class Script:
    """``python -m loadtest.cluster`` in a process of its own; its output collected line by line."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loadtest.cluster", "--dir", str(root), "--port", str(port)]
            + ["--node-port", "0", "--redis-port", "0", "--scale", "demo", "--booked", "0.1"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TANDTID_RATE_PER_S": "0", "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its group: the script, redis-server and nginx (close() kills it)
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def ready(self) -> bool:
        if self.process.poll() is not None and not any(READY_LINE in line for line in self.lines):
            raise AssertionError(
                f"the cluster script exited with {self.process.returncode}:\n{self.output()}"
            )
        return any(READY_LINE in line for line in self.lines)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the script; its exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=120)

    def close(self) -> None:
        """SIGKILL if it still runs (a failed test), and what it started; then its output pipe is
        read to the end and closed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
            # redis-server and nginx's workers rename themselves (their command lines do not
            # name the root): they go with the script's group; the nodes have sessions of their own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            for line in pids_under(self.root):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split(":")[0]), signal.SIGKILL)
        self._reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


def started(root: Path, port: int) -> Script:
    script = Script(root, port)
    try:
        eventually_sync(script.ready, timeout=240, interval=0.2, what="the cluster to be ready")
    except BaseException:
        script.close()
        raise
    return script


def listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        return True
    except httpx.HTTPError:
        return False


def pids_under(root: Path) -> list[str]:
    """Processes whose command line names ``root`` (the nodes, redis-server, nginx)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(root) in command:
                found.append(f"{entry.name}: {command}")
    return found


def test_make_cluster_starts_redis_three_nodes_and_nginx_books_through_it_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cluster-data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    script = started(root, port)
    try:
        assert "seeded 60 clinics" in script.output(), script.output()
        assert f"open {url}/" in script.output()
        r = httpx.post(
            f"{url}/api/auth/register",
            json={"email": "kluster@example.test", "password": "hemligt-losen", "name": "Kluster"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        [slot] = free_times(url, "AB", 1)
        r = httpx.post(
            f"{url}/api/bookings",
            headers={"Authorization": f"Bearer {token}"},
            json={**slot, "service": "checkup"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        booking = r.json()["booking"]["id"]
        assert [line for line in script.output().splitlines() if line.startswith("nodes: ")][0].count(
            "node"
        ) == 4  # "nodes: node1 …, node2 …, node3 …"
        assert script.interrupt() == 0, script.output()
    finally:
        script.close()
    eventually_sync(lambda: not pids_under(root), what="every process of the cluster to end")
    assert not listening(port)
    assert (root / "redis" / "appendonlydir").is_dir()  # Redis kept its AOF there

    again = started(root, port)
    try:
        assert "not seeding" in again.output() and "seeded 60" not in again.output(), again.output()
        r = httpx.get(f"{url}/api/bookings", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
        assert booking in [b["id"] for b in r.json()["bookings"]]
        assert again.interrupt() == 0, again.output()
    finally:
        again.close()
    eventually_sync(lambda: not pids_under(root), what="every process of the cluster to end")
