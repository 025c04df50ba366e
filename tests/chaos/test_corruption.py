"""Chaos (integration, real ``tandtid serve`` subprocesses): one flipped byte at a random
place in a random region's journal or snapshot, or a power loss (the region file loses every
frame since the server started, as if its unsynced pages never reached the disk) with one
flipped byte in one of that region's records of the group-commit log (``journal/commit.log``),
then a restart, over and over.

After each restart, every booking that ever got a 201 is either still there or listed by
``tandtid journal check`` as lost to that corruption (then ``tandtid journal repair`` cuts
it and the region serves again): never silently missing. The regions that were not hit
serve throughout. Bounded to ``ROUNDS`` restarts (about a minute); the seed is printed so
a failing run can be replayed with ``TANDTID_CHAOS_SEED``. (After a SIGKILL the commit log
of the group commit may put a damaged region frame back as it was: that is a repair too,
and the booking is then simply present.)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from persistence.commit_log import RECORD_HEADER
from persistence.file_journal import FRAME_HEADER
from tests.support import free_port
from tests.support.served import ServedProcess, tandtid

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("TANDTID_CHAOS_ROUNDS", "6"))
REGIONS_PER_ROUND = 4  # regions booked in per round
BOOKINGS_PER_REGION = 3
SERVER_ENV = {
    "TANDTID_RATE_PER_S": "100000",
    "TANDTID_RATE_BURST": "100000",
    "TANDTID_SNAPSHOT_EVERY_EVENTS": "5",  # snapshots (and .prev) come and go during the run
}


@dataclass
class Acked:
    booking_id: str
    region: str
    headers: dict[str, str]


class Chaos:
    def __init__(self, data: Path, rng: random.Random) -> None:
        self.data = data
        self.rng = rng
        self.port = free_port()
        self.server: ServedProcess | None = None
        self.acked: dict[str, Acked] = {}
        self.lost: set[str] = set()  # listed by `journal check` and cut by a repair
        self.patients: list[dict[str, str]] = []
        self.log: list[str] = []

    async def start(self, client: httpx.AsyncClient, *extra: str) -> dict[str, Any]:
        self.server = ServedProcess(self.data, "--log-level", "debug", *extra, env=SERVER_ENV, port=self.port)
        await asyncio.to_thread(self.server.start)
        ready: dict[str, Any] = (await client.get(f"{self.url}/ready")).json()
        return ready

    def kill(self) -> None:
        assert self.server is not None
        self.server.kill()
        self.server.stop()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def book_some(self, client: httpx.AsyncClient, avoid: set[str]) -> None:
        regions = [r["code"] for r in (await client.get(f"{self.url}/api/regions")).json()]
        candidates = [r for r in regions if r not in avoid]
        for region in self.rng.sample(candidates, min(REGIONS_PER_ROUND, len(candidates))):
            await self.book_in(client, region, BOOKINGS_PER_REGION)

    async def book_in(self, client: httpx.AsyncClient, region: str, count: int) -> int:
        clinics = (
            await client.get(
                f"{self.url}/api/clinics",
                params={"region": region, "service": "checkup", "has_free": "true", "limit": 5},
            )
        ).json()
        if not clinics:
            return 0
        clinic = self.rng.choice(clinics)["id"]
        avail = (
            await client.get(
                f"{self.url}/api/clinics/{clinic}/availability", params={"service": "checkup", "days": 31}
            )
        ).json()
        times = [t for day in avail["days"] for t in day["times"]]
        made = 0
        for t in self.rng.sample(times, min(count, len(times))):
            headers = self.rng.choice(self.patients)
            r = await client.post(
                f"{self.url}/api/bookings",
                headers=headers,
                json={"clinic": clinic, "resource": t["resource"], "service": "checkup", "start": t["start"]},
            )
            if r.status_code == 201:
                booking_id = r.json()["booking"]["id"]
                self.acked[booking_id] = Acked(booking_id, region, headers)
                made += 1
            else:
                assert r.status_code in (409, 422), r.text  # a neighbour took an overlapping time
        return made

    async def missing(
        self, client: httpx.AsyncClient, region: str | None = None, *, besides: Collection[str] = ()
    ) -> list[str]:
        """Acknowledged bookings (of ``region``, or of every region not in ``besides``) the server
        cannot find."""
        gone = []
        for item in self.acked.values():
            if item.booking_id in self.lost or item.region in besides:
                continue
            if region is not None and item.region != region:
                continue
            r = await client.get(f"{self.url}/api/bookings/{item.booking_id}", headers=item.headers)
            if r.status_code == 404:
                gone.append(item.booking_id)
            elif r.status_code != 200:  # not an answer about the booking: fails with the caller's context
                gone.append(f"{item.booking_id} (answered {r.status_code}, region {item.region})")
        return gone

    def corrupt_one_byte(self) -> tuple[str, Path, int, bytes]:
        """Flip one byte somewhere in a random booked region's journal or newest snapshot, or
        lose that region's unsynced frames and flip one byte of its commit-log records."""
        regions = sorted({a.region for a in self.acked.values() if a.booking_id not in self.lost})
        region = self.rng.choice(regions)
        files = [self.data / "journal" / f"{region}.log"]
        snapshot = self.data / "snapshots" / f"{region}.snap"
        if snapshot.exists():
            files.append(snapshot)
        records = commit_records(self.data / "journal" / "commit.log", region)
        if records:
            files.append(self.data / "journal" / "commit.log")
        target = self.rng.choice(files)
        before = target.read_bytes()
        if target.name == "commit.log":
            lost = self.lose_unsynced(region, min(position for _start, _end, position in records))
            start, end, _position = self.rng.choice(records)
            at = self.rng.randrange(start, end)
        else:
            lost, at = "", self.rng.randrange(len(before))
        damaged = bytearray(before)
        damaged[at] ^= 1 << self.rng.randrange(8)
        target.write_bytes(bytes(damaged))
        self.log.append(f"{lost}{target.name} byte {at} of {len(before)} (of {len(files)} files)")
        return region, target, at, before

    def lose_unsynced(self, region: str, first: int) -> str:
        """A power loss for ``region``: its file loses every frame from position ``first`` on
        (their records are all in the commit log, fsynced, unless the round was torn)."""
        log = self.data / "journal" / f"{region}.log"
        data, off = log.read_bytes(), 0
        while off + FRAME_HEADER.size <= len(data):
            _magic, _crc, length, position, _epoch = FRAME_HEADER.unpack_from(data, off)
            if position >= first:
                break
            off += FRAME_HEADER.size + length
        log.write_bytes(data[:off])
        return f"power loss: {region}.log cut from position {first} ({len(data) - off} bytes); "


