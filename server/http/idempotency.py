"""Keyed bookings in flight: while one request with a patient's Idempotency-Key is being decided,
a concurrent twin (same patient, same key) is answered 409 instead of racing it.

What a key finally decided is kept by the engine (the booking remembers its key's digest, in
the journal); this is only the "in progress" mark. :class:`LocalInFlight` keeps it in this
process (one node); :class:`RedisInFlight` in Redis (``--redis``), so a twin sent to another
node is refused too: ``SET NX PX`` under a name made of a SHA-256 of the patient's opaque id and
the key's digest (no personal data), released by compare-and-delete, and expiring by itself
(``ttl_s``) if the node deciding it dies.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol

from persistence.redis_client import connect_async

IN_FLIGHT_TTL_S = 30.0  # longer than any booking request is given (the region's submit timeout)
_PREFIX = "tandtid:{idempotency}:in-flight:"
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class InFlight(Protocol):
    async def claim(self, patient: str, digest: str) -> str | None:
        """A claim on (patient, key digest), or None if another request holds it now. Pass the
        claim to :meth:`release` when the request is decided, whatever the outcome."""
        ...

    async def release(self, patient: str, digest: str, claim: str) -> None: ...

    async def close(self) -> None: ...


class LocalInFlight:
    def __init__(self) -> None:
        self._held: set[tuple[str, str]] = set()

    async def claim(self, patient: str, digest: str) -> str | None:
        if (patient, digest) in self._held:
            return None
        self._held.add((patient, digest))
        return "local"

    async def release(self, patient: str, digest: str, claim: str) -> None:
        self._held.discard((patient, digest))

    async def close(self) -> None:
        return


class RedisInFlight:
    def __init__(self, url: str, *, ttl_s: float = IN_FLIGHT_TTL_S) -> None:
        self._redis = connect_async(url, decode_responses=True)
        self._release = self._redis.register_script(_RELEASE)
        self._ttl_ms = int(ttl_s * 1000)

    @staticmethod
    def _key(patient: str, digest: str) -> str:
        return _PREFIX + hashlib.sha256(f"{patient}\0{digest}".encode()).hexdigest()

    async def claim(self, patient: str, digest: str) -> str | None:
        claim = secrets.token_hex(8)
        taken = await self._redis.set(self._key(patient, digest), claim, nx=True, px=self._ttl_ms)
        return claim if taken else None

    async def release(self, patient: str, digest: str, claim: str) -> None:
        await self._release(keys=[self._key(patient, digest)], args=[claim])

    async def close(self) -> None:
        await self._redis.aclose()
