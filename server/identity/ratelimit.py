"""Token buckets per client: ``rate`` tokens a second, up to ``burst``; an empty bucket -> 429.

Two layers use it: ``RateLimitMiddleware`` keys by client IP (every HTTP request), and routes
key by principal (``"u:<user id>"`` / ``"k:<clinic>"``) once they know who is asking. Keys are IPs
or opaque ids, never personal data. Memory is bounded: at most ``max_keys`` buckets are kept,
the least recently used are forgotten (a forgotten client simply starts with a full bucket).

:class:`RedisRateLimiter` keeps buckets that every node must share in Redis (``--redis``): the
per-account sign-in throttle, which spread over N nodes would otherwise allow N times the
guesses. One Lua script per call on Redis's own clock (``TIME``), so nodes' clocks do not
matter; a bucket's key expires once it would be full again.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.http.errors import error_response
from server.redis_state import Lookup, connect


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def wait(self, key: str, cost: float = 1.0) -> float:
        """The seconds until ``cost`` tokens are there for ``key`` (0.0 now), taking none."""
        if self.rate <= 0 or key not in self._buckets:
            return 0.0
        tokens, at = self._buckets[key]
        tokens = min(self.burst, tokens + (self.clock() - at) * self.rate)
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens for ``key``. Returns 0.0 when allowed, else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'at')
if ARGV[4] ~= 'take' and not stored[1] then return '0' end
local tokens = burst
if stored[1] then tokens = math.min(burst, tonumber(stored[1]) + (now - tonumber(stored[2])) * rate) end
local wait = 0
if tokens < cost then wait = (cost - tokens) / rate end
if ARGV[4] == 'take' then
  if wait == 0 then tokens = tokens - cost end
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
end
return tostring(wait)
"""


class RedisRateLimiter:
    """:class:`RateLimiter`'s ``wait``/``take`` on buckets in the Redis at ``url``, keyed
    ``tandtid:ratelimit:<HMAC of the key>`` (a digest of an e-mail could be guessed back from a
    list of addresses; an HMAC under a random key in Redis cannot). Call :meth:`close`."""

    def __init__(self, url: str, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._redis = connect(url)
        self._bucket = self._redis.register_script(_BUCKET)
        self._lookup = Lookup(self._redis, "ratelimit")

    def _call(self, key: str, cost: float, mode: str) -> float:
        if self.rate <= 0:
            return 0.0
        args = [repr(self.rate), repr(self.burst), repr(cost), mode]
        return float(self._bucket(keys=["tandtid:ratelimit:" + self._lookup.digest(key)], args=args))

    def wait(self, key: str, cost: float = 1.0) -> float:
        return self._call(key, cost, "wait")

    def take(self, key: str, cost: float = 1.0) -> float:
        return self._call(key, cost, "take")

    def close(self) -> None:
        self._redis.close()


def rate_limited(scope: Scope, wait: float) -> Response:
    return error_response(
        scope,
        429,
        "RATE_LIMITED",
        "too many requests; slow down",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


class RateLimitMiddleware:
    """Per client IP, on every HTTP request except the operations endpoints (probes must not be
    starved) and static assets (a page load fetches dozens; they cost next to nothing)."""

    EXEMPT = ("/health", "/ready", "/metrics")
    EXEMPT_PREFIX = "/static/"

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path not in self.EXEMPT and not path.startswith(self.EXEMPT_PREFIX):
            client = scope.get("client")
            key = "ip:" + (client[0] if client else "unknown")
            wait = self.limiter.take(key)
            if wait > 0:
                await rate_limited(scope, wait)(scope, receive, send)
                return
        await self.app(scope, receive, send)
