"""Unit tests for server.live.topics (no network): which topic names a subscriber may ask for."""

from __future__ import annotations

import pytest

from server.http import ids
from server.live.topics import BadTopic, parse_topic


def test_a_clinic_topic_takes_every_clinic_id_the_server_gives_out() -> None:
    """Registered clinics get base64url ids, '_' included: a clinic AB-c_3gbGu4K could not be watched
    (NOT_FOUND 'no such topic'), so its page and screens never went live."""
    for ident in ("AB-c1", "AB-c_3gbGu4K", "AB-c-a_b9"):
        name = parse_topic(f"clinic:{ident}")
        assert (name.ident, name.region, name.kind) == (ident, "AB", "clinic")
    for _ in range(300):
        clinic = ids.clinic_id("AB")
        assert parse_topic(f"clinic:{clinic}").ident == clinic
    for bad in ("clinic:AB-c1 x", "clinic:AB-c1/..", "clinic:XX-c1", "clinic:AB-cå", "clinic:", "region:XX"):
        with pytest.raises(BadTopic):
            parse_topic(bad)
