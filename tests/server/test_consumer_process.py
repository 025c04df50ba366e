"""The journal consumers in their own process (``tandtid serve``'s default, ``server.consumers.process``),
against the real server with the demo seed: a booking's e-mail is written by the consumers' process,
``/metrics`` carries that process's figures, a killed consumers' process is reported on ``/ready``
and started again with nothing lost or told twice, a hung one (SIGSTOP) is found by its pings,
killed and replaced, and it ends with a killed server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from server.consumers.notify.outbox import Outbox
from server.consumers.process import merged_exposition
from tests.support.served import ServedProcess
from tests.support.waiting import eventually_sync

DEMO_PATIENT = ["--email", "patient@demo.tandtid.se", "--password", "tandtid-demo"]
WAIT_S = 60.0  # a bound for "happens at all"; never used to assert speed


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedProcess]:
    system = ServedProcess(tmp_path / "data", "--seed").start()
    try:
        yield system
    finally:
        system.stop()


def consumer_pids(served: ServedProcess) -> list[int]:
    """The server's children running ``python -m server.consumers``."""
    assert served.process is not None
    pids: list[int] = []
    for task in Path(f"/proc/{served.process.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"server.consumers" in command:
                pids.append(int(child))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def book(served: ServedProcess, clinic: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "book",
            "--url",
            served.url,
            "--clinic",
            clinic,
            "--late",
            *DEMO_PATIENT,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def booked_mails(served: ServedProcess) -> list[str]:
    outbox = Outbox(served.data_dir / "outbox")
    try:
        return [name for name in outbox.names() if name.endswith("_booked.eml")]
    finally:
        outbox.close()


def why_consumers_down(served: ServedProcess) -> str:
    """Wait until /ready names the consumers' process as down (polled often: it is started again
    within a second); why it says so."""
    seen: list[dict[str, object]] = []

    def reported() -> bool:
        body = httpx.get(f"{served.url}/ready").json()
        seen.extend(body["degraded"])
        return any(part["part"] == "consumers" for part in body["degraded"])

    eventually_sync(reported, timeout=WAIT_S, interval=0.02, what="/ready naming the consumers' process")
    return str(next(part["why"] for part in seen if part["part"] == "consumers"))


def wait_replaced(served: ServedProcess, first: int) -> None:
    eventually_sync(
        lambda: (
            consumer_pids(served) not in ([], [first])
            and httpx.get(f"{served.url}/ready").json()["degraded"] == []
        ),
        timeout=WAIT_S,
        what="a new consumers' process, /ready no longer degraded",
    )


def test_a_booking_is_mailed_by_the_consumers_own_process(served: ServedProcess) -> None:
    (child,) = consumer_pids(served)
    assert child != served.process.pid  # type: ignore[union-attr]
    book(served, "AB-c2")
    eventually_sync(lambda: len(booked_mails(served)) == 1, timeout=WAIT_S, what="the booking's e-mail")
    assert consumer_pids(served) == [child]


def test_metrics_carry_the_consumer_process_figures_once(served: ServedProcess) -> None:
    eventually_sync(
        lambda: (
            'tandtid_consumer_up{consumer="notifier",region="AB"} 1.0'
            in httpx.get(f"{served.url}/metrics").text
        ),
        timeout=WAIT_S,
        what="the consumers' process's metrics on the server's /metrics",
    )
    text = httpx.get(f"{served.url}/metrics").text
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))  # one family each: the two processes' figures joined
    assert "tandtid_http_requests" in names  # the server's own stay


def test_a_killed_consumer_process_is_reported_started_again_and_loses_nothing(served: ServedProcess) -> None:
    (first,) = consumer_pids(served)
    os.kill(first, signal.SIGKILL)
    assert why_consumers_down(served) == "killed by signal 9"
    book(served, "AB-c3")  # while it is down or starting again
    wait_replaced(served, first)
    eventually_sync(lambda: len(booked_mails(served)) == 1, timeout=WAIT_S, what="the booking's e-mail")
    time.sleep(1.0)  # a repeat would come from the new process's first reads: give it the time
    assert len(booked_mails(served)) == 1
    assert "the consumer process killed by signal 9" in served.output()


