"""Several real ``tandtid serve --redis URL --node NAME --advertise URL`` processes on one Redis,
for the multi-node tests (leases, consumers once per region, forwarding, failover).

    cluster = Cluster(tmp_path, redis_server.url, ("node-a", "node-b"), patients=4)
    cluster.start(seed=True)                     # node-a seeds the demo; waits for both /ready
    owner = cluster.owner("AB")                  # the node holding AB's lease (from Redis)
    ... cluster.tokens[0] ... (a patient's Bearer token, valid on every node)
    cluster.stop()

Accounts and sessions live in the shared Redis; every node gets the same session secret, so a
patient's token is valid on all of them.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from engine.model import REGIONS
from loadtest.cluster import free_times, lease_owners
from persistence import redis_client
from persistence.redis_journal import region_key
from server.identity.accounts import Role
from server.identity.auth import SessionSigner, start_session
from server.regions.lease import Owner, parse_lease
from server.stores import open_accounts
from tests.support.served import ServedProcess
from tests.support.waiting import eventually_sync

REGION_CODES = tuple(r.code for r in REGIONS)
__all__ = ["Cluster", "alive", "free_times", "metric"]


class Cluster:
    def __init__(
        self,
        root: Path,
        redis_url: str,
        names: tuple[str, ...],
        *,
        patients: int = 0,
        env: dict[str, str] | None = None,
        lease_ttl_ms: int = 5_000,  # on a loaded 2-core machine 2 s leases lapse now and then
    ) -> None:
        self.root = root
        self.redis_url = redis_url
        self.secret = secrets.token_urlsafe(48)
        self.env = {
            "TANDTID_LEASE_TTL_MS": str(lease_ttl_ms),
            "TANDTID_RATE_PER_S": "0",
            "TANDTID_SECRET_KEY": self.secret,
            **(env or {}),
        }
        self.nodes: dict[str, ServedProcess] = {}
        for name in names:
            served = ServedProcess(root / name, env=self.env)
            served.args = ("--redis", redis_url, "--node", name, "--advertise", served.url)
            self.nodes[name] = served
        self.tokens = self._patients(patients)
        self.store = redis_client.connect(redis_url)  # a RedisCluster client for a cluster URL

    def _patients(self, count: int) -> list[str]:
        """``count`` patients with one session each, in the accounts every node shares (Redis)."""
        store = open_accounts(self.root, self.redis_url)
        signer = SessionSigner(self.secret.encode())
        try:
            tokens = []
            for n in range(count):
                user = store.create_user(
                    f"cluster.patient{n}@example.test", "hemligt-losen", f"Klusterpatient {n}", Role.PATIENT
                )
                tokens.append(start_session(store, signer, user))
        finally:
            store.close()
        return tokens

    def session(self, role: Role) -> str:
        """A Bearer token of a new account with ``role`` (in the shared accounts)."""
        store = open_accounts(self.root, self.redis_url)
        try:
            user = store.create_user(
                f"cluster.{role.value}.{secrets.token_hex(4)}@example.test", "hemligt-losen", "Kluster", role
            )
            return start_session(store, SessionSigner(self.secret.encode()), user)
        finally:
            store.close()

    def start(self, *, seed: bool = True) -> Cluster:
        """The first node (seeding an empty store when ``seed``), then the others; each
        waits for its own /ready. Then until the regions are spread over every node."""
        for i, served in enumerate(self.nodes.values()):
            if i == 0 and seed:
                served.args = (*served.args, "--seed")
            served.start()
        eventually_sync(self.spread, timeout=60, what="the regions to be spread over every node")
        return self

    def owners(self) -> dict[str, str]:
        """region -> the node holding its lease now (regions without a lease left out)."""
        return lease_owners(self.store)

    def spread(self) -> bool:
        """Every region leased, fairly over the live nodes, and each node writing what it holds."""
        owners = self.owners()
        live = {name: served for name, served in self.nodes.items() if alive(served)}
        counts = sorted(list(owners.values()).count(name) for name in live)
        if len(owners) != len(REGION_CODES) or counts[-1] - counts[0] > 1 or counts[0] == 0:
            return False
        return all(
            self.writes(served) == {c for c, n in owners.items() if n == name}
            for name, served in live.items()
        )

    @staticmethod
    def writes(served: ServedProcess) -> set[str]:
        """The regions the node says it writes (its /ready)."""
        try:
            return set(httpx.get(f"{served.url}/ready", timeout=10).json().get("regions_owned", ()))
        except httpx.HTTPError:
            return set()

    def lease(self, region: str) -> Owner | None:
        return parse_lease(self.store.get(region_key(region, "lease")))

    def owner(self, region: str) -> ServedProcess:
        return self.nodes[self.owners()[region]]

    def other_than(self, served: ServedProcess) -> ServedProcess:
        return next(s for s in self.nodes.values() if s is not served and alive(s))

    def region_owned_by(self, served: ServedProcess, *, but: str = "") -> str:
        name = next(n for n, s in self.nodes.items() if s is served)
        return next(code for code, node in sorted(self.owners().items()) if node == name and code != but)

    def stop(self) -> None:
        for served in self.nodes.values():
            served.stop()
        self.store.close()


def alive(served: ServedProcess) -> bool:
    return served.process is not None and served.process.poll() is None


def metric(served: ServedProcess, name: str, **labels: str) -> float | None:
    """One sample of ``name`` with exactly ``labels`` from the node's /metrics (None: absent)."""
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        series, _, value = line.rpartition(" ")
        inner = series[len(name) + 1 : -1]
        if ",".join(sorted(inner.split(","))) == wanted:
            return float(value)
    return None
