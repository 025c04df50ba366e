"""Test machinery shared by every test package: real servers, free ports, small catalogues.

The real redis-server launcher lives in ``loadtest.redis_server`` (benchmarks use it too).
"""

from __future__ import annotations

from loadtest.redis_server import free_port

__all__ = ["free_port"]
