"""Unit tests: OpenDays refuses days past the horizon it is given, changing nothing (no network)."""

from __future__ import annotations

import pytest
from slot_world import MONDAY, packed, world

from engine.commands import OpenDays
from engine.errors import RefusalCode, Refused
from engine.events import DaysOpened

R1 = "AB-c1-r1"


def test_open_days_refuses_past_the_horizon_and_changes_nothing() -> None:
    state, now = world()  # now: 00:00 on MONDAY
    state.take_changes()
    before = packed(state)
    for command in (
        OpenDays(R1, MONDAY + 401, 1, horizon_days=400),
        OpenDays(R1, MONDAY + 390, 20, horizon_days=400),  # starts inside, ends outside
        OpenDays(R1, 2_900_000, 90, horizon_days=400),  # near the year 9999
    ):
        with pytest.raises(Refused) as info:
            state.apply(command, now)
        assert info.value.code is RefusalCode.INVALID
        assert packed(state) == before and state.take_changes() == []
    assert state.apply(OpenDays(R1, MONDAY + 396, 5, horizon_days=400), now) == [
        DaysOpened(R1, MONDAY + 396, 5)
    ]
