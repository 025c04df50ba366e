"""Unit tests: engine.calendar — wall-clock cells, epochs, DST days (no network)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from engine.calendar import (
    TZ,
    cell_epoch,
    cell_start,
    cells_per_day,
    date_of,
    day_of,
    day_of_epoch,
    earliest_epoch,
    iso,
    iso_weekday,
    locate,
    nonexistent_cells,
)

SPRING = day_of(date(2027, 3, 28))  # last Sunday of March 2027: 02:00 -> 03:00
AUTUMN = day_of(date(2026, 10, 25))  # last Sunday of October 2026: 03:00 -> 02:00
PLAIN = day_of(date(2026, 11, 23))


def test_day_round_trip() -> None:
    assert date_of(day_of(date(2026, 11, 23))) == date(2026, 11, 23)
    assert cells_per_day(15) == 96


def test_plain_day_epoch_and_iso() -> None:
    assert cell_epoch(PLAIN, 36, 15) == int(datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp())
    assert iso(PLAIN, 36, 15) == "2026-11-23T09:00:00+01:00"
    assert cell_start(PLAIN, 36, 15) == datetime(2026, 11, 23, 9, 0, tzinfo=TZ)


def test_spring_forward_day() -> None:
    assert nonexistent_cells(SPRING, 15) == frozenset({8, 9, 10, 11})
    assert iso(SPRING, 36, 15) == "2027-03-28T09:00:00+02:00"
    assert cell_epoch(SPRING, 36, 15) == int(datetime(2027, 3, 28, 7, 0, tzinfo=UTC).timestamp())
    assert iso(SPRING, 7, 15) == "2027-03-28T01:45:00+01:00"
    assert iso(SPRING, 12, 15) == "2027-03-28T03:00:00+02:00"
    # 01:45 CET and 03:00 CEST are 15 real minutes apart
    assert cell_epoch(SPRING, 12, 15) - cell_epoch(SPRING, 7, 15) == 15 * 60
    for c in (8, 9, 10, 11):
        with pytest.raises(ValueError, match="does not exist"):
            cell_epoch(SPRING, c, 15)
        with pytest.raises(ValueError):
            iso(SPRING, c, 15)
        assert earliest_epoch(SPRING, c, 15) == cell_epoch(SPRING, 12, 15)


def test_fall_back_day() -> None:
    assert nonexistent_cells(AUTUMN, 15) == frozenset()
    assert iso(AUTUMN, 36, 15) == "2026-10-25T09:00:00+01:00"
    assert cell_epoch(AUTUMN, 36, 15) == int(datetime(2026, 10, 25, 8, 0, tzinfo=UTC).timestamp())
    # 02:00 means its first occurrence (summer time); 03:00 is two real hours later
    assert iso(AUTUMN, 8, 15) == "2026-10-25T02:00:00+02:00"
    assert cell_epoch(AUTUMN, 12, 15) - cell_epoch(AUTUMN, 8, 15) == 2 * 3600


def test_locate_round_trips_every_cell_of_dst_days() -> None:
    for day in (SPRING, AUTUMN, PLAIN):
        for c in range(96):
            if c in nonexistent_cells(day, 15):
                continue
            assert locate(cell_start(day, c, 15), 15) == (day, c)
            utc = cell_start(day, c, 15).astimezone(UTC)
            assert locate(utc, 15) == (day, c)


def test_locate_refusals() -> None:
    with pytest.raises(ValueError, match="naive"):
        locate(datetime(2026, 11, 23, 9, 0), 15)
    with pytest.raises(ValueError, match="boundary"):
        locate(datetime(2026, 11, 23, 9, 5, tzinfo=TZ), 15)
    with pytest.raises(ValueError, match="boundary"):
        locate(datetime(2026, 11, 23, 9, 0, 30, tzinfo=TZ), 15)
    # the second 02:00 of the autumn day (winter time) is not a cell start
    second = datetime(2026, 10, 25, 2, 0, tzinfo=TZ, fold=1)
    assert second.utcoffset() == timedelta(hours=1)
    with pytest.raises(ValueError, match="repeated"):
        locate(second, 15)


def test_day_of_epoch_is_local() -> None:
    # 23:30 UTC on the 22nd is 00:30 on the 23rd in Stockholm
    assert day_of_epoch(int(datetime(2026, 11, 22, 23, 30, tzinfo=UTC).timestamp())) == PLAIN
    assert day_of_epoch(cell_epoch(PLAIN, 95, 15)) == PLAIN


def test_other_cell_sizes() -> None:
    assert nonexistent_cells(SPRING, 30) == frozenset({4, 5})
    assert iso(PLAIN, 18, 30) == "2026-11-23T09:00:00+01:00"
    assert locate(datetime(2026, 11, 23, 9, 30, tzinfo=TZ), 30) == (PLAIN, 19)


def test_iso_weekday_matches_dates() -> None:
    for d in (date(2026, 3, 29), date(2026, 12, 7), date(1, 1, 1), date(2024, 2, 29)):
        assert iso_weekday(day_of(d)) == d.isoweekday()
