"""Bytes for the journal: event batches and snapshots as msgpack.

``pack_events`` takes the records ``engine.events.to_record`` produces (plain lists of
msgpack-native values) and returns one payload for ``Journal.append``; ``unpack_events``
reverses it. ``pack_snapshot`` is deterministic: the same dict always gives the same
bytes (keys are sorted recursively), so snapshots can be compared and checksummed.
"""

from __future__ import annotations

from typing import Any

import msgpack


class CodecError(ValueError):
    """The bytes are not a payload this codec wrote."""


def pack_events(records: list[list[Any]]) -> bytes:
    """One journal payload for one actor batch of event records."""
    return msgpack.packb(records, use_bin_type=True)


def unpack_events(data: bytes) -> list[list[Any]]:
    """The event records of one journal payload; raises CodecError on foreign bytes."""
    try:
        records = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError(f"not an event batch: {exc.__class__.__name__}") from exc
    if not isinstance(records, list) or not all(isinstance(r, list) for r in records):
        raise CodecError("not an event batch: expected a list of records")
    return records


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value, key=_sort_key)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _sort_key(key: Any) -> tuple[str, str]:
    # Mixed key types (int and str) must still sort deterministically.
    return (type(key).__name__, repr(key))


def pack_snapshot(data: dict[str, Any]) -> bytes:
    """Deterministic msgpack bytes of a snapshot dict (keys sorted at every level)."""
    return msgpack.packb(_canonical(data), use_bin_type=True)


def unpack_snapshot(data: bytes) -> dict[str, Any]:
    """The dict ``pack_snapshot`` packed; raises CodecError on foreign bytes."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError(f"not a snapshot: {exc.__class__.__name__}") from exc
    if not isinstance(value, dict):
        raise CodecError("not a snapshot: expected a map")
    return value
