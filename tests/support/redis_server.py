"""Tests use the same real redis-server launcher as the benchmarks (``loadtest.redis_server``)."""

from __future__ import annotations

from loadtest.redis_server import RedisServer, free_port, redis_server_binary

__all__ = ["RedisServer", "free_port", "redis_server_binary"]
