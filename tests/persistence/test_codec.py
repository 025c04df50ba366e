"""Unit tests for persistence.codec (no I/O)."""

from __future__ import annotations

import pytest

from persistence.codec import CodecError, pack_events, pack_snapshot, unpack_events, unpack_snapshot


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
