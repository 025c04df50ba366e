"""A real nginx (Debian's package; ``scripts/system-packages test`` installs it) in front of
several tandtid nodes, as a cluster's clients would reach it: round robin, a node that refuses
connections skipped for the next (also for POST: nothing was sent to it yet).

    with Nginx(tmp_path, [node.port for node in nodes]) as nginx:
        httpx.get(f"{nginx.url}/api/clinics")
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from types import TracebackType

import httpx

from tests.support import free_port
from tests.support.waiting import eventually_sync

CONFIG = """
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
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
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://tandtid;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_next_upstream error timeout http_502;
      proxy_connect_timeout 1s;
      proxy_read_timeout 60s;
    }}
  }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        raise RuntimeError("nginx is not installed: run scripts/system-packages test")
    return found


class Nginx:
    def __init__(self, root: Path, ports: list[int]) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in ports)
        user = "user root;" if os.geteuid() == 0 else ""  # its workers must reach the temp paths here
        self.config = root / "nginx.conf"
        self.config.write_text(CONFIG.format(user=user, root=root, servers=servers, port=self.port))

    def __enter__(self) -> Nginx:
        with (self.root / "stderr.log").open("ab") as stderr:
            self.process = subprocess.Popen(
                [nginx_binary(), "-c", str(self.config), "-p", str(self.root)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        eventually_sync(self._up, what="nginx to listen")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited: {(self.root / 'stderr.log').read_text()}")
        try:
            httpx.get(f"{self.url}/health", timeout=2)
            return True
        except httpx.HTTPError:
            return False

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
