"""Bytes for the journal: event batches and snapshots as msgpack.

``pack_events`` takes the records ``engine.events.to_record`` produces (plain lists of
msgpack-native values) and returns one payload for ``Journal.append``; ``unpack_events``
reverses it. Payload formats (all readable, forever)::

    format 1  [record, ...], each [KIND, *fields]            before event versions
    format 2  [2, [record, ...]], each [KIND, VERSION, *fields]   written now

Format 1 records come back as version 1 (``[KIND, 1, *fields]``), so callers only ever see
versioned records; ``engine.events.from_record`` upcasts old versions. ``pack_snapshot`` is deterministic: the same dict always gives the same
bytes (keys are sorted recursively), so snapshots can be compared and checksummed.
"""

from __future__ import annotations

from typing import Any

import msgpack


class CodecError(ValueError):
    """The bytes are not a payload this codec wrote."""


EVENTS_FORMAT = 2


def pack_events(records: list[list[Any]]) -> bytes:
    """One journal payload (format 2) for one actor batch of versioned event records."""
    return msgpack.packb([EVENTS_FORMAT, records], use_bin_type=True)


def unpack_events(data: bytes) -> list[list[Any]]:
    """The versioned event records of one journal payload of any format; raises CodecError
    on foreign bytes."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError(f"not an event batch: {exc.__class__.__name__}") from exc
    if not isinstance(value, list):
        raise CodecError("not an event batch: expected a list")
    if len(value) == 2 and value[0] == EVENTS_FORMAT and isinstance(value[1], list):
        records = value[1]
    elif all(isinstance(r, list) and r for r in value):  # format 1: records without versions
        return [[r[0], 1, *r[1:]] for r in value]
    else:
        raise CodecError("not an event batch: unknown format")
    if not all(isinstance(r, list) for r in records):
        raise CodecError("not an event batch: expected a list of records")
    return records


def _sort_key(key: Any) -> tuple[str, str]:
    # Mixed key types (int and str) must still sort deterministically.
    return (type(key).__name__, repr(key))


def pack_snapshot(data: dict[str, Any]) -> bytes:
    """Deterministic msgpack bytes of a snapshot dict (keys sorted at every level): the bytes
    ``msgpack.packb`` gives for the canonical form, packed piece by piece. A region's snapshot is
    up to ~100 MB and one ``packb`` holds the GIL for all of it (~120 ms for Stockholm), which
    stops the event loop though the packing runs in a worker thread; a piece holds it for its own
    size only (the largest is one of the booking store's columns, a few MB), then one join."""
    parts: list[bytes] = []
    _pack_canonical(data, msgpack.Packer(use_bin_type=True), parts)
    return b"".join(parts)


def _pack_canonical(value: Any, packer: msgpack.Packer, parts: list[bytes]) -> None:
    if isinstance(value, dict):
        parts.append(packer.pack_map_header(len(value)))
        for key in sorted(value, key=_sort_key):
            parts.append(packer.pack(key))
            _pack_canonical(value[key], packer, parts)
    elif isinstance(value, list | tuple):
        if any(isinstance(v, dict | list | tuple) for v in value):
            parts.append(packer.pack_array_header(len(value)))
            for v in value:
                _pack_canonical(v, packer, parts)
        else:  # scalars only: packed in one call, as packb would
            parts.append(packer.pack(value))
    else:
        parts.append(packer.pack(value))


def unpack_snapshot(data: bytes) -> dict[str, Any]:
    """The dict ``pack_snapshot`` packed; raises CodecError on foreign bytes."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError(f"not a snapshot: {exc.__class__.__name__}") from exc
    if not isinstance(value, dict):
        raise CodecError("not a snapshot: expected a map")
    return value
