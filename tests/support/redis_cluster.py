"""A real three-master Redis Cluster for tests: three redis-server processes with
``cluster-enabled yes`` (AOF, appendfsync always, like :class:`RedisServer`) joined by
``redis-cli --cluster create … --cluster-yes`` (no replicas), ready when every node reports
``cluster_state:ok`` and the same slot map.

    cluster = RedisCluster3().start()
    try:
        ... cluster.url ...   # redis://127.0.0.1:<first master>/0: tandtid finds the others
    finally:
        cluster.stop()
"""

from __future__ import annotations

import shutil
import subprocess
import time

import redis

from tests.support.redis_server import RedisServer, free_port
from tests.support.waiting import scaled

MASTERS = 3
READY_TIMEOUT_S = 30.0


class RedisCluster3:
    def __init__(self) -> None:
        self.servers: list[RedisServer] = []

    @property
    def url(self) -> str:
        return self.servers[0].url

    def start(self) -> RedisCluster3:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError(
                "redis-cli is needed to create a Redis Cluster: apt-get install redis-tools"
            )
        try:
            self._start(cli)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, cli: str) -> None:
        for _ in range(MASTERS):
            # nodes.conf lands in the server's own data dir (redis-server works in ``dir``); the
            # bus port is chosen too (the default, port + 10000, may be taken or past 65535).
            config = {
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-port": str(free_port()),
            }
            server = RedisServer(extra_config=config)
            self.servers.append(server)
            server.start()
        subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{s.port}" for s in self.servers], "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=scaled(READY_TIMEOUT_S),
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + scaled(READY_TIMEOUT_S)
        clients = [redis.Redis(host="127.0.0.1", port=s.port, decode_responses=True) for s in self.servers]
        try:
            while True:
                infos = [c.cluster("INFO") for c in clients]
                states = [i.get("cluster_state") if isinstance(i, dict) else None for i in infos]
                known = [int(i.get("cluster_known_nodes", 0)) if isinstance(i, dict) else 0 for i in infos]
                if all(s == "ok" for s in states) and all(k == MASTERS for k in known):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the Redis Cluster did not become ready: {infos}")
                time.sleep(0.05)  # polling for readiness, not an assertion
        finally:
            for c in clients:
                c.close()

    def flush(self) -> None:
        """Empty every master (between tests sharing one cluster)."""
        for server in self.servers:
            client = redis.Redis(host="127.0.0.1", port=server.port)
            try:
                client.flushall()
                client.script_flush()
            finally:
                client.close()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []
