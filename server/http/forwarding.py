"""Forwarding: a request for a region another node owns is sent to that node and its reply relayed.

In a cluster (``tandtid serve --node``) every node takes every request. A route that reaches a
region this node does not own gets ``NotOwned`` from ``Regions``; its handler marks the request
(``FORWARD_KEY`` in the scope, the region) and answers 503. ``ForwardingMiddleware`` sees the
mark when that answer starts, drops it, and sends the whole request (method, path, query,
headers, the body as the app read it) to the owner's advertised address from its lease; the
owner's status, headers and body go back to the client unchanged. So a client may talk to any
node; nginx need not know who owns what.

Rules:

- One hop only. A forwarded request carries ``X-Tandtid-Forwarded: <node> <mac>``, a MAC of the
  node name and request id under the cluster's shared session secret (every node has it, or
  sessions would not work across nodes); a node never forwards such a request again (a region
  that moved meanwhile answers 503 and the client retries), and takes the client address from
  ``X-Tandtid-Client`` only when the MAC checks, so rate limits stay per client.
- No owner (the lease is free: the region is moving), the owner unreachable, or no answer within
  ``timeout_s``: 503 ``UNAVAILABLE`` with ``Retry-After: 1`` at once, never a hang. A timed-out
  command may still have been made (the owner may answer late): a client retries it with the same
  ``Idempotency-Key``.
- The owner's ``X-Request-ID`` is our own request id (sent along), so one id names the request
  on both nodes' access logs; a relayed answer says ``X-Tandtid-Forwarded-To: <node>``.
- Read-your-writes: the forwarded request names its region (``X-Tandtid-Region``); the owner's
  answer carries the region's committed journal position when it answered
  (``X-Tandtid-Position``, relayed too), and the forwarding node relays the answer only once its
  own replica has applied that position (at most ``READ_YOUR_WRITES_S``; then it relays anyway).
  A read the client makes next on this node shows what the forwarded command did.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.http.errors import error_response, request_id
from server.http.relay import Relay, RelayError
from server.regions.lease import Owner

log = logging.getLogger("tandtid.forwarding")

FORWARD_KEY = "tandtid.forward"  # scope key: the region whose owner must answer this request
FORWARDED = b"x-tandtid-forwarded"
CLIENT = b"x-tandtid-client"
REGION = b"x-tandtid-region"  # forwarded request: the region it was forwarded for
POSITION = b"x-tandtid-position"  # the owner's answer: that region's committed position then
READ_YOUR_WRITES_S = 2.0  # longest a relay waits for this node's replica to reach POSITION

# Not passed on: hop-by-hop headers, and what the relaying node sets itself.
_DROP_REQUEST = {
    b"host",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",
    b"expect",
    b"x-request-id",
    FORWARDED,
    CLIENT,
    REGION,
}
_DROP_RESPONSE = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"content-length",
    b"x-request-id",
}


class Owners(Protocol):
    """Where each region's lease holder is (``server.regions.lease.LeaseManager``)."""

    node: str
    seen_owners: dict[str, Owner | None]

    async def owners(self) -> dict[str, Owner | None]: ...


class Replicas(Protocol):
    """This node's copies of the regions (``server.regions.routing.Regions``)."""

    def position_of(self, region: str) -> int: ...

    async def wait_applied(self, region: str, position: int, timeout_s: float) -> bool: ...


