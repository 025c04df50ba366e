"""One Redis URL, a single server or a Redis Cluster: the client every Redis user in tandtid makes.

``--redis redis://host:port`` names either a plain Redis (a primary) or ANY master of a Redis
Cluster. Which one is found out once per URL and process (``INFO cluster``: ``cluster_enabled``),
and the matching redis-py client is made: ``redis.Redis`` or ``redis.RedisCluster`` (which
learns the other masters and the slot map from the node named, and follows MOVED/ASK). An
operator therefore never says which it is; a plain client pointed at a cluster would fail on
the first key of another shard, so there is nothing to choose.

Keys: every name tandtid writes carries a hash tag (``tandtid:{AB}:…`` for region AB,
``tandtid:{accounts}:…`` for one shared-state concept), and every Lua script and pipeline that
must be atomic touches keys of ONE tag only, so it runs on one shard. Cross-shard work is only
ever a non-transactional pipeline (redis-py splits it per node). MULTI/EXEC is not used on a
cluster (redis-py 5 has no cluster transactions): atomic multi-key steps are Lua scripts.

Retries: ``retry=Retry(NoBackoff(), 0)`` (the journal: an append must never be sent twice) also
switches off RedisCluster's own retries on connection errors (redis-py 6 and newer; on redis-py 5
a pipeline, which carries the appends, is tried once); redirections (MOVED/ASK, a command that did
not run) are still followed.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

_known: dict[str, bool] = {}
_lock = threading.Lock()

PROBE_TIMEOUT_S = 5.0


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a node of a Redis Cluster (asked once per URL; an unreachable
    server is taken for a plain one, not remembered: the caller's own client then fails)."""
    with _lock:
        if url in _known:
            return _known[url]
    probe = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S)
    try:
        enabled = bool(int(probe.info("cluster").get("cluster_enabled", 0)))
    except (RedisError, OSError, ValueError):
        return False
    finally:
        probe.close()
    with _lock:
        _known[url] = enabled
    return enabled


_REDIS_PY = int(redis.__version__.split(".")[0])


def _cluster_options(options: dict[str, Any]) -> dict[str, Any]:
    cluster = dict(options)
    if "retry" in cluster and _REDIS_PY < 6:
        # redis-py 5 reads this instead of retry: 1 is one try of a pipeline (0 breaks its
        # pipelines) and at most two of a lone command (the journal's are reads and the
        # idempotent snapshot HSET; its appends are pipelined).
        cluster["cluster_error_retry_attempts"] = 1
    return cluster


def connect(url: str, **options: Any) -> Any:
    """A blocking client for ``url`` (``redis.Redis`` or ``redis.RedisCluster``), made with
    ``options`` (redis-py's from_url keywords). Typed Any: the two classes share the commands
    tandtid uses but no type says so."""
    if is_cluster(url):
        return redis.RedisCluster.from_url(url, **_cluster_options(options))
    return redis.Redis.from_url(url, **options)


def connect_async(url: str, **options: Any) -> Any:
    """An asyncio client for ``url`` (``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``).
    Decides with a blocking probe the first time a URL is seen: call it at start-up (or in a
    thread), not on a request's path."""
    if is_cluster(url):
        return aioredis.RedisCluster.from_url(url, **_cluster_options(options))
    return aioredis.Redis.from_url(url, **options)
