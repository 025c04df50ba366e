"""Integration test: a real ``tandtid serve`` subprocess is SIGKILLed mid-life and started
again on the same data directory; every booking that got a 201 is still there (same id,
same time), and the server's output never contained the patients' names or e-mail addresses.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.served import ServedProcess

pytestmark = pytest.mark.slow


async def test_bookings_survive_sigkill_and_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServedProcess(data, "--seed", "--log-level", "debug")
    patients: list[tuple[dict[str, str], str, str]] = []
    booked: dict[str, dict[str, object]] = {}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.to_thread(first.start)
            clinics = (
                await client.get(
                    f"{first.url}/api/clinics", params={"service": "checkup", "has_free": "true", "limit": 5}
                )
            ).json()
            assert clinics, "the demo seed has free times"
            for n in range(12):
                name, email = f"Restartpatient Nummer{n}", f"restart.patient{n}@example.test"
                r = await client.post(
                    f"{first.url}/api/auth/register",
                    json={"email": email, "password": "hemligt-losen", "name": name},
                )
                assert r.status_code == 201, r.text
                patients.append(({"Authorization": f"Bearer {r.json()['token']}"}, name, email))
            # every patient books a different free time, all at once
            clinic = clinics[0]["id"]
            avail = (
                await client.get(
                    f"{first.url}/api/clinics/{clinic}/availability",
                    params={"service": "checkup", "days": 14},
                )
            ).json()
            times = [t for day in avail["days"] for t in day["times"]]
            chosen, used = [], set()
            for t in times:
                if (t["resource"], t["start"]) not in used and len(chosen) < len(patients):
                    chosen.append(t)
                    used.add((t["resource"], t["start"]))
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{first.url}/api/bookings",
                        headers=headers,
                        json={
                            "clinic": clinic,
                            "resource": t["resource"],
                            "service": "checkup",
                            "start": t["start"],
                        },
                    )
                    for (headers, _, _), t in zip(patients, chosen, strict=False)
                )
            )
            for (headers, _, _), r in zip(patients, responses, strict=False):
                if r.status_code == 201:
                    booked[r.json()["booking"]["id"]] = {"headers": headers, "booking": r.json()["booking"]}
                else:
                    assert r.status_code == 409, r.text  # a 30-minute checkup may overlap a neighbour's
            assert len(booked) >= 3
        first.kill()
        assert first.process is not None and first.process.returncode == -signal.SIGKILL

        second = ServedProcess(data, "--log-level", "debug", port=first.port)
        try:
            await asyncio.to_thread(second.start)
            async with httpx.AsyncClient(timeout=30) as client:
                for booking_id, item in booked.items():
                    r = await client.get(f"{second.url}/api/bookings/{booking_id}", headers=item["headers"])  # type: ignore[arg-type]
                    assert r.status_code == 200, r.text
                    assert r.json()["booking"] == item["booking"]
                # the restarted server still refuses the taken times
                any_item = next(iter(booked.values()))
                b = any_item["booking"]
                r = await client.post(
                    f"{second.url}/api/bookings",
                    headers=patients[-1][0],
                    json={
                        "clinic": b["clinic"],
                        "resource": b["resource"],
                        "service": "checkup",  # type: ignore[index]
                        "start": b["start"],
                    },
                )  # type: ignore[index]
                assert r.status_code == 409 and r.json()["error"]["code"] == "SLOT_TAKEN"
        finally:
            second.stop()
        output = second.output()  # both runs: they share the port, so the log file
        assert "recovered" in output and "/api/bookings" in output  # the log was captured (debug level)
        for _, name, email in patients:
            assert name not in output and email not in output
            assert "hemligt" not in output
    finally:
        first.stop()
