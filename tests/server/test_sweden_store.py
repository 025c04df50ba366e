"""Integration (``TANDTID_TEST_SWEDEN=1``, as ``make test`` sets): a real ``tandtid serve`` on all of Sweden with
30% of the open times booked (the session's ``sweden_data``): it comes up from the seeded
snapshots, the map of Stockholm has full, nearly full and free clinics, and search answers at
its limit with each clinic's first free time."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import httpx

from tests.support.served import ServedProcess


async def test_all_of_sweden_serves_a_realistic_map(sweden_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(sweden_data, data)
    server = ServedProcess(data).start(ready_timeout=600)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            regions = (await client.get(f"{server.url}/api/regions")).json()
            assert sum(r["clinics"] for r in regions) == 4430
            tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
            summary = (
                await client.get(f"{server.url}/api/regions/AB/summary", params={"from": tomorrow, "days": 7})
            ).json()
            week = {clinic: sum(days) for clinic, days in summary["clinics"].items()}
            assert len(week) > 500
            ranked = sorted(week.values())
            # a week out is mostly booked: some clinics have (nearly) nothing free, others plenty
            assert ranked[0] * 4 < ranked[-1]
            assert ranked[len(ranked) // 2] > 0
            found = (
                await client.get(
                    f"{server.url}/api/clinics", params={"region": "AB", "service": "checkup", "limit": 20}
                )
            ).json()
            assert len(found) == 20
            assert all(row["next_free"] for row in found)
            starts = [row["next_free"] for row in found]
            assert starts == sorted(starts)
    finally:
        server.stop()
