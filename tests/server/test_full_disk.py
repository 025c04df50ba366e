"""A full disk (integration: the real ``tandtid serve`` with its data directory on a small tmpfs).

Every journal append fails with ENOSPC once the disk is full: bookings must get a clear 503 (never
an acknowledgement without durability), ``/ready`` must say so (503, ``journal_writable`` false,
the ``journal`` part in ``degraded`` naming ENOSPC), ``/metrics`` too; once space is freed the
server sees it (a probe write behind ``/ready``) and books again. Needs ``mount -t tmpfs`` (root,
as CI runs): skipped where mounting is not allowed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.served import ServedProcess
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.slow

DISK_BYTES = 48 * 1024 * 1024
PATIENTS = 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses (ENOSPC); returns it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = bytes(64 * 1024)
        while True:
            try:
                os.write(fd, block)
            except OSError:
                break
        while True:  # the last partial block
            try:
                if os.write(fd, b"\0") == 0:
                    break
            except OSError:
                break
    finally:
        os.close(fd)
    return filler


def register(client: httpx.Client, n: int) -> dict[str, str]:
    r = client.post(
        "/api/auth/register",
        json={"email": f"disk{n}@example.test", "password": "disk-password", "name": f"Disk {n}"},
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def book(client: httpx.Client, headers: dict[str, str], clinic: str, slot: dict[str, str]) -> httpx.Response:
    return client.post(
        "/api/bookings",
        headers=headers,
        json={"clinic": clinic, "resource": slot["resource"], "service": "checkup", "start": slot["start"]},
    )


def test_a_full_disk_refuses_bookings_with_503_and_ready_says_why(small_disk: Path) -> None:
    served = ServedProcess(small_disk, "--seed", env={"TANDTID_RATE_PER_S": "100000"}).start()
    try:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            patients = [register(client, n) for n in range(PATIENTS)]  # at most 3 bookings each per clinic
            clinic = client.get("/api/clinics", params={"service": "checkup", "has_free": "true"}).json()[0][
                "id"
            ]
            avail = client.get(
                f"/api/clinics/{clinic}/availability", params={"service": "checkup", "days": 31}
            )
            # on the hour and half hour: no two of these 30-minute check-ups overlap
            slots = [
                t for day in avail.json()["days"] for t in day["times"] if t["start"][14:16] in ("00", "30")
            ]
            assert len(slots) >= 60
            assert book(client, patients[0], clinic, slots[0]).status_code == 201

            filler = fill(small_disk)
            # A frame may still fit in a page the files already have: those appends are durable
            # and acknowledged. The first one that needs a new page fails: 503 from then on.
            acked = [slots[0]["start"]]
            refused = []
            for n, slot in enumerate(slots[1:60], start=1):
                r = book(client, patients[n % PATIENTS], clinic, slot)
                if r.status_code == 201:
                    assert not refused, "booked after a refusal while the disk is still full"
                    acked.append(slot["start"])
                    continue
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "UNAVAILABLE"
                assert "journal" in r.json()["error"]["message"]
                refused.append(slot)
                if len(refused) == 3:  # the first failed its append; the next ones are refused at once
                    break
            assert len(refused) == 3, f"{len(acked)} bookings fit on the full disk"
            mine = [
                b["start"]
                for p in patients
                for b in client.get("/api/bookings", headers=p).json()["bookings"]
            ]
            assert sorted(mine) == sorted(acked)  # nothing unacknowledged is visible

            ready = client.get("/ready")
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["journal_writable"] is False and body["status"] == "unavailable"
            assert any(d["part"] == "journal" and "ENOSPC" in str(d["why"]) for d in body["degraded"]), body
            assert "tandtid_journal_writable 0.0" in client.get("/metrics").text

            filler.unlink()
            eventually_sync(
                lambda: client.get("/ready").status_code == 200, what="/ready after freeing space"
            )
            assert client.get("/ready").json()["journal_writable"] is True
            assert "tandtid_journal_writable 1.0" in client.get("/metrics").text
            r = book(client, patients[-1], clinic, refused[0])
            assert r.status_code == 201, r.text
    finally:
        served.stop()
