"""The real ``tandtid serve`` as a subprocess on a free port, for tests that need the whole process:
a SIGKILL and a restart, the browser suite, a Locust run.

    served = ServedProcess(data_dir, "--seed", env={"TANDTID_RATE_PER_S": "0"}).start()   # waits for /ready
    try:
        ... served.url ...
    finally:
        served.stop()

``kill()`` is SIGKILL (a crash); ``start()`` again reuses the port and the data directory. The
server's output goes to ``log_path``; ``output()`` reads it (for assertion messages).

Every ``start()`` gives the process a new name (``TANDTID_INSTANCE``, echoed on ``/ready``) and
waits for ``/ready`` to answer with THAT name: between a stop and the next start another process
(another test's server, an engineer's) may take the port, and its ``/ready`` is not ours. Ours
then cannot bind the port and exits: ``start()`` raises with its output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from loadtest import instance
from tests.support import free_port
from tests.support.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0


def tandtid(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``tandtid ARGS`` (e.g. ``journal check --data DIR``) to its end; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ServedProcess:
    """``tandtid serve --host 127.0.0.1 --port P --data DIR *args``; ``env`` adds to the environment."""

    def __init__(
        self, data_dir: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.args = args
        self.env = dict(env or {})
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"serve-{data_dir.name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.instance = ""  # this start's name, echoed on /ready
        self.others: set[str] = set()  # what other processes answered on /ready (for the error)

    def start(self, ready_timeout: float = READY_TIMEOUT_S) -> ServedProcess:
        """Start the process and wait until ``/ready`` answers 200 (RuntimeError with its log if it exits)."""
        command = [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
            *self.args,
        ]
        self.instance = instance.new_name()
        self.others = set()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, instance.ENV: self.instance}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        eventually_sync(self._ready, timeout=ready_timeout, interval=0.1, what=f"tandtid serve on {self.url}")
        return self

    def _ready(self) -> bool:
        """``/ready`` answers 200 with this start's name; RuntimeError at once if the process exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            others = f" (another process answers /ready there: {sorted(self.others)})" if self.others else ""
            raise RuntimeError(
                f"tandtid serve on port {self.port} exited with {self.process.returncode}{others}:\n"
                f"{self.output()}"
            )
        try:
            r = httpx.get(f"{self.url}/ready", timeout=2)
        except httpx.HTTPError:
            return False  # nothing listens yet
        if not instance.ready_as(r, self.instance):
            if instance.answering(r) != self.instance:
                self.others.add(f"{r.status_code}, instance {instance.answering(r)}")
            return False
        return True

    def stop(self) -> None:
        """SIGTERM (a graceful stop), SIGKILL if it takes longer than 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed that was not already durable."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> ServedProcess:
        self.stop()
        return self.start()

    def output(self, lines: int | None = None) -> str:
        """The server's output so far (its last ``lines`` lines)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return text if lines is None else "\n".join(text.splitlines()[-lines:])
