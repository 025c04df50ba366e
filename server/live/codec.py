"""Wire encodings of the live protocol: JSON text frames (default) or msgpack binary frames.

The hub encodes each outgoing message ONCE per encoding in use and queues the very same
``str``/``bytes`` object to every subscriber, so encoding never scales with subscribers.
Client messages may arrive as JSON text or (on a msgpack connection) msgpack bytes;
``decode_client`` turns either into a dict or raises ``MalformedMessage``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgpack
import orjson

from engine.errors import TandtidError


class Encoding(StrEnum):
    JSON = "json"
    MSGPACK = "msgpack"


class MalformedMessage(TandtidError):
    """A client frame that is not a JSON (or msgpack) object."""


Frame = str | bytes  # str: a text frame (JSON); bytes: a binary frame (msgpack)


def encoding_from_query(value: str | None) -> Encoding:
    """``?encoding=`` -> Encoding; anything but "msgpack" means JSON."""
    return Encoding.MSGPACK if value == Encoding.MSGPACK else Encoding.JSON


def encode(message: dict[str, Any], encoding: Encoding) -> Frame:
    if encoding is Encoding.MSGPACK:
        packed: bytes = msgpack.packb(message, use_bin_type=True)
        return packed
    return orjson.dumps(message).decode()


def wire_frame(frame: Frame) -> bytes:
    """``frame`` as one complete, unmasked server WebSocket frame (FIN; text for str, binary
    for bytes), ready to be written to a socket as is -- built once, shared by every subscriber."""
    if isinstance(frame, str):
        payload, first = frame.encode(), 0x81
    else:
        payload, first = frame, 0x82
    n = len(payload)
    if n < 126:
        head = bytes((first, n))
    elif n < 1 << 16:
        head = bytes((first, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 127)) + n.to_bytes(8, "big")
    return head + payload


def decode_client(raw: str | bytes) -> dict[str, Any]:
    """A client message as a dict. JSON text, or msgpack/JSON bytes. Raises MalformedMessage."""
    try:
        if isinstance(raw, bytes):
            try:
                value = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
                value = orjson.loads(raw)
        else:
            value = orjson.loads(raw)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise MalformedMessage("not a JSON object") from exc
    if not isinstance(value, dict):
        raise MalformedMessage("expected a JSON object")
    return value
