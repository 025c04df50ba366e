"""Unit tests for persistence.codec (no I/O)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from engine.commands import Book
from engine.state import RegionState
from persistence.codec import CodecError, pack_events, pack_snapshot, unpack_events, unpack_snapshot
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands


def test_events_roundtrip() -> None:
    records = [["Booked", "AB-1", "p-17", 3, {"k": [1, 2]}, b"\x00bin"], ["HoldExpired", "h-1"]]
    assert unpack_events(pack_events(records)) == records
    assert unpack_events(pack_events([])) == []


def test_format_1_payloads_read_as_version_1_records() -> None:
    import msgpack

    before_versions = msgpack.packb([["HoldExpired", "AB-h1"], ["DaysOpened", "AB-c1-r1", 20500, 5]])
    assert unpack_events(before_versions) == [
        ["HoldExpired", 1, "AB-h1"],
        ["DaysOpened", 1, "AB-c1-r1", 20500, 5],
    ]
    assert unpack_events(msgpack.packb([])) == []


def test_unpack_events_refuses_foreign_bytes() -> None:
    with pytest.raises(CodecError):
        unpack_events(b"\xc1")
    with pytest.raises(CodecError):
        unpack_events(pack_snapshot({"not": "events"}))
    with pytest.raises(CodecError):
        unpack_events(pack_events([["a"]]) + b"\x01")
    with pytest.raises(CodecError):
        unpack_events(b"\x92\x09\x90")  # [9, []]: a format this code does not know


def test_snapshot_is_deterministic_for_the_same_dict() -> None:
    a = {"rows": {"r2": [1, 2], "r1": b"\x01"}, "seq": 4, "clinics": [{"b": 1, "a": 2}]}
    b = {"seq": 4, "clinics": [{"a": 2, "b": 1}], "rows": {"r1": b"\x01", "r2": [1, 2]}}
    assert pack_snapshot(a) == pack_snapshot(b)
    assert unpack_snapshot(pack_snapshot(a)) == a


def test_snapshot_with_int_keys() -> None:
    data = {"days": {3: "x", 1: "y"}}
    assert unpack_snapshot(pack_snapshot(data)) == data


def test_unpack_snapshot_refuses_foreign_bytes() -> None:
    with pytest.raises(CodecError):
        unpack_snapshot(pack_events([["x"]]))
    with pytest.raises(CodecError):
        unpack_snapshot(b"")


def _canonical(value: Any) -> Any:
    """The reference: keys sorted at every level (mixed key types by type name, then repr)."""
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value, key=lambda k: (type(k).__name__, repr(k)))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def test_a_snapshot_packed_piece_by_piece_is_packb_of_its_canonical_form() -> None:
    """Byte for byte what one msgpack.packb of the key-sorted dict gives, for a real region's
    snapshot (nested maps, lists of lists, int and str keys, bytes, None, bools, floats)."""
    state = RegionState("AB")
    for command in setup_commands("AB", clinics=3, resources=2, days=3):
        state.apply(command, NOW)
    state.apply(Book("AB-b1", "p1", "AB-c1-r1", "checkup", FIRST_DAY, CELL_0900), NOW)
    odd = {"z": [1, (2, b"\x00"), {3: None, "a": [True, 1.5]}], 7: [], "m": {}, "": [[], [[]]]}
    for data in (state.to_snapshot(), odd, {}):
        assert pack_snapshot(data) == msgpack.packb(_canonical(data), use_bin_type=True)
