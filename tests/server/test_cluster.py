"""Integration: two real ``tandtid serve --node`` processes on one real redis-server (and one real
SMTP server both send to): what must happen once per region happens once, with its owner."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from server.consumers.notify.messages import KEY_HEADER
from tests.server.conftest import assert_error_shape
from tests.support.cluster import Cluster, free_times, metric
from tests.support.redis_server import RedisServer
from tests.support.smtp import smtp_server
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def book(url: str, token: str, time: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{url}/api/bookings",
        headers={"Authorization": f"Bearer {token}"},
        json={**time, "service": "checkup"},
        timeout=30,
    )


def test_each_booking_is_told_once_by_its_regions_owner(tmp_path: Path, redis_server: RedisServer) -> None:
    with smtp_server() as (inbox, port):
        cluster = Cluster(
            tmp_path,
            redis_server.url,
            ("node-a", "node-b"),
            patients=2,
            env={"TANDTID_SMTP_HOST": "127.0.0.1", "TANDTID_SMTP_PORT": str(port), "TANDTID_REMINDERS": ""},
        )
        try:
            cluster.start()
            a, b = cluster.nodes["node-a"], cluster.nodes["node-b"]
            booked: list[tuple[str, str]] = []  # (region, booking id)
            for served, token in ((a, cluster.tokens[0]), (b, cluster.tokens[1])):
                region = cluster.region_owned_by(served)
                (time,) = free_times(served, region, 1)
                r = book(served.url, token, time)
                assert r.status_code == 201, r.text
                booked.append((region, r.json()["booking"]["id"]))

            def booked_keys() -> list[str]:
                return [k for k in inbox.keys() if k.endswith(":booked")]  # noqa: SIM118 - a method

            eventually_sync(lambda: len(set(booked_keys())) == 2, what="an e-mail for each booking")
            # Each region's notifier runs on its owner only: the other node never read those
            # entries (its notifier's position in the region stays 0), so it sent nothing.
            for (region, _), owner, other in ((booked[0], a, b), (booked[1], b, a)):
                eventually_sync(
                    lambda o=owner, r=region: metric(
                        o, "tandtid_consumer_position", consumer="notifier", region=r
                    ),
                    what="the owner's notifier to move past the booking",
                )
                assert not metric(other, "tandtid_consumer_position", consumer="notifier", region=region)
            assert sorted(booked_keys()) == sorted(set(booked_keys())), "a booking was told twice"
            for message in inbox.messages:
                assert str(message[KEY_HEADER]).split(":")[0] in {region for region, _ in booked}
        finally:
            cluster.stop()


def test_any_node_answers_for_any_region_by_forwarding_to_its_owner(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    cluster = Cluster(
        tmp_path, redis_server.url, ("node-a", "node-b"), patients=2, env={"TANDTID_FORWARD_TIMEOUT_S": "1"}
    )
    try:
        cluster.start()
        owner = cluster.owner("AB")
        other = cluster.other_than(owner)
        owner_name = cluster.owners()["AB"]

        # A read and a command for AB sent to the node that does not own it: the owner answers.
        r = httpx.get(f"{other.url}/api/regions/AB/summary", timeout=30)
        assert r.status_code == 200 and r.headers["x-tandtid-forwarded-to"] == owner_name, r.text
        assert r.json() == httpx.get(f"{owner.url}/api/regions/AB/summary", timeout=30).json()
        (time,) = free_times(other, "AB", 1)
        r = book(other.url, cluster.tokens[0], time)
        assert r.status_code == 201 and r.headers["x-tandtid-forwarded-to"] == owner_name, r.text
        booking = r.json()["booking"]
        mine = httpx.get(
            f"{owner.url}/api/bookings/{booking['id']}",
            headers={"Authorization": f"Bearer {cluster.tokens[0]}"},
            timeout=30,
        )
        assert mine.status_code == 200 and mine.json()["booking"]["start"] == time["start"]
        # A refusal comes back as the owner gave it: same status, same error code.
        again = book(other.url, cluster.tokens[1], time)
        assert_error_shape(again, 409, "SLOT_TAKEN")
        assert again.headers["x-tandtid-forwarded-to"] == owner_name
        # The request id is one on both nodes.
        assert again.json()["error"]["request_id"] == again.headers["x-request-id"]

        # The owner freezes: forwarding answers 503 with Retry-After once the owner does not answer
        # (TANDTID_FORWARD_TIMEOUT_S=1, inside the 2 s lease), never hangs; then the lease moves
        # and the same request is answered again, by the other node itself.
        assert owner.process is not None
        os.kill(owner.process.pid, signal.SIGSTOP)
        try:
            r = httpx.get(f"{other.url}/api/regions/AB/summary", timeout=30)
            assert_error_shape(r, 503, "UNAVAILABLE")
            assert r.headers["retry-after"] == "1"
            eventually_sync(
                lambda: httpx.get(f"{other.url}/api/regions/AB/summary", timeout=30).status_code == 200,
                what="the other node to own AB",
            )
            r = httpx.get(
                f"{other.url}/api/bookings/{booking['id']}",
                headers={"Authorization": f"Bearer {cluster.tokens[0]}"},
                timeout=30,
            )
            assert r.status_code == 200 and "x-tandtid-forwarded-to" not in r.headers, r.text
        finally:
            os.kill(owner.process.pid, signal.SIGCONT)
    finally:
        cluster.stop()
