"""Who may open a live socket: per-IP and global caps on WebSocket connections.

Every open connection costs a file descriptor and a little memory; without caps one address
could open tens of thousands and starve the process of descriptors (and with it the notifier,
the webhook dispatcher and every other client). A handshake over a cap is refused before the
upgrade: HTTP 429 when its address already holds ``settings.ws_max_connections_per_ip``, HTTP 503
when the server holds ``settings.ws_max_connections``; each refusal is counted in
``tandtid_ws_refused_total{reason}`` (the address itself is never a label). The caps are read
per handshake, so a changed setting applies to the next one.
"""

from __future__ import annotations

from typing import Literal

from server.settings import Settings

Refusal = Literal["per_ip", "global"]


class Admission:
    """Counts open connections per client address; ``admit`` before accepting, ``release`` after."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def admit(self, ip: str) -> Refusal | None:
        """Count a connection from ``ip`` and return None, or return why it is refused (not counted)."""
        held = self.per_ip.get(ip, 0)
        if held >= self.settings.ws_max_connections_per_ip:
            return "per_ip"
        if self.total >= self.settings.ws_max_connections:
            return "global"
        self.per_ip[ip] = held + 1
        self.total += 1
        return None

    def release(self, ip: str) -> None:
        held = self.per_ip.get(ip, 0) - 1
        if held > 0:
            self.per_ip[ip] = held
        else:
            self.per_ip.pop(ip, None)
        self.total -= 1
