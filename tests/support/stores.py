"""Both homes of the shared state, for contract tests: ``sqlite`` (files in a data directory) and
``redis`` (a real redis-server). ``StoreBackend.opened(...)`` opens a store where the product
would (``server.stores``); ``written()`` is every byte the backend holds (SQLite's files, or each
Redis key with its value) and ``key_names()`` the Redis keys, to show what is and is not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis

STORE_KINDS = ("sqlite", "redis")


@dataclass
class StoreBackend:
    kind: str
    data_dir: Path
    redis_url: str | None = None

    def written(self) -> bytes:
        if self.redis_url is None:
            return b"".join(p.read_bytes() for p in sorted(self.data_dir.rglob("*")) if p.is_file())
        out = b""
        client = redis.Redis.from_url(self.redis_url)
        try:
            for key in client.scan_iter(count=1000):
                out += key + b"\n"
                kind = client.type(key)
                if kind == b"string":
                    out += client.get(key) or b""
                elif kind == b"hash":
                    out += b"".join(_raw(k) + b"=" + _raw(v) for k, v in client.hgetall(key).items())
                elif kind == b"set":
                    out += b"".join(map(_raw, client.smembers(key)))
                elif kind == b"zset":
                    out += b"".join(map(_raw, client.zrange(key, 0, -1)))
                elif kind == b"list":
                    out += b"".join(map(_raw, client.lrange(key, 0, -1)))
                out += b"\n"
        finally:
            client.close()
        return out

    def key_names(self) -> list[str]:
        if self.redis_url is None:
            return []
        client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            return sorted(client.scan_iter(count=1000))
        finally:
            client.close()

    def flush(self) -> None:
        if self.redis_url is not None:
            client = redis.Redis.from_url(self.redis_url)
            try:
                client.flushall()
            finally:
                client.close()


def _raw(value: object) -> bytes:
    """One member or value as Redis holds it. redis-py types its replies loosely (``bytes | str``,
    or a union with the ``withscores`` shapes for ZRANGE); without ``decode_responses`` and
    without scores each one is bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"not a Redis string: {type(value).__name__}")
