"""Ids for bookings, holds and wait-list entries (``<REGION>-<kind><random>``, ``AB-b…``) and
for requests (16 hex digits, as ``secrets.token_hex(8)`` made them).

The region prefix routes any request to its region without a look-up. The random part is
url-safe base64 of ``os.urandom`` bytes (10 for a booking, 8 for a hold or a wait-list entry,
as ``secrets.token_urlsafe`` made them), taken from a 4 KiB pool that one ``getrandom`` call
refills: a system call per request showed at 6.7-7.6% of the event loop under booking load.
"""

from __future__ import annotations

import base64
import os

POOL_BYTES = 4096


class _RandomPool:
    """Cryptographic random bytes handed out from a buffer (event-loop thread only)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        if self._at + n > len(self._buffer):
            self._buffer = os.urandom(POOL_BYTES)
            self._at = 0
        taken = self._buffer[self._at : self._at + n]
        self._at += n
        return taken

    def forget(self) -> None:
        """A forked child must not hand out its parent's bytes."""
        self._buffer, self._at = b"", 0


_pool = _RandomPool()
os.register_at_fork(after_in_child=_pool.forget)


def _random_part(n: int) -> str:
    return base64.urlsafe_b64encode(_pool.take(n)).rstrip(b"=").decode("ascii")


def booking_id(region: str) -> str:
    return f"{region}-b{_random_part(10)}"


def hold_id(region: str) -> str:
    return f"{region}-h{_random_part(8)}"


def waitlist_id(region: str) -> str:
    return f"{region}-w{_random_part(8)}"


def clinic_id(region: str) -> str:
    return f"{region}-c{_random_part(6)}"


def resource_id(clinic: str) -> str:
    return f"{clinic}-r{_random_part(6)}"


def request_id() -> str:
    return _pool.take(8).hex()