def commit_records(path: Path, region: str) -> list[tuple[int, int, int]]:
    """(start, end, position) of ``region``'s records in a commit log."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    off, found = 0, []
    while off + RECORD_HEADER.size <= len(data):
        _magic, _crc, name, position, length = RECORD_HEADER.unpack_from(data, off)
        end = off + RECORD_HEADER.size + length
        if name.rstrip(b"\0").decode() == region and end <= len(data):
            found.append((off, end, position))
        off = end
    return found


def explained(booking_id: str, report: dict[str, Any], originals: dict[str, bytes]) -> bool:
    """Whether ``journal check`` told the operator about this booking: by id, or (for a frame
    or commit-log record whose checksum failed, where the flipped byte may sit inside the id)
    by listing the byte range that held it (in the file its ``source`` names)."""
    if any(booking_id in frame["booked"] for frame in report["lost"]):
        return True
    needle = booking_id.encode()
    for frame in report["lost"]:
        original = originals.get(frame["source"], b"")
        if not frame["intact"] and needle in original[frame["start"] : frame["end"]]:
            return True
    return False


async def test_one_flipped_byte_never_hides_an_acknowledged_booking(tmp_path: Path) -> None:
    seed = int(os.environ.get("TANDTID_CHAOS_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    chaos = Chaos(tmp_path / "data", rng)
    async with httpx.AsyncClient(timeout=60) as client:
        try:
            await chaos.start(client, "--seed")
            for n in range(8):
                r = await client.post(
                    f"{chaos.url}/api/auth/register",
                    json={
                        "email": f"chaos{n}@example.test",
                        "password": "chaos-password",
                        "name": f"Kaos {n}",
                    },
                )
                assert r.status_code == 201, r.text
                chaos.patients.append({"Authorization": f"Bearer {r.json()['token']}"})
            hit: set[str] = set()
            for round_ in range(ROUNDS):
                await chaos.book_some(client, avoid=hit)
                chaos.kill()
                region, target, at, original = chaos.corrupt_one_byte()
                context = f"seed {seed}, round {round_}, {region}: " + "; ".join(chaos.log)

                ready = await chaos.start(client)
                failed = ready["regions_failed"]
                # Only the region that was hit may stop; after a power loss also one whose file
                # ends just before a commit-log record whose region field the flip made unreadable
                # (it may be theirs): stopped, never silently short.
                others = [c for c in failed if c != region]
                if target.name == "commit.log":
                    others = [c for c in others if "commit log" not in failed[c]["why"]]
                assert others == [], context
                # every region still serving has all it acknowledged (a stopped one answers 503)
                assert await chaos.missing(client, besides={region, *failed}) == [], context
                if region not in failed:
                    # served (a torn-looking tail is never what one flipped byte makes; a damaged
                    # snapshot falls back; a damaged commit-log record the file holds loses
                    # nothing): then nothing of it may be missing either
                    assert await chaos.missing(client, region) == [], context
                    if target.suffix == ".snap":  # served from an older snapshot: and says so
                        assert "damaged" in " ".join(ready["journal_problems"].get(region, [])), context
                    continue
                # stopped: the other regions still take bookings while it is down
                assert ready["status"] == "degraded", context
                others_ok = sorted({a.region for a in chaos.acked.values()} - hit - set(failed))
                if others_ok:
                    assert await chaos.book_in(client, rng.choice(others_ok), 3) >= 1, context
                reports = {}
                for code in failed:
                    done = tandtid("journal", "check", "--data", str(chaos.data), "--region", code)
                    assert done.returncode == 1, context + done.stdout + done.stderr
                    reports[code] = json.loads(done.stdout)
                    assert reports[code]["status"] == "damaged", context
                chaos.kill()
                for code in failed:
                    repaired = tandtid("journal", "repair", "--data", str(chaos.data), "--region", code)
                    assert repaired.returncode == 0, context + repaired.stderr
                originals = {"journal": original if target.suffix == ".log" else b""}
                if target.name == "commit.log":
                    originals = {"commit.log": original}
                ready = await chaos.start(client)
                assert ready["status"] == "ready", context + json.dumps(ready)
                for code, report in reports.items():
                    gone = await chaos.missing(client, code)
                    unexplained = [b for b in gone if not explained(b, report, originals)]
                    assert unexplained == [], context + json.dumps(report)[:2000]
                    chaos.lost.update(gone)
                    hit.add(code)
            aside = chaos.data / "set-aside"
            kept = list(aside.iterdir()) if aside.exists() else []
            print(
                f"chaos seed {seed}: {ROUNDS} rounds; {'; '.join(chaos.log)}; lost and listed: "
                f"{len(chaos.lost)} of {len(chaos.acked)} acknowledged; set aside: {len(kept)} files"
            )
        finally:
            if chaos.server is not None:
                chaos.server.stop()
