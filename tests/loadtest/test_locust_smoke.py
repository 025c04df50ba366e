"""Integration: a bounded Locust run against a real server passes its invariant check.

The test starts a real ``tandtid serve --seed`` (uvicorn, the demo catalogue, a FileJournal in a
temp dir) on a free port, then runs ``python -m loadtest.run --host …`` in its own process (Locust
monkey-patches the standard library for gevent, which must not happen inside pytest) with ten
users for a few seconds: every user class runs, bookings happen, no slot is sold twice, and the
server holds exactly the bookings the users were told succeeded. So the scenarios cannot rot.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest.invariants import Ledger, check, double_bookings
from tests.support import free_port
from tests.support.served import ServedProcess

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 240.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp_path = tmp_path_factory.mktemp("loadtest-server")
    # Every simulated user comes from 127.0.0.1: the per-IP rate limit would throttle the test itself.
    served = ServedProcess(
        tmp_path,
        "--seed",
        "--scale",
        "demo",
        "--log-level",
        "warning",
        env={"TANDTID_RATE_PER_S": "0", "TANDTID_REDIS_URL": ""},
    )
    try:
        served.start(ready_timeout=READY_TIMEOUT_S)
        yield served.url, tmp_path
    finally:
        served.stop()


def run_load(url: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.run",
            "--host",
            url,
            "--seconds",
            "8",
            "--users",
            "10",
            "--spawn-rate",
            "10",
            "--stop-timeout",
            "10",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    result = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, result, done.stderr


def test_a_short_locust_run_keeps_every_booking_straight(server: tuple[str, Path]) -> None:
    url, _ = server
    code, result, stderr = run_load(url)
    assert result, stderr[-4000:]
    invariant = result["invariant"]
    assert invariant["ok"], invariant
    assert code == 0
    assert invariant["double_bookings"] == [] and invariant["missing"] == [] and invariant["unexpected"] == []
    assert invariant["confirmed"] > 0  # bookings happened
    assert invariant["server_booked"] == invariant["expected_booked"]
    assert set(result["user_classes"]) == {"PatientUser", "KioskUser", "ClinicSystemUser", "FlashCrowd"}
    assert all(n >= 1 for n in result["user_classes"].values()), result["user_classes"]
    assert result["clinic_keys"] == 3

    by_name = {(r["type"], r["name"]): r for r in result["requests"]}
    # diff delivery latency is in Locust's own statistics
    assert by_name[("WS", "diff clinic")]["requests"] > 0
    assert by_name[("WS", "snapshot region")]["requests"] > 0
    patients = result["user_classes"]["PatientUser"] + result["user_classes"]["FlashCrowd"]
    assert by_name[("POST", "/api/auth/register")]["requests"] == patients
    # expected race outcomes (409 SLOT_TAKEN, 410 HOLD_EXPIRED) are not failures; nothing else failed
    assert result["total"]["failures"] == 0, result["errors"]


def test_a_bare_locustfile_run_needs_no_setting_and_says_what_it_did(server: tuple[str, Path]) -> None:
    url, _ = server
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDTID_LT_")}
    locust = Path(sys.executable).with_name("locust")
    command = [str(locust), "-f", "loadtest/locustfile.py", "--headless", "-u", "8", "-r", "8", "-t", "5s"]
    done = subprocess.run(
        [*command, "--host", url], cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert "clinic keys created through the admin API for " in done.stderr
    assert '"ok": true' in done.stderr  # the invariant check signed in with the same defaults
    assert done.returncode == 0, done.stderr[-4000:]


def test_the_check_fails_on_a_booking_the_server_does_not_hold(server: tuple[str, Path]) -> None:
    url, _ = server
    clinic = httpx.get(f"{url}/api/clinics", params={"region": "AB", "limit": 1}).json()[0]["id"]
    ledger = Ledger()
    ledger.patient("u-nobody")
    # a day with no bookings, inside the horizon the server answers for
    start = (dt.date.today() + dt.timedelta(days=60)).isoformat() + "T09:00:00+01:00"
    ledger.booked({"id": "AB-bnever", "clinic": clinic, "start": start})
    report = check(url, ledger, admin_email="admin@demo.tandtid.se", admin_password="tandtid-demo")
    assert not report.ok
    assert report.missing == ["AB-bnever"] and report.unexpected == [] and report.error == ""


def test_the_check_fails_without_a_server() -> None:
    report = check(f"http://127.0.0.1:{free_port()}", Ledger(), admin_email="a@b.se", admin_password="x")
    assert not report.ok and report.error


def booking(booking_id: str, resource: str, start: str, end: str, status: str = "booked") -> dict[str, Any]:
    return {"id": booking_id, "resource": resource, "start": start, "end": end, "status": status}


def test_overlapping_booked_times_on_one_resource_are_double_bookings() -> None:
    at = "2030-01-07T{}:00+01:00".format
    assert double_bookings(
        [
            booking("a", "r1", at("09:00"), at("10:00")),
            booking("b", "r1", at("09:45"), at("10:15")),  # overlaps a
            booking("c", "r1", at("10:15"), at("10:30")),  # touches b: fine
            booking("d", "r2", at("09:00"), at("10:00")),  # another resource
            booking("e", "r1", at("10:15"), at("10:45"), "cancelled"),  # cancelled: does not count
        ]
    ) == [("a", "b")]
