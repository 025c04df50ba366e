"""A real nginx (Debian's package) in front of several tandtid nodes, as a cluster's clients
reach it: round robin, WebSocket upgrades passed through, a node that refuses connections (or
cannot be reached within a second) skipped for the next one, also for a POST (nothing was sent
to it yet; a request already sent is never sent twice). The one nginx configuration of the
project: the tests, the benchmarks, ``make cluster`` and ``deploy/nginx.conf`` (docker compose,
written by ``python -m loadtest.nginx``) all render it from ``CONFIG``.

    with Nginx(tmp_path, [f"127.0.0.1:{node.port}" for node in nodes]) as nginx:
        httpx.get(f"{nginx.url}/api/clinics")
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from loadtest.redis_server import free_port

START_TIMEOUT_S = 30.0

CONFIG = """# tandtid behind nginx: round robin over the nodes, WebSocket upgrades passed through, a node
# that refuses connections tried no more for {fail_timeout} and the request passed to the next one.
{user}worker_processes {workers};
pid {root}/nginx.pid;
error_log {error_log} warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream tandtid {{
{servers}
    keepalive 64;
  }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    listen {listen};
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_connect_timeout 1s;
    location / {{
      proxy_pass http://tandtid;
      # Only what was never sent goes to the next node: a refused or unreachable one.
      proxy_next_upstream error timeout http_502;
      proxy_read_timeout 60s;
    }}
    location /ws {{
      proxy_pass http://tandtid;
      proxy_next_upstream error timeout;
      proxy_read_timeout 1h;  # a quiet topic is not a dead one
      proxy_send_timeout 1h;
    }}
  }}
}}
"""


def nginx_config(
    upstreams: Sequence[str],
    *,
    listen: str,
    root: str,
    error_log: str = "",
    workers: str = "1",
    fail_timeout: str = "5s",
    user: str = "",
) -> str:
    """The configuration for nodes at ``upstreams`` (host:port each), nginx listening on
    ``listen`` and keeping its pid and temp files under ``root``."""
    servers = "\n".join(f"    server {u} max_fails=1 fail_timeout={fail_timeout};" for u in upstreams)
    return CONFIG.format(
        user=f"user {user};\n" if user else "",
        workers=workers,
        root=root,
        error_log=error_log or f"{root}/error.log",
        servers=servers,
        listen=listen,
        fail_timeout=fail_timeout,
    )


# docker-compose.yml's nginx: three nodes by their service names, nginx's own image.
COMPOSE_NODES = ("node1:8000", "node2:8000", "node3:8000")


def compose_config() -> str:
    """``deploy/nginx.conf``, the one docker-compose.yml mounts."""
    return nginx_config(COMPOSE_NODES, listen="80", root="/tmp", error_log="stderr", workers="auto")


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx (scripts/system-packages test)")
    return found


class Nginx:
    """nginx in the foreground with its configuration, pid and logs under ``root``."""

    def __init__(
        self, root: Path, upstreams: Sequence[str], *, port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.root = root
        self.port = port or free_port()
        self.url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "nginx.conf"
        user = "root" if os.geteuid() == 0 else ""  # its workers must reach the temp paths under root
        self.config.write_text(
            nginx_config(upstreams, listen=f"{host}:{self.port}", root=str(root), user=user)
        )

    def start(self) -> Nginx:
        """Start it (in a session of its own: a Ctrl-C reaches whoever started it, who stops it)
        and return once it answers."""
        with (self.root / "stderr.log").open("ab") as stderr:
            self.process = subprocess.Popen(
                [nginx_binary(), "-c", str(self.config), "-p", str(self.root)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._up():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not answer on {self.url} within {START_TIMEOUT_S:.0f} s")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited: {(self.root / 'stderr.log').read_text()}")
        try:
            httpx.get(f"{self.url}/health", timeout=2)
            return True
        except httpx.HTTPError:
            time.sleep(0.05)  # polling for readiness, not an assertion
            return False

    def stop(self) -> None:
        """Graceful: it finishes what is in flight (SIGQUIT), SIGKILL after 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


if __name__ == "__main__":
    sys.stdout.write(compose_config())
