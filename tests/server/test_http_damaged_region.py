"""Integration test (real uvicorn, real FileJournal): a damaged journal stops its region
only. The others keep serving, /ready says "degraded" and names the region, /metrics shows
its lifecycle, and the damaged bytes stay where they were."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server.conftest import bearer
from tests.support.catalog import FIRST_DATE
from tests.support.live_server import LiveServer


async def test_a_damaged_region_stops_alone_and_is_reported(tmp_path: Path) -> None:
    first = LiveServer(tmp_path).start()
    first.stop()
    log = tmp_path / "journal" / "AB.log"  # where tandtid serve --data keeps it
    data = bytearray(log.read_bytes())
    data[-2] ^= 0x20  # inside AB's last complete frame: damage, not a torn write
    log.write_bytes(bytes(data))

    second = LiveServer(tmp_path, catalog=False).start()
    try:
        _, token = second.user()
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
            ready = await client.get("/ready")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["status"] == "degraded" and body["ready"] is False
            assert list(body["regions_failed"]) == ["AB"]
            assert body["regions_failed"]["AB"]["lifecycle"] == "failed"
            assert "checksum" in body["regions_failed"]["AB"]["why"]
            metrics = (await client.get("/metrics")).text
            assert 'tandtid_region_lifecycle{region="AB",tandtid_region_lifecycle="failed"} 1.0' in metrics
            assert 'tandtid_region_lifecycle{region="M",tandtid_region_lifecycle="ready"} 1.0' in metrics

            assert (await client.get("/api/clinics/AB-c1")).status_code == 503
            assert (await client.get("/api/clinics/M-c1")).status_code == 200
            start = f"{FIRST_DATE.isoformat()}T09:00:00+01:00"
            r = await client.post(
                "/api/bookings",
                headers=bearer(token),
                json={"clinic": "M-c1", "resource": "M-c1-r1", "service": "checkup", "start": start},
            )
            assert r.status_code == 201, r.text
            r = await client.post(
                "/api/bookings",
                headers=bearer(token),
                json={"clinic": "AB-c1", "resource": "AB-c1-r1", "service": "checkup", "start": start},
            )
            assert r.status_code == 503, r.text
            # the patient's bookings across regions: the others' are shown, the missing region named
            mine = await client.get("/api/bookings", headers=bearer(token))
            assert mine.status_code == 200, mine.text
            assert [b["clinic"] for b in mine.json()["bookings"]] == ["M-c1"]
            assert mine.json()["missing_regions"] == ["AB"]
            for path, key in (("/api/holds", "holds"), ("/api/waitlist", "entries")):
                listed = await client.get(path, headers=bearer(token))
                assert listed.status_code == 200, listed.text
                assert listed.json() == {key: [], "missing_regions": ["AB"]}
    finally:
        second.stop()
    assert log.read_bytes() == bytes(data)  # nothing cut, nothing overwritten
