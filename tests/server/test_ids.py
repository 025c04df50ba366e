"""Unit: booking, hold and wait-list ids carry their region and never repeat."""

from __future__ import annotations

import re

from server.http import ids


def test_ids_carry_region_and_kind_with_the_old_random_length() -> None:
    assert re.fullmatch(r"AB-b[A-Za-z0-9_-]{14}", ids.booking_id("AB"))
    assert re.fullmatch(r"O-h[A-Za-z0-9_-]{11}", ids.hold_id("O"))
    assert re.fullmatch(r"M-w[A-Za-z0-9_-]{11}", ids.waitlist_id("M"))
    assert re.fullmatch(r"[0-9a-f]{16}", ids.request_id())


def test_ids_do_not_repeat_across_many_pool_refills() -> None:
    made = [ids.booking_id("AB") for _ in range(50 * ids.POOL_BYTES // 10)]
    assert len(set(made)) == len(made)
