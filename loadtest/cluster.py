"""A tandtid cluster on this machine: one redis-server (AOF, ``appendfsync always``), N
``tandtid serve --redis URL --node NAME --advertise URL`` nodes and nginx in front of them.
``make cluster`` runs ``python -m loadtest.cluster`` (three nodes, all of Sweden, nginx on
http://127.0.0.1:8000/, everything kept in ./cluster-data; Ctrl-C stops it all); the cluster
benchmarks and their tests start the same thing on free ports.

    cluster = LocalCluster(root, nodes=3).start(scale="small")   # redis, seed once, nodes, nginx
    try:
        ... cluster.url ...                       # nginx
        victim = cluster.node_of("AB")            # the node holding AB's lease
        victim.kill()
    finally:
        cluster.stop()

The store is seeded once (``tandtid seed --redis``) before the nodes start; a store that has
clinics already (a second ``make cluster`` on the same directory) is served as it is.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import redis

from engine.model import REGIONS
from loadtest import instance
from loadtest.nginx import Nginx
from loadtest.redis_server import RedisServer, free_port
from persistence.redis_journal import region_key
from server.regions.lease import Owner, parse_lease

REGION_CODES = tuple(r.code for r in REGIONS)
READY_TIMEOUT_S = 900.0  # a node loads a replica of every region (all of Sweden: minutes on 2 busy cores)
STOP_TIMEOUT_S = 20.0


def tandtid(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", *args]


class Node:
    """One ``tandtid serve --node NAME`` process, its output in ``log``."""

    def __init__(
        self, root: Path, name: str, redis_url: str, port: int, env: dict[str, str], log_level: str = "info"
    ) -> None:
        self.name = name
        self.log_level = log_level
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.data = root / name
        self.log = root / f"{name}.log"
        self.redis_url = redis_url
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.instance = ""  # this start's name (``loadtest.instance``): /ready from this process only

    def start(self) -> Node:
        """Start the process (in a session of its own: whoever started it stops it); not waiting."""
        self.data.mkdir(parents=True, exist_ok=True)
        command = tandtid(
            "serve",
            *("--host", "127.0.0.1", "--port", str(self.port), "--data", str(self.data)),
            *("--redis", self.redis_url, "--node", self.name, "--advertise", self.url),
            *("--log-level", self.log_level),
        )
        self.instance = instance.new_name()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env, instance.ENV: self.instance},
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        """Its /ready answers 200 with this start's name; RuntimeError (with the end of its log) if it
        exited."""
        if not self.alive():
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{self.name} exited:\n{tail}")
        try:
            return instance.ready_as(httpx.get(f"{self.url}/ready", timeout=5), self.instance)
        except httpx.HTTPError:
            return False

    def writes(self) -> set[str]:
        """The regions the node says it writes (its /ready)."""
        try:
            return set(httpx.get(f"{self.url}/ready", timeout=10).json().get("regions_owned", ()))
        except (httpx.HTTPError, ValueError):
            return set()

    def stop(self) -> None:
        """SIGTERM (the node drains and hands its leases back), SIGKILL past STOP_TIMEOUT_S."""
        if not self.alive():
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def wait_until(check: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Until ``check()`` is truthy; TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)  # polling a system that gets there on its own


class LocalCluster:
    """redis-server + ``nodes`` tandtid nodes + nginx, all under ``root``."""

    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        *,
        port: int | None = None,
        node_ports: Sequence[int] = (),
        redis_port: int | None = None,
        env: dict[str, str] | None = None,
        log_level: str = "info",
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(port=redis_port, data_dir=root / "redis", own_session=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ports = list(node_ports) or [free_port() for _ in range(nodes)]
        node_env = {
            # nginx is the peer of every request: its X-Forwarded-For names the client
            "TANDTID_FORWARDED_ALLOW_IPS": "127.0.0.1",
            # the browser's origin is nginx's address, not a node's
            "TANDTID_ALLOWED_ORIGINS": f"http://localhost:{self.port},http://127.0.0.1:{self.port}",
            **(env or {}),
        }
        self.nodes = [
            Node(root, f"node{i + 1}", self.redis.url, ports[i], node_env, log_level) for i in range(nodes)
        ]
        self.nginx = Nginx(root / "nginx", [f"127.0.0.1:{n.port}" for n in self.nodes], port=self.port)
        self._store: redis.Redis | None = None
        self.seeded = ""  # what ``tandtid seed`` printed, when this start seeded

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def store(self) -> redis.Redis:
        if self._store is None:
            self._store = redis.Redis.from_url(self.redis.url)
        return self._store

    def start(self, *, scale: str = "small", booked: float = 0.0, spread: bool = True) -> LocalCluster:
        """Redis, the seed (once), every node (until each is ready and, with ``spread``, the
        regions are spread over them), then nginx."""
        try:
            self.redis.start()
            self.seed(scale, booked)
            # All at once: the first takes every region and hands the others' shares back as
            # they join (the case that once left a node writing regions it had handed back).
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                wait_until(node.ready, READY_TIMEOUT_S, f"{node.name}'s /ready")
            if spread:
                wait_until(self.spread, 120, "the regions to be spread over the nodes")
            self.nginx.start()
        except BaseException:
            self.stop()
            raise
        return self

    def seed(self, scale: str, booked: float) -> bool:
        """``tandtid seed --redis`` into an empty store (its output kept in ``seeded``); False if
        it had clinics."""
        done = subprocess.run(
            tandtid(
                "seed",
                *("--redis", self.redis.url, "--data", str(self.root / "seed")),
                *("--scale", scale, "--booked", str(booked)),
            ),
            capture_output=True,
            text=True,
            env={**os.environ, "TANDTID_LOG_LEVEL": "warning"},
        )
        if "already has clinics" in done.stdout:
            return False
        if done.returncode != 0:
            raise RuntimeError(f"tandtid seed failed:\n{done.stdout}\n{done.stderr[-2000:]}")
        self.seeded = done.stdout.strip()
        return True

    def owners(self) -> dict[str, str]:
        """region -> the node holding its lease now (regions without a lease left out)."""
        return lease_owners(self.store)

    def lease(self, region: str) -> Owner | None:
        return parse_lease(self.store.get(region_key(region, "lease")))

    def node_of(self, region: str) -> Node:
        name = self.owners()[region]
        return next(node for node in self.nodes if node.name == name)

    def spread(self) -> bool:
        """Every region leased, fairly over the live nodes, and each node writing what it holds."""
        owners = self.owners()
        live = [node for node in self.nodes if node.alive()]
        counts = sorted(list(owners.values()).count(node.name) for node in live)
        if len(owners) != len(REGION_CODES) or not counts or counts[-1] - counts[0] > 1 or counts[0] == 0:
            return False
        return all(node.writes() == {c for c, n in owners.items() if n == node.name} for node in live)

    def stop(self) -> None:
        """nginx, then the nodes (each hands its leases back), then Redis."""
        self.nginx.stop()
        for node in self.nodes:
            if node.alive():
                assert node.process is not None
                node.process.terminate()
        for node in self.nodes:
            node.stop()
        if self._store is not None:
            self._store.close()
            self._store = None
        self.redis.stop()


def lease_owners(store: redis.Redis) -> dict[str, str]:
    """region -> the node holding its lease (regions without a lease left out)."""
    pipe = store.pipeline(transaction=False)  # not MGET: a Redis Cluster keeps them on several shards
    for code in REGION_CODES:
        pipe.get(region_key(code, "lease"))
    values = pipe.execute()
    leases = {code: parse_lease(value) for code, value in zip(REGION_CODES, values, strict=True)}
    return {code: lease.node for code, lease in leases.items() if lease is not None}


def free_times(
    base: str, region: str, count: int, *, per_clinic: int | None = None, service: str = "checkup"
) -> list[dict[str, str]]:
    """``count`` bookable times of ``region`` (clinic, resource, start) as the node or balancer at
    ``base`` answers them now: on distinct resources, or with ``per_clinic`` up to that many per
    clinic (any resource)."""
    clinics = httpx.get(
        f"{base}/api/clinics",
        params={"region": region, "service": service, "has_free": "true", "limit": 50},
        timeout=30,
    ).json()
    chosen: list[dict[str, str]] = []
    for clinic in clinics:
        avail = httpx.get(
            f"{base}/api/clinics/{clinic['id']}/availability",
            params={"service": service, "days": 14},
            timeout=30,
        ).json()
        times = [t for day in avail["days"] for t in day["times"]]
        if per_clinic is None:
            times = [t for t in times if all(c["resource"] != t["resource"] for c in chosen)][:1]
        for t in times[: per_clinic or 1]:
            chosen.append({"clinic": clinic["id"], "resource": t["resource"], "start": t["start"]})
        if len(chosen) >= count:
            break
    return chosen[:count]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.cluster",
        description="Redis, tandtid nodes and nginx on this machine (make cluster). Ctrl-C stops them all.",
    )
    parser.add_argument("--dir", default="./cluster-data", help="Redis's AOF, the nodes' data and logs")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--port", type=int, default=8000, help="nginx's port (the address to open)")
    parser.add_argument(
        "--node-port",
        type=int,
        default=8001,
        help="the first node's port, the next ones follow (0: free ports)",
    )
    parser.add_argument("--redis-port", type=int, default=6380, help="0: a free port")
    parser.add_argument("--scale", default="sweden", help="seed scale of an empty store: demo, small, sweden")
    parser.add_argument("--booked", type=float, default=0.3, help="seed: share of open times pre-booked")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    cluster = LocalCluster(
        root,
        args.nodes,
        port=args.port,
        node_ports=[args.node_port + i for i in range(args.nodes)] if args.node_port else (),
        redis_port=args.redis_port or None,
    )
    stopping: list[int] = []

    def stop_on(signum: int, _frame: object) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    # Both, explicitly: a process started in the background by a shell without job control (nohup,
    # CI) inherits SIGINT ignored, and Python then leaves it ignored: Ctrl-C (or a test's SIGINT)
    # would do nothing.
    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGINT, stop_on)
    print(
        f"starting Redis on {cluster.redis_url} (AOF in {root / 'redis'}), {args.nodes} nodes on ports"
        f" {', '.join(str(n.port) for n in cluster.nodes)} (logs in {root}/node*.log) and nginx on"
        f" {cluster.url}; seeding an empty store with --scale {args.scale} first",
        flush=True,
    )
    try:
        cluster.start(scale=args.scale, booked=args.booked, spread=False)
        print(cluster.seeded or f"the store in {root / 'redis'} has clinics already: not seeding", flush=True)
        print(f"\ntandtid cluster ready: open {cluster.url}/   (Ctrl-C stops it)", flush=True)
        print(
            "nodes: "
            + ", ".join(f"{n.name} {n.url}" for n in cluster.nodes)
            + f"; Redis {cluster.redis_url}",
            flush=True,
        )
        gone: set[str] = set()
        while True:
            for node in cluster.nodes:
                if not node.alive() and node.name not in gone:
                    gone.add(node.name)
                    print(
                        f"{node.name} exited; the others take its regions over (its log: {node.log})",
                        flush=True,
                    )
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping nginx, the nodes and Redis", flush=True)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
