"""Webhook signatures: ``Tandtid-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The MAC is over ``f"{t}.".encode() + body`` with the endpoint's secret. A receiver verifies
it with ``verify_signature`` and refuses timestamps more than ``tolerance_s`` (default 300 s)
from its own clock, which bounds how long a captured delivery could be replayed.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Tandtid-Signature"
DEFAULT_TOLERANCE_S = 300


def _mac(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``Tandtid-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(
    secret: str | bytes, header: str | None, body: bytes, now: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> bool:
    """True when ``header`` signs exactly ``body`` with ``secret`` and its timestamp is within
    ``tolerance_s`` of ``now``. Any malformed header is simply False."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            if not value.isdigit() or timestamp is not None:
                return False
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance_s:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
