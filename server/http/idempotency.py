"""Keyed bookings in flight: while one request with a patient's Idempotency-Key is being decided,
a concurrent twin (same patient, same key) is answered 409 (with ``Retry-After: 1``) instead of
racing it.

What a key finally decided is kept by the engine (the booking remembers its key's digest, in
the journal, and a Book repeating it makes nothing new); this is only the "in progress" mark.
:class:`LocalInFlight` keeps it in this process (one node); :class:`RedisInFlight` in Redis
(``--redis``), so a twin sent to another node is refused too: ``SET NX PX`` under a name made of
a SHA-256 of the patient's opaque id and the key's digest (no personal data), released by
compare-and-delete.

A claim in Redis is SHORT (``ttl_s``, 3 s) and renewed every third of it while its request is in
flight (compare-and-PEXPIRE), so a node that dies holding one blocks the client's retries for at
most ``ttl_s``, not for the longest a request may take: after a failover the retry is decided
within a few seconds (the engine answers it with the booking the dead node made, if it made one).
A node too stalled to renew for ``ttl_s`` loses its claim and a twin may start: in the same
region the engine still makes one booking per key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from typing import Any, Protocol

from persistence.redis_client import connect_async

log = logging.getLogger("tandtid.idempotency")

IN_FLIGHT_TTL_S = 3.0  # a claim's life in Redis unless renewed (renewed every third of it)
_PREFIX = "tandtid:{idempotency}:in-flight:"
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
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
        self._renew = self._redis.register_script(_RENEW)
        self._ttl_ms = int(ttl_s * 1000)
        self._renewing: dict[str, asyncio.Task[None]] = {}  # claim -> its renewal

    @staticmethod
    def _key(patient: str, digest: str) -> str:
        return _PREFIX + hashlib.sha256(f"{patient}\0{digest}".encode()).hexdigest()

    async def claim(self, patient: str, digest: str) -> str | None:
        claim = secrets.token_hex(8)
        key = self._key(patient, digest)
        taken = await self._redis.set(key, claim, nx=True, px=self._ttl_ms)
        if not taken:
            return None
        self._renewing[claim] = asyncio.get_running_loop().create_task(
            self._keep(key, claim), name="idempotency-claim"
        )
        return claim

    async def _keep(self, key: str, claim: str) -> None:
        """Renew the claim every third of its TTL until released (or found gone)."""
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            if claim not in self._renewing:
                return  # released (a cancel swallowed by a Redis call ends here)
            try:
                renewed: Any = await self._renew(keys=[key], args=[claim, self._ttl_ms])
            except Exception as exc:  # noqa: BLE001 - Redis away: the next round tries again
                log.warning("could not renew an idempotency claim (%s)", type(exc).__name__)
                continue
            if not int(renewed):
                log.warning("an idempotency claim lapsed while its request was in flight")
                return

    async def release(self, patient: str, digest: str, claim: str) -> None:
        task = self._renewing.pop(claim, None)
        if task is not None:
            task.cancel()  # not awaited: a renewal that still runs finds the claim gone
        await self._release(keys=[self._key(patient, digest)], args=[claim])

    async def close(self) -> None:
        for task in self._renewing.values():
            task.cancel()
        self._renewing.clear()
        await self._redis.aclose()
