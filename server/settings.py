"""Settings from command-line flags and environment variables (one table in the README).

Precedence: explicit overrides (flags) > environment (``TANDTID_*``) > defaults.
The session signing key lives in ``<data_dir>/secret.key`` (created once, mode 0600), or with
``--redis`` in Redis (created once by whichever node starts first: every node signs and checks
the same tokens), unless ``TANDTID_SECRET_KEY`` is set, so restarts and deploys keep everybody
signed in.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from persistence.durable_file import write_atomically


def env_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


CONSUMERS = ("process", "in-process")


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    redis_url: str | None = None
    secret_key: bytes = b""
    allowed_origins: list[str] = field(default_factory=list)
    epoch: int = 1
    node: str | None = None  # with redis_url: region ownership by leases (server.regions.lease)
    advertise: str | None = None  # this node's address for other nodes (stored in its leases)
    lease_ttl_ms: int = 5_000
    forward_timeout_s: float = 10.0  # a request forwarded to a region's owner: 503 past this
    # An idle keep-alive connection is closed after this long. A client that sends a request the
    # moment the server closes gets no answer (and POSTs are not retried: Locust's client, nginx's
    # upstream keep-alive, a browser's fetch may fail), so it must be longer than any client keeps
    # an idle connection: nginx keeps upstream connections 60 s. uvicorn's own default is 5 s.
    keep_alive_s: int = 75
    hold_ttl_s: int = 300
    horizon_days: int = 400  # days may be opened and asked about this far ahead, no further
    session_ttl_s: int = 7 * 24 * 3600
    rate_per_s: float = 50.0
    rate_burst: int = 200
    max_body_bytes: int = 64 * 1024
    max_header_bytes: int = 32 * 1024  # request line target + all headers; more is 431
    max_headers: int = 100
    max_ws_frame: int = 64 * 1024
    ws_send_buffer: int = 256
    ws_max_connections: int = 10_000
    ws_max_connections_per_ip: int = 200
    # Proxies whose X-Forwarded-For / -Proto are believed (uvicorn's forwarded_allow_ips: addresses,
    # networks or "*"); empty: none, the peer address is the client's (per-IP caps, rate limits).
    forwarded_allow_ips: list[str] = field(default_factory=list)
    snapshot_every_events: int = 100_000
    snapshot_every_s: float = 300.0
    tick_interval_s: float = 1.0
    secure_cookies: bool = False
    log_level: str = "info"
    # An event-loop stall longer than this (ms) is logged with the loop's stack (server.loop_lag); 0: off.
    stall_ms: int = 200
    # the map's street layer ({z}/{x}/{y} tile template; "off": the county outline only). Another tile server
    # must allow the use (OpenStreetMap's policy: light use, attribution shown).
    tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    # A name given by whoever starts the process, echoed on /ready (``instance``): the starter then
    # knows it reached its own process, not another one that took the port meanwhile (the tests'
    # restarts). Unset: /ready does not carry it.
    instance: str | None = None
    # Where the journal consumers (e-mails, webhooks) run: "process", their own process beside the
    # server's (server.consumers.process), or "in-process", on the server's loop and threads.
    consumers: str = "process"
    # A consumers' process that answers no ping this long (seconds) is hung: killed and started again.
    consumers_hung_s: float = 30.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ) if env is None else env
        values: dict[str, Any] = {}
        parsers: dict[str, Any] = {
            "host": str,
            "port": int,
            "data_dir": Path,
            "redis_url": str,
            "secret_key": lambda v: v.encode(),
            "allowed_origins": env_list,
            "epoch": int,
            "node": str,
            "advertise": str,
            "lease_ttl_ms": int,
            "forward_timeout_s": float,
            "keep_alive_s": int,
            "hold_ttl_s": int,
            "horizon_days": int,
            "session_ttl_s": int,
            "rate_per_s": float,
            "rate_burst": int,
            "max_body_bytes": int,
            "max_header_bytes": int,
            "max_headers": int,
            "max_ws_frame": int,
            "ws_send_buffer": int,
            "ws_max_connections": int,
            "ws_max_connections_per_ip": int,
            "forwarded_allow_ips": env_list,
            "snapshot_every_events": int,
            "snapshot_every_s": float,
            "tick_interval_s": float,
            "secure_cookies": lambda v: v.lower() in ("1", "true", "yes"),
            "log_level": str,
            "stall_ms": int,
            "tile_url": str,
            "instance": str,
            "consumers": str,
            "consumers_hung_s": float,
        }
        for f in fields(cls):
            var = "TANDTID_" + f.name.upper()
            if var in env and env[var] != "" and f.name in parsers:
                values[f.name] = parsers[f.name](env[var])
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.data_dir = Path(settings.data_dir)
        if settings.consumers not in CONSUMERS:
            raise ValueError(f"consumers must be one of {', '.join(CONSUMERS)}, not {settings.consumers!r}")
        if not settings.allowed_origins:
            settings.allowed_origins = [
                f"http://localhost:{settings.port}",
                f"http://127.0.0.1:{settings.port}",
                f"http://{settings.host}:{settings.port}",
            ]
        if not settings.secret_key:
            if settings.redis_url:
                from server.redis_state import shared_secret

                settings.secret_key = shared_secret(settings.redis_url)
            else:
                settings.secret_key = load_or_create_secret(settings.data_dir)
        return settings


def load_or_create_secret(data_dir: Path) -> bytes:
    """The session signing key kept in the data directory (created on first start)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    key = secrets.token_urlsafe(48).encode()
    write_atomically(path, key, mode=0o600)
    return key
