"""Overload is answered, not queued: a region's inbox is bounded (``RegionActor.max_inbox``) and
past the bound a command or query gets ``Overloaded`` at once (HTTP 503 OVERLOADED with
Retry-After). Unit test over a MemoryJournal whose appends are held (an actor stuck in a turn),
integration test over a live uvicorn; plus the event-loop lag histogram in /metrics."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from engine.commands import Book
from persistence.memory_journal import MemoryJournal
from server.loop_lag import LoopLag
from server.regions.actor import Overloaded, RegionActor
from tests.server.conftest import assert_error_shape
from tests.server.test_http_booking import direct, patient
from tests.support.catalog import CELL_0900, FIRST_DAY, NOW, setup_commands
from tests.support.live_server import LiveServer
from tests.support.waiting import eventually

BOUND_S = 5.0  # "answers at all" (a hang fails the test); never a speed assertion


def book(n: int) -> Book:
    return Book(f"AB-b{n}", f"p{n}", "AB-c1-r1", "child_checkup", FIRST_DAY, CELL_0900 + n)


async def test_a_full_inbox_answers_overloaded_at_once_and_the_queued_commands_still_happen() -> None:
    journal = MemoryJournal()
    await journal.open()
    actor = RegionActor("AB", journal, clock=lambda: float(NOW), max_inbox=3)
    await actor.start()
    try:
        for command in setup_commands():
            await actor.submit(command)
        journal.hold_appends()  # the next turn waits for its append: the inbox fills behind it
        in_turn = asyncio.create_task(actor.submit(book(0)))
        await asyncio.sleep(0)  # it is in the inbox...
        for _ in range(1000):  # ...until the actor takes it into a turn
            if not actor.queue_depth:
                break
            await asyncio.sleep(0)
        queued = [asyncio.create_task(actor.submit(book(n))) for n in (1, 2, 3)]
        await asyncio.sleep(0)
        assert actor.queue_depth == 3
        with pytest.raises(Overloaded):
            await actor.submit(book(4))  # raised before anything waits: no future, no queue
        with pytest.raises(Overloaded):
            await actor.query(lambda state: state.booking_count())
        journal.release_appends()
        outcomes = await asyncio.wait_for(asyncio.gather(in_turn, *queued), BOUND_S)
        assert [events[0].booking_id for events in outcomes] == ["AB-b0", "AB-b1", "AB-b2", "AB-b3"]
        assert await actor.query(lambda state: sorted(b.id for b in state.all_bookings())) == [
            "AB-b0",
            "AB-b1",
            "AB-b2",
            "AB-b3",
        ]
    finally:
        await actor.stop()


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
        yield c


async def test_http_answers_503_overloaded_with_retry_after(
    live: LiveServer, client: httpx.AsyncClient
) -> None:
    headers = await patient(client)
    before = overloaded_count((await client.get("/metrics")).text)
    assert live.regions is not None
    actor = live.regions.actors["AB"]
    actor.max_inbox = 0  # every command and query is past the bound
    try:
        r = await client.post("/api/bookings", json=direct(), headers=headers)
        error = assert_error_shape(r, 503, "OVERLOADED")
        assert r.headers["Retry-After"] == "1"
        assert "busy" in error["message"]
        r = await client.get("/api/clinics/AB-c1")
        assert_error_shape(r, 503, "OVERLOADED")
    finally:
        actor.max_inbox = 4096
    assert (await client.get("/api/clinics/AB-c1")).status_code == 200
    assert overloaded_count((await client.get("/metrics")).text) == before + 2


def overloaded_count(metrics: str) -> float:
    prefix = 'tandtid_actor_overloaded_total{region="AB"} '
    return next((float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix)), 0.0)


async def test_metrics_export_the_event_loop_lag(client: httpx.AsyncClient) -> None:
    for _ in range(100):
        text = (await client.get("/metrics")).text
        count = next(
            (
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("tandtid_event_loop_lag_seconds_count")
            ),
            0.0,
        )
        if count > 0:
            break
        await asyncio.sleep(0.05)
    assert count > 0
    assert 'tandtid_event_loop_lag_seconds_bucket{le="0.05"}' in text


def lag_counts(metrics: str) -> tuple[float, float]:
    """(observations, those at most 0.25 s) of the event-loop lag histogram."""
    found = {}
    for line in metrics.splitlines():
        for key in (
            'tandtid_event_loop_lag_seconds_bucket{le="+Inf"}',
            'tandtid_event_loop_lag_seconds_bucket{le="0.25"}',
        ):
            if line.startswith(key + " "):
                found[key] = float(line.split()[-1])
    return found['tandtid_event_loop_lag_seconds_bucket{le="+Inf"}'], found[
        'tandtid_event_loop_lag_seconds_bucket{le="0.25"}'
    ]


async def test_a_stalled_event_loop_shows_in_the_lag_histogram(
    live: LiveServer, client: httpx.AsyncClient
) -> None:
    """The histogram measures the loop: holding the server's loop 0.4 s adds an observation past 0.25 s."""
    total, within = lag_counts((await client.get("/metrics")).text)

    async def stall() -> None:
        time.sleep(0.4)  # noqa: ASYNC251 - holding the server's event loop is the point

    await asyncio.wrap_future(live.call(stall()))
    for _ in range(100):  # the lag task observes when it next wakes
        after_total, after_within = lag_counts((await client.get("/metrics")).text)
        if after_total - after_within > total - within:
            break
        await asyncio.sleep(0.05)
    assert after_total - after_within > total - within


async def test_a_stalled_event_loop_is_logged_with_where_it_was_held(
    live: LiveServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Past TANDTID_STALL_MS (200 ms by default) the watchdog logs the loop thread's stack mid-stall
    and counts it: the function holding the loop is named, once for the stall."""

    def stalls(metrics: str) -> float:
        return next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("tandtid_event_loop_stalls_total ")
        )

    before = stalls((await client.get("/metrics")).text)

    async def hold_the_loop_for_the_test() -> None:
        time.sleep(0.6)  # noqa: ASYNC251 - holding the server's event loop is the point

    def logged(kind: str) -> list[str]:
        return [
            m
            for m in (r.getMessage() for r in caplog.records if r.name == "tandtid.stall")
            if "hold_the_loop_for_the_test (" in m and kind in m
        ]

    with caplog.at_level("WARNING", logger="tandtid.stall"):
        await asyncio.wrap_future(live.call(hold_the_loop_for_the_test()))
        # once it is over, a second line says how long it held the loop in all
        (over,) = await eventually(lambda: logged("in all"), what="the stall's end to be logged")
    assert len(logged("so far")) == 1  # once per stall, mid-stall
    assert int(over.split("held for ")[1].split(" ms")[0]) >= 500  # the whole 0.6 s, not the threshold
    assert stalls((await client.get("/metrics")).text) >= before + 1


async def test_a_long_garbage_collection_is_logged_as_a_stall(caplog: pytest.LogCaptureFixture) -> None:
    """A collection holds every thread (the watchdog too, and the loop's timer runs first after
    it, so the watchdog cannot see it): one longer than stall_ms is logged with its generation."""
    lag = LoopLag(stall_ms=1)
    lag.start()
    try:
        young = [[i] for i in range(300_000)]  # a collection has 300,000 containers to walk
        with caplog.at_level("WARNING", logger="tandtid.stall"):
            gc.collect()
        del young
    finally:
        await lag.stop()
    logged = [r.getMessage() for r in caplog.records if r.name == "tandtid.stall"]
    assert any("garbage collection of generation 2" in m for m in logged), logged
