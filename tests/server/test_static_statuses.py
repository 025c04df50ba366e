"""Unit tests: the browser pages know exactly the engine's booking statuses (reads static/js, no network)."""

from __future__ import annotations

import re
from pathlib import Path

from engine.records import BookingStatus

JS = Path(__file__).resolve().parents[2] / "static" / "js"


def test_booking_status_module_lists_the_engine_statuses() -> None:
    source = (JS / "booking-status.js").read_text()
    exported = dict(re.findall(r'export const (\w+) = "(\w+)";', source))
    assert exported == {s.name: s.value for s in BookingStatus}


def test_each_status_has_a_text_in_both_languages_and_no_other_status_does() -> None:
    keys = re.findall(r'"me\.status\.(\w+)":', (JS / "i18n.js").read_text())
    assert sorted(keys) == sorted([s.value for s in BookingStatus] * 2)  # sv and en