def test_a_hung_consumer_process_is_reported_killed_and_started_again(tmp_path: Path) -> None:
    served = ServedProcess(tmp_path / "data", "--seed", env={"TANDTID_CONSUMERS_HUNG_S": "3"}).start()
    try:
        eventually_sync(
            lambda: len(consumer_pids(served)) == 1, timeout=WAIT_S, what="the consumers' process"
        )
        (first,) = consumer_pids(served)
        os.kill(first, signal.SIGSTOP)  # alive, a pid, answering nothing: as a stuck loop
        assert why_consumers_down(served) == "hung: no answer for 3 s, killed"
        assert not alive(first)
        wait_replaced(served, first)
        time.sleep(4)  # past the hung bound again: the new one answers its pings
        assert len(consumer_pids(served)) == 1 and first not in consumer_pids(served)
        assert httpx.get(f"{served.url}/ready").json()["degraded"] == []
    finally:
        served.stop()


def test_a_sigterm_stops_the_server_cleanly_consumers_first(served: ServedProcess) -> None:
    """uvicorn re-raises the signal once it has drained; the clean-up after it (the consumers'
    process, the actors, the journal) still runs and the process ends with 0, not by the signal."""
    (child,) = consumer_pids(served)
    served.stop()
    assert served.process is not None and served.process.returncode == 0, served.output(20)
    assert not alive(child)


def test_the_consumer_process_ends_with_a_killed_server(served: ServedProcess) -> None:
    (child,) = consumer_pids(served)
    served.kill()
    eventually_sync(lambda: not alive(child), timeout=WAIT_S, what="the consumers' process to end")


def test_merged_exposition_joins_families_and_keeps_a_shared_sample_apart() -> None:
    registry = CollectorRegistry()
    counter = Counter("tandtid_consumer_things", "Things", ["kind"], registry=registry)
    Histogram("tandtid_event_loop_lag_seconds", "Lag", registry=registry).observe(0.01)
    counter.labels(kind="a").inc(2)
    theirs = (
        "# HELP tandtid_consumer_things_total Things\n# TYPE tandtid_consumer_things_total counter\n"
        'tandtid_consumer_things_total{kind="a"} 5.0\ntandtid_consumer_things_total{kind="b"} 1.0\n'
        "# HELP tandtid_consumer_only_theirs Theirs\n# TYPE tandtid_consumer_only_theirs gauge\ntandtid_consumer_only_theirs 3.0\n"
        '# HELP python_info Python\n# TYPE python_info gauge\npython_info{version="3"} 1.0\n'
        "# HELP tandtid_event_loop_lag_seconds Lag\n# TYPE tandtid_event_loop_lag_seconds histogram\n"
        'tandtid_event_loop_lag_seconds_bucket{le="+Inf"} 0.0\ntandtid_event_loop_lag_seconds_count 0.0\n'
        "# HELP tandtid_consumer_things_created Things\n# TYPE tandtid_consumer_things_created gauge\n"
        'tandtid_consumer_things_created{kind="a"} 1.7e+09\n'
    )
    text = merged_exposition(theirs, registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("tandtid_consumer_things_total", (("kind", "a"),))] == 2.0
    assert samples[("tandtid_consumer_things_total", (("kind", "a"), ("process", "consumers")))] == 5.0
    assert samples[("tandtid_consumer_things_total", (("kind", "b"),))] == 1.0
    assert samples[("tandtid_consumer_only_theirs", ())] == 3.0
    assert not any(name == "python_info" for name, _ in samples)
    lag = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "tandtid_event_loop_lag_seconds_count"
    }
    assert lag == {(): 1.0}  # the server's, not the child's zeros beside it
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    assert merged_exposition(None, registry) == merged_exposition("", registry)