class Forwarder:
    """The cluster side of forwarding: who owns a region, and the HTTP client to reach it.
    ``await close()`` on shutdown."""

    def __init__(self, owners: Owners, secret: bytes, *, timeout_s: float = 10.0) -> None:
        self.owners = owners
        self.node = owners.node
        self._key = hmac.new(secret, b"tandtid/forwarded/v1", hashlib.sha256).digest()
        self.timeout_s = timeout_s
        self.relay = Relay(timeout_s=timeout_s, connect_timeout_s=min(1.0, timeout_s))
        self.forwarded = 0

    async def close(self) -> None:
        await self.relay.close()

    def mac(self, node: str, rid: str) -> str:
        return hmac.new(self._key, f"{node}\0{rid}".encode(), hashlib.sha256).hexdigest()[:32]

    def verified(self, value: bytes, rid: str) -> bool:
        """True when ``value`` (an X-Tandtid-Forwarded header) was made by a node of this cluster."""
        node, _, mac = value.decode("latin-1").partition(" ")
        return bool(node) and hmac.compare_digest(mac, self.mac(node, rid))

    async def owner_of(self, region: str) -> Owner | None:
        """The region's lease holder, if it is another node: the last round's view, read again
        from Redis when that says nobody or this node (it may have moved since)."""
        owner = self.owners.seen_owners.get(region)
        if owner is None or owner.node == self.node:
            try:
                owner = (await self.owners.owners()).get(region)
            except Exception as exc:  # Redis unreachable: nobody known
                log.warning("lease look-up for region %s failed: %s", region, type(exc).__name__)
                return None
        return owner if owner is not None and owner.node != self.node else None

    async def forward(self, scope: Scope, region: str, body: bytes, send: Send) -> None:
        rid = request_id(scope)
        owner = await self.owner_of(region)
        if owner is None:
            await _unavailable(scope, send, "the region is moving to another node; try again in a moment")
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in _DROP_REQUEST]
        headers.append((b"x-request-id", rid.encode()))
        headers.append((FORWARDED, f"{self.node} {self.mac(self.node, rid)}".encode()))
        headers.append((REGION, region.encode()))
        client = scope.get("client")
        if client:
            headers.append((CLIENT, str(client[0]).encode()))
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = (
            owner.address.rstrip("/")
            + path.decode("latin-1")
            + ("?" + query.decode("latin-1") if query else "")
        )
        try:
            answer = await self.relay.request(scope["method"], url, headers, body)
        except RelayError as exc:
            log.warning(
                "forwarding to node %s for region %s failed: %s (request %s)",
                owner.node,
                region,
                exc,
                rid,
            )
            await _unavailable(
                scope,
                send,
                "the region's node did not answer; try again (a change may have been made: "
                "retry it with the same Idempotency-Key)",
            )
            return
        self.forwarded += 1
        position = next((v for k, v in answer.headers if k.lower() == POSITION), b"").decode("latin-1")
        replicas: Replicas | None = getattr(scope["app"].state, "regions", None)
        if (
            position.isdigit()
            and replicas is not None
            and not await replicas.wait_applied(region, int(position), READ_YOUR_WRITES_S)
        ):
            log.warning(
                "region %s: replica not at %s within %.0f s; relayed anyway",
                region,
                position,
                READ_YOUR_WRITES_S,
            )
        relayed = [(k, v) for k, v in answer.headers if k.lower() not in _DROP_RESPONSE]
        relayed.append((b"content-length", str(len(answer.body)).encode()))
        relayed.append((b"x-tandtid-forwarded-to", owner.node.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": relayed})
        await send({"type": "http.response.body", "body": answer.body})


def _with_position(send: Send, replicas: Replicas, region: str) -> Send:
    """``send`` with the region's committed position added to the answer's headers (read when
    the answer starts: after the command it answers was made durable and applied)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            position = str(replicas.position_of(region)).encode()
            message = {**message, "headers": [*message.get("headers", ()), (POSITION, position)]}
        await send(message)

    return sending


async def _unavailable(scope: Scope, send: Send, message: str) -> None:
    response = error_response(scope, 503, "UNAVAILABLE", message, headers={"Retry-After": "1"})

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, nothing, send)


class ForwardingMiddleware:
    """Between ``EdgeMiddleware`` (request id, access log) and the rate limit. Does nothing
    unless ``app.state.forwarder`` is set (a node of a cluster)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        forwarder: Forwarder | None = getattr(scope["app"].state, "forwarder", None)
        if scope["type"] != "http" or forwarder is None:
            await self.app(scope, receive, send)
            return
        hop = next((v for k, v in scope["headers"] if k == FORWARDED), None)
        if hop is not None:
            if forwarder.verified(hop, request_id(scope)):
                client = next((v for k, v in scope["headers"] if k == CLIENT), None)
                if client:
                    scope["client"] = (client.decode("latin-1"), 0)
                region = next((v for k, v in scope["headers"] if k == REGION), b"").decode("latin-1")
                replicas: Replicas | None = getattr(scope["app"].state, "regions", None)
                if region and replicas is not None:
                    send = _with_position(send, replicas, region)
            await self.app(scope, receive, send)  # already forwarded once: answered here, whatever it is
            return

        chunks: list[bytes] = []
        more = True
        marked = False

        async def recording_receive() -> Message:
            nonlocal more
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            return message

        async def marked_send(message: Message) -> None:
            nonlocal marked
            if message["type"] == "http.response.start" and FORWARD_KEY in scope:
                marked = True
            if not marked:
                await send(message)

        await self.app(scope, recording_receive, marked_send)
        if not marked:
            return
        while more:  # the part of the body the app did not read
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        await forwarder.forward(scope, scope[FORWARD_KEY], b"".join(chunks), send)
