"""``tandtid book`` (integration: the real ``tandtid serve`` with the demo seed, the command as a subprocess): the
earliest time it books lies past the clinic's cancellation notice, and it says it passed over earlier times; with
``--late`` it may book inside the notice. Times are derived from ``cancel_notice_hours`` and the server's clock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.support.served import ServedProcess

DEMO_PATIENT = ["--email", "patient@demo.tandtid.se", "--password", "tandtid-demo"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    system = ServedProcess(tmp_path_factory.mktemp("book") / "data", "--seed").start()
    try:
        yield system
    finally:
        system.stop()


def book(served: ServedProcess, clinic: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "server.cli", "book", "--url", served.url, "--clinic", clinic]
    return subprocess.run(
        [*command, *DEMO_PATIENT, *extra], capture_output=True, text=True, timeout=60, cwd=Path.cwd()
    )


def test_book_passes_over_times_inside_the_cancellation_notice(served: ServedProcess) -> None:
    clinic = "AB-c2"
    notice_s = httpx.get(f"{served.url}/api/clinics/{clinic}").json()["cancel_notice_hours"] * 3600
    done = book(served, clinic)
    assert done.returncode == 0, done.stderr
    start = datetime.fromisoformat(json.loads(done.stdout)["start"]).timestamp()
    assert start >= time.time() + notice_s - 5
    days = httpx.get(
        f"{served.url}/api/clinics/{clinic}/availability", params={"service": "checkup", "days": 14}
    ).json()["days"]
    inside = [t for d in days for t in d["times"] if datetime.fromisoformat(t["start"]).timestamp() < start]
    if inside:  # earlier free times existed (inside the notice): the command said why it passed them over
        assert "cancellation notice" in done.stderr


def test_book_late_takes_the_earliest_time(served: ServedProcess) -> None:
    clinic = "AB-c3"
    days = httpx.get(
        f"{served.url}/api/clinics/{clinic}/availability", params={"service": "checkup", "days": 14}
    ).json()["days"]
    earliest = next(t["start"] for d in days for t in d["times"])
    done = book(served, clinic, "--late")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["start"] == earliest
