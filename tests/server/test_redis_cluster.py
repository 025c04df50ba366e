"""Integration: two real ``tandtid serve --redis URL --node`` processes on a real three-master Redis
Cluster (started by the test session): the URL names one master, the nodes find the others; the
demo is seeded, leases spread, bookings are made on the owner and through the other node, and the
keys tandtid wrote are sharded by their hash tags."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import redis

from tests.server.test_cluster import book
from tests.support.cluster import REGION_CODES, Cluster, free_times
from tests.support.redis_cluster import RedisCluster3
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TAGGED = re.compile(r"^tandtid:\{([^{}]+)\}:")
# Keys without a hash tag: each is only ever used alone (one key per command or script).
UNTAGGED = re.compile(r"^tandtid:(nodes|write-probe|ratelimit:[0-9a-f]{64})$")


def test_nodes_on_a_three_master_redis_cluster_book_forward_and_shard_by_region(
    tmp_path: Path, redis_cluster: RedisCluster3
) -> None:
    redis_cluster.flush()
    cluster = Cluster(tmp_path, redis_cluster.url, ("node-a", "node-b"), patients=2)
    try:
        cluster.start(seed=True)
        owner = cluster.owner("AB")
        other = cluster.other_than(owner)
        owner_name = cluster.owners()["AB"]
        first, second = free_times(owner.url, "AB", 2)

        r = book(owner.url, cluster.tokens[0], first)
        assert r.status_code == 201, r.text
        forwarded = book(other.url, cluster.tokens[1], second)
        assert forwarded.status_code == 201, forwarded.text
        assert forwarded.headers["x-tandtid-forwarded-to"] == owner_name
        taken = book(other.url, cluster.tokens[0], first)
        assert taken.status_code == 409 and taken.json()["error"]["code"] == "SLOT_TAKEN", taken.text

        # The patient's session (made in the cluster's accounts) reads the booking on either node;
        # the other node's replica followed AB's stream from its shard.
        booking_id = r.json()["booking"]["id"]
        for served in (owner, other):
            eventually_sync(
                lambda s=served: (
                    httpx.get(
                        f"{s.url}/api/bookings/{booking_id}",
                        headers={"Authorization": f"Bearer {cluster.tokens[0]}"},
                        timeout=30,
                    ).status_code
                    == 200
                ),
                what=f"the booking on {served.url}",
            )

        # Every key tandtid wrote carries a hash tag (or is one of the few used alone), and the
        # regions' keys are spread over the masters: each region on the shard of its tag.
        tags_by_master: list[set[str]] = []
        for server in redis_cluster.servers:
            client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
            try:
                keys = list(client.scan_iter(count=1000))
            finally:
                client.close()
            strays = [k for k in keys if not TAGGED.match(k) and not UNTAGGED.match(k)]
            assert not strays, f"keys without a hash tag: {strays}"
            tags_by_master.append({m.group(1) for k in keys if (m := TAGGED.match(k))})
        region_shards = [tags & set(REGION_CODES) for tags in tags_by_master]
        assert sum(1 for regions in region_shards if regions) == 3, region_shards
        assert set().union(*region_shards) == set(REGION_CODES)
        owners_of_ab = [i for i, regions in enumerate(region_shards) if "AB" in regions]
        assert len(owners_of_ab) == 1  # journal, position, epoch, lease, lease_epoch, snapshot: one shard
        assert any("accounts" in tags for tags in tags_by_master)
    finally:
        cluster.stop()
